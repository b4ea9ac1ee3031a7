import NIOCore
import SwitchboardConfiguration
import SwitchboardCore
import SwitchboardWebSocket

/// Everything one connection decides, whatever its wire protocol, as a value type over injected time: its
/// lifecycle, the order of its work around backend calls, throttling, liveness, the replay hold, its rooms and every
/// close. The channel handler reports each event and carries out the ``Action`` it gets back (the shape of
/// async-http-client's `HTTP1ConnectionStateMachine` and postgres-nio's `ConnectionStateMachine`), so every rule
/// here is tested with plain values and no socket.
///
/// The wire protocol's own rules (RFC 6455 framing and the close handshake) stay in the protocol's session
/// (`WebSocketSession`): this machine says *that* a connection closes and with what status, the session says how.
struct ConnectionStateMachine {
    /// The configuration this machine reads: one instance per node, shared by every connection (a reference, so
    /// it costs a connection 8 bytes, not 60: idle memory per connection is a goal).
    final class Rules: Sendable {
        let maxRooms: Int
        let outboundQueueBytes: Int
        let closeTimeout: TimeAmount
        let abuseCloseAfter: Int
        let expiredCloseCode: UInt16
        let slowConsumerCloseCode: UInt16
        /// For the reason a silent peer is dropped with.
        let pongTimeout: Duration

        init(
            maxRooms: Int,
            outboundQueueBytes: Int,
            closeTimeout: TimeAmount,
            abuseCloseAfter: Int,
            expiredCloseCode: UInt16,
            slowConsumerCloseCode: UInt16,
            pongTimeout: Duration
        ) {
            (self.maxRooms, self.outboundQueueBytes, self.closeTimeout) = (maxRooms, outboundQueueBytes, closeTimeout)
            (self.abuseCloseAfter, self.expiredCloseCode, self.slowConsumerCloseCode) = (abuseCloseAfter, expiredCloseCode, slowConsumerCloseCode)
            self.pongTimeout = pongTimeout
        }

        convenience init(_ configuration: GatewayConfiguration) {
            self.init(
                maxRooms: configuration.maxRoomsPerConnection,
                outboundQueueBytes: configuration.outboundQueueBytes,
                closeTimeout: TimeAmount(configuration.closeTimeout),
                abuseCloseAfter: configuration.throttling.abuseCloseAfter,
                expiredCloseCode: configuration.auth.expiredCloseCode,
                slowConsumerCloseCode: configuration.slowConsumerCloseCode,
                pongTimeout: configuration.pongTimeout
            )
        }
    }

    /// Why and how a connection ended, as `$disconnect` and the logs report it.
    struct CloseStatus: Equatable {
        var code: UInt16
        var reason: String
    }

    /// Work done in the order it arrived: a client's message, or a backend's command.
    enum Work: Equatable {
        case message(ByteBuffer, isText: Bool)
        case command(ConnectionCommand)
        /// A recovered Socket.IO socket rejoins a room it was in, replayed after `after`.
        case rejoin(RoomID, after: Int64)
    }

    enum Action: Equatable {
        case none
        /// Do this work now.
        case run(Work)
        /// Nothing waits any more: read from the client again.
        case resumeReads
        case sendPing
        /// Start the protocol's close handshake with this status, and the close timer: if the peer has not answered
        /// when it fires, ``closeTimerFired()`` drops the connection.
        case close(CloseStatus)
        /// Tell the peer this status if the protocol can, and drop the connection without waiting for an answer.
        case closeNow(CloseStatus)
        /// Drop the connection: there is no one to tell.
        case drop
        /// The connection is gone: leave its rooms, unregister, run `$disconnect`. Returned once.
        case disconnect(CloseStatus)
    }

    private enum State {
        /// Admitted by `$connect`, not yet on its channel.
        case admitted
        case open
        /// Our close frame, or the peer's, is on its way.
        case closing
        /// The channel is gone and ``Action/disconnect(_:)`` was returned.
        case closed
    }

    let rules: Rules
    private var state = State.admitted
    private(set) var closeStatus: CloseStatus?
    private var liveness: Liveness
    /// Per-connection throttling, when configured (boxed: 8 bytes when off, which is most connections), and how
    /// many messages in a row were refused.
    private let rateBucket: RateBucket?
    private var throttledInARow = 0
    /// Work that arrived while a backend call was in flight, done in order after it.
    private var backlog = FIFO<Work>()
    private(set) var awaitingBackend = false
    /// The rooms this connection is in, as its apps see them: the hub's index of this node follows it.
    private(set) var rooms: Set<RoomID> = []
    /// Live frames held while a rejoin's history is replayed, so the client sees a room in offset order; `nil` when
    /// no replay runs.
    private var held: [ByteBuffer]?
    private var heldBytes = 0
    /// When the token stops being valid (milliseconds since 1970), when auth is on.
    var expiresAt: Int64?
    /// When the client last had a message routed (milliseconds since 1970), for `GET @connections`.
    var lastActiveAt: Int64

    init(rules: Rules, liveness: Liveness, rateBucket: TokenBucket?, expiresAt: Int64?, connectedAt: Int64) {
        self.rules = rules
        self.liveness = liveness
        self.rateBucket = rateBucket.map(RateBucket.init)
        self.expiresAt = expiresAt
        self.lastActiveAt = connectedAt
    }

    var isOpen: Bool {
        if case .open = self.state { true } else { false }
    }

    // MARK: Lifecycle

    /// The connection's handler is on its channel: open, or ended at once if the channel is already gone.
    mutating func started(channelActive: Bool) -> Action {
        guard case .admitted = self.state else { return .none }
        self.state = .open
        return channelActive ? .none : self.channelClosed()
    }

    /// The gateway closes the connection (drain, a backend's DELETE, idle, token expiry): the handler sends the
    /// protocol's close, and the peer has the close timeout to answer.
    mutating func closeRequested(_ status: CloseStatus) -> Action {
        guard self.isOpen else { return .none }
        self.closeStatus = status
        self.state = .closing
        return .close(status)
    }

    /// The protocol began a close handshake itself (a client's protocol error: we sent close and wait).
    mutating func closeStarted(_ status: CloseStatus) {
        guard self.isOpen else { return }
        self.closeStatus = status
        self.state = .closing
    }

    /// The protocol ended the exchange (the peer's close arrived or answered ours, or the stream is unreadable):
    /// record its status unless one is known, and stop taking work.
    mutating func protocolEnded(_ status: CloseStatus?) {
        if self.closeStatus == nil, let status { self.closeStatus = status }
        if case .closed = self.state { return }
        self.state = .closing
        self.backlog = FIFO()
    }

    /// An error below the protocol (TLS, a reset): the connection is dropped, reported as 1006 with the error.
    mutating func failed(_ description: String) -> Action {
        if case .closed = self.state { return .none }
        if self.closeStatus == nil { self.closeStatus = CloseStatus(code: CloseCode.abnormal, reason: description) }
        self.state = .closing
        return .drop
    }

    /// The client stopped reading and its queue passed the bound: dropped, not waited on, so memory stays bounded.
    mutating func writabilityLost() -> Action {
        guard self.isOpen else { return .none }
        let status = CloseStatus(code: self.rules.slowConsumerCloseCode, reason: "slow consumer: over \(self.rules.outboundQueueBytes) bytes queued")
        self.closeStatus = status
        self.state = .closing
        return .closeNow(status)
    }

    /// The channel is gone, however it ended: `$disconnect` runs, once.
    mutating func channelClosed() -> Action {
        switch self.state {
        case .closed:
            return .none
        case .admitted, .open, .closing:
            self.state = .closed
            self.backlog = FIFO()
            (self.held, self.heldBytes) = (nil, 0)
            return .disconnect(self.closeStatus ?? CloseStatus(code: CloseCode.abnormal, reason: "connection lost"))
        }
    }

    // MARK: Liveness

    /// Any frame arrived (pongs included), or the kernel took a page of a replay: the peer reads.
    mutating func heard(now: NIODeadline) {
        self.liveness.heard(at: now)
    }

    /// The close timer (started with ``Action/close(_:)``, or by the handler when the protocol began a close)
    /// fired: a peer that has not finished the handshake is dropped.
    mutating func closeTimerFired() -> Action {
        if case .closing = self.state { return .drop }
        return .none
    }

    /// The heartbeat sweep: pings, the pong and idle timeouts, and token expiry.
    mutating func tick(now: NIODeadline, wallClock: Int64) -> Action {
        guard self.isOpen else { return .none }
        if let expiresAt, wallClock >= expiresAt {
            return self.closeRequested(CloseStatus(code: self.rules.expiredCloseCode, reason: "token expired"))
        }
        switch self.liveness.tick(now: now) {
        case .none:
            return .none
        case .sendPing:
            return .sendPing
        case .timedOut:
            self.closeStatus = CloseStatus(code: CloseCode.abnormal, reason: "no pong within \(self.rules.pongTimeout)")
            self.state = .closing
            return .drop
        case .idle:
            return self.closeRequested(CloseStatus(code: CloseCode.goingAway, reason: "idle timeout"))
        }
    }

    // MARK: Work in order

    /// A complete message from the client.
    mutating func received(_ buffer: ByteBuffer, isText: Bool, now: NIODeadline) -> Action {
        guard self.isOpen else { return .none }
        self.liveness.messageReceived(at: now)
        return self.enqueue(.message(buffer, isText: isText))
    }

    /// A backend's command; a close acts at once, the others in order with the client's own messages.
    mutating func commanded(_ command: ConnectionCommand) -> Action {
        if case .close(let code, let reason) = command { return self.closeRequested(CloseStatus(code: code, reason: reason)) }
        guard self.isOpen else { return .none }
        return self.enqueue(.command(command))
    }

    /// A recovered socket rejoins one of its rooms, in order with what the client sends meanwhile.
    mutating func rejoining(_ room: RoomID, after: Int64) -> Action {
        guard self.isOpen else { return .none }
        return self.enqueue(.rejoin(room, after: after))
    }

    private mutating func enqueue(_ work: Work) -> Action {
        guard self.awaitingBackend else { return .run(work) }
        self.backlog.append(work)
        return .none
    }

    /// A backend call began: later work waits, and the handler stops reading.
    mutating func backendCallStarted() {
        self.awaitingBackend = true
    }

    /// The call answered. Recorded before its completion runs, since the completion may start the next call (a
    /// replay's next page); then ``next()`` says what follows.
    mutating func backendCallEnded() {
        self.awaitingBackend = false
    }

    /// The next waiting work, or, once nothing waits, ``Action/resumeReads`` (a closing connection reads too: the
    /// peer's close answers ours).
    mutating func next() -> Action {
        if self.awaitingBackend { return .none }
        if case .closed = self.state { return .none }
        if self.isOpen, !self.backlog.isEmpty { return .run(self.backlog.removeFirst()) }
        return .resumeReads
    }

    // MARK: Throttling

    enum Throttling: Equatable {
        case admit
        /// Refused, told with API Gateway's `Too Many Requests` frame.
        case refuse(reason: String)
        /// Refused too many times in a row: closed with 1008.
        case close(reason: String, CloseStatus)
    }

    /// Stage-wide (`stageAdmitted`) and per-connection throttling of one message.
    mutating func throttle(stageAdmitted: Bool, now: Double) -> Throttling {
        let reason: String
        if !stageAdmitted {
            reason = "message_rate"
        } else if self.rateBucket?.bucket.take(now: now) == false {
            reason = "connection_rate"
        } else {
            self.throttledInARow = 0
            return .admit
        }
        self.throttledInARow += 1
        guard self.throttledInARow >= self.rules.abuseCloseAfter, self.isOpen else { return .refuse(reason: reason) }
        let status = CloseStatus(code: CloseCode.policyViolation, reason: "rate limit exceeded")
        _ = self.closeRequested(status)
        return .close(reason: reason, status)
    }

    // MARK: Rooms

    /// Whether joining `room` stays within `limits.max_rooms_per_connection`.
    func mayJoin(_ room: RoomID) -> Bool {
        self.rooms.count < self.rules.maxRooms || self.rooms.contains(room)
    }

    enum Joined: Equatable {
        case new
        case already
        /// The connection is gone ($disconnect could not see the room): the join must be undone.
        case gone
    }

    /// The registry answered a join.
    mutating func joined(_ room: RoomID) -> Joined {
        if case .closed = self.state { return .gone }
        return self.rooms.insert(room).inserted ? .new : .already
    }

    /// - Returns: whether the connection was in the room.
    mutating func left(_ room: RoomID) -> Bool {
        self.rooms.remove(room) != nil
    }

    // MARK: Outbound

    enum LiveFrame: Equatable {
        case write
        /// Kept behind a replay.
        case held
        /// Not written: the connection is closing or gone.
        case discard
    }

    /// Where a live frame goes: to the wire, or behind a running replay within the outbound bound (past it the
    /// connection is a slow consumer: ``writabilityLost()``).
    mutating func liveFrame(_ frames: ByteBuffer) -> LiveFrame {
        guard self.isOpen else { return .discard }
        guard self.held != nil else { return .write }
        self.held!.append(frames)
        self.heldBytes += frames.readableBytes
        return .held
    }

    var heldOverBound: Bool { self.heldBytes > self.rules.outboundQueueBytes }
    var heldBytesCount: Int { self.heldBytes }

    /// A replay starts: live frames wait behind it.
    mutating func replayStarted() {
        if self.held == nil { (self.held, self.heldBytes) = ([], 0) }
    }

    /// The replay ended: the held frames, to write now in order.
    mutating func replayEnded() -> [ByteBuffer] {
        defer { (self.held, self.heldBytes) = (nil, 0) }
        return self.isOpen ? (self.held ?? []) : []
    }
}

/// A connection's token bucket, on the heap only when per-connection throttling is on. Touched on the connection's
/// event loop only.
final class RateBucket {
    var bucket: TokenBucket

    init(_ bucket: TokenBucket) {
        self.bucket = bucket
    }
}
