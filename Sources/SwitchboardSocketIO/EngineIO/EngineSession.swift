import NIOCore

/// The Engine.IO v4 rules for one server-side session, as a value-type state machine: the handler reports what
/// the transports bring (a long-polling GET or POST, WebSocket frames, a timer firing) and carries out the
/// returned actions in order. Time is passed in, so heartbeats and the upgrade timeout are tested with plain
/// numbers.
///
/// A session starts on long-polling (and may then be upgraded to a WebSocket) or directly on a WebSocket.
/// Upgrade, as the reference server runs it: the client opens a WebSocket with the session's `sid`
/// (``webSocketOffered(now:)``), sends `2probe`, gets `3probe`; the server answers the waiting GET with `6` so the
/// client's polling stops; the client sends `5`, and everything queued since goes over the WebSocket. Any other
/// packet on the probing WebSocket, or no `5` within the upgrade timeout, closes that WebSocket and the session
/// stays on polling.
public struct EngineSession: Sendable {
    public enum Transport: Sendable, Hashable {
        case polling
        case webSocket
    }

    /// The settings of a node, announced to every client in the open packet.
    public struct Configuration: Sendable {
        public var pingInterval: TimeAmount
        public var pingTimeout: TimeAmount
        /// The most bytes a POST body or a WebSocket message may have; also the size a GET answer is cut to.
        public var maxPayload: Int
        /// How long an offered WebSocket may take to complete the upgrade (the reference server's default: 10 s).
        public var upgradeTimeout: TimeAmount

        public init(pingInterval: TimeAmount, pingTimeout: TimeAmount, maxPayload: Int, upgradeTimeout: TimeAmount = .seconds(10)) {
            self.pingInterval = pingInterval
            self.pingTimeout = pingTimeout
            self.maxPayload = maxPayload
            self.upgradeTimeout = upgradeTimeout
        }
    }

    /// Why a session ended; ``description`` gives the reference server's words, which Socket.IO passes on as the
    /// disconnect reason of every namespace.
    public enum CloseReason: Sendable, Hashable, CustomStringConvertible {
        /// The client sent a close packet.
        case clientClose
        /// The server asked, through ``close()``.
        case serverClose
        /// No pong within the ping timeout.
        case pingTimeout
        /// The WebSocket the session runs on ended.
        case transportClose
        /// The client broke the transport's rules (a second GET, a poll dropped, a ping from the client).
        case transportError(String)
        /// The client sent something that is not Engine.IO.
        case parseError(EngineIOError)

        public var description: String {
            switch self {
            case .clientClose, .transportClose: "transport close"
            case .serverClose: "forced close"
            case .pingTimeout: "ping timeout"
            case .transportError: "transport error"
            case .parseError: "parse error"
            }
        }
    }

    public enum Action: Sendable, Hashable {
        /// Answer the waiting long-polling GET: status 200, `text/plain; charset=UTF-8`, this body.
        case answerPoll([UInt8])
        /// Answer the request just reported (GET, POST or WebSocket upgrade) with ``EngineIOError/httpStatus`` and
        /// the error's message. A POST with no such action is answered 200 `ok`.
        case rejectRequest(EngineIOError)
        /// Send these packets on the WebSocket, one frame each (a binary message as a binary frame).
        case send([EnginePacket])
        /// Close the WebSocket that was offered for an upgrade; the session stays on polling.
        case closeProbe
        /// A message for the layer above.
        case deliver(EngineMessage)
        /// The session is over: close its transports and forget its `sid`. Always the last action.
        case close(CloseReason)
    }

    private enum State {
        case polling(waiting: Bool)
        /// A WebSocket was offered; no `2probe` on it yet.
        case probing(since: NIODeadline, waiting: Bool)
        /// `3probe` sent; waiting for `5`. GETs are answered at once so the client can pause polling.
        case upgrading(since: NIODeadline)
        case webSocket
        case closed
    }

    public let sid: String
    public let configuration: Configuration
    private var state: State
    /// Packets for the client while no GET waits for them (polling only).
    private var queue: [EnginePacket] = []
    private var nextPing: NIODeadline?
    private var pongDeadline: NIODeadline?

    /// Opens a session: the handshake request was a GET on polling, or a WebSocket.
    /// - Returns: the session, and the open packet to answer the handshake with (`.answerPoll` or `.send`).
    public static func open(
        sid: String,
        transport: Transport,
        configuration: Configuration,
        now: NIODeadline
    ) -> (session: EngineSession, actions: [Action]) {
        let session = EngineSession(sid: sid, transport: transport, configuration: configuration, now: now)
        let handshake = EnginePacket.open(
            EngineHandshake(
                sid: sid,
                upgrades: transport == .polling ? ["websocket"] : [],
                pingIntervalMilliseconds: configuration.pingInterval.nanoseconds / 1_000_000,
                pingTimeoutMilliseconds: configuration.pingTimeout.nanoseconds / 1_000_000,
                maxPayload: configuration.maxPayload
            )
        )
        let action: Action = transport == .polling ? .answerPoll(EnginePacket.encodePayload([handshake])) : .send([handshake])
        return (session, [action])
    }

    private init(sid: String, transport: Transport, configuration: Configuration, now: NIODeadline) {
        self.sid = sid
        self.configuration = configuration
        self.state = transport == .polling ? .polling(waiting: false) : .webSocket
        self.nextPing = now + configuration.pingInterval
    }

    /// The transport messages go over now (polling until an upgrade completes).
    public var transport: Transport? {
        switch self.state {
        case .polling, .probing, .upgrading: .polling
        case .webSocket: .webSocket
        case .closed: nil
        }
    }

    public var isClosed: Bool {
        if case .closed = self.state { return true }
        return false
    }

    /// When ``tick(now:)`` next has something to do: arm one timer for it.
    public var nextDeadline: NIODeadline? {
        var deadlines = [self.nextPing, self.pongDeadline].compactMap { $0 }
        switch self.state {
        case .probing(let since, _), .upgrading(let since): deadlines.append(since + self.configuration.upgradeTimeout)
        default: break
        }
        return deadlines.min()
    }

    // MARK: Long-polling

    /// A long-polling GET arrived: answered now when packets wait, else held until one is sent.
    public mutating func poll() -> [Action] {
        switch self.state {
        case .polling(waiting: false):
            guard self.queue.isEmpty else { return [.answerPoll(self.takePayload())] }
            self.state = .polling(waiting: true)
            return []
        case .probing(let since, waiting: false):
            guard self.queue.isEmpty else { return [.answerPoll(self.takePayload())] }
            self.state = .probing(since: since, waiting: true)
            return []
        case .polling(waiting: true), .probing(_, waiting: true):
            // The reference server refuses the second GET and ends the session, answering the first with `1`.
            return [.rejectRequest(.requestOverlap)] + self.end(.transportError(EngineIOError.requestOverlap.message))
        case .upgrading:
            return [.answerPoll(self.queue.isEmpty ? EnginePacket.encodePayload([.noop]) : self.takePayload())]
        case .webSocket:
            return [.rejectRequest(.wrongTransport("the session was upgraded to WebSocket: poll there"))]
        case .closed:
            return [.rejectRequest(.unknownSession)]
        }
    }

    /// The waiting GET's connection ended before it was answered.
    public mutating func pollAborted() -> [Action] {
        switch self.state {
        case .polling(waiting: true), .probing(_, waiting: true):
            self.state = .polling(waiting: false)  // that GET is gone: nothing left to answer with `1`
            return self.end(.transportError("poll connection closed prematurely"))
        default:
            return []
        }
    }

    /// A long-polling POST arrived with this body.
    public mutating func post(_ body: [UInt8], now: NIODeadline) -> [Action] {
        switch self.state {
        case .polling, .probing, .upgrading: break
        case .webSocket: return [.rejectRequest(.wrongTransport("the session was upgraded to WebSocket: send there"))]
        case .closed: return [.rejectRequest(.unknownSession)]
        }
        let packets: [EnginePacket]
        do {
            packets = try EnginePacket.decodePayload(body, maxPayload: self.configuration.maxPayload)
        } catch {
            return [.rejectRequest(error)] + self.end(.parseError(error))
        }
        var actions: [Action] = []
        for packet in packets where !self.isClosed {
            actions += self.receive(packet, now: now)
        }
        return actions
    }

    // MARK: WebSocket

    /// A WebSocket with this session's `sid` was opened: the client probes it for an upgrade.
    public mutating func webSocketOffered(now: NIODeadline) -> [Action] {
        guard case .polling(let waiting) = self.state else {
            return [.rejectRequest(.wrongTransport("an upgrade is only possible once, from polling"))]
        }
        self.state = .probing(since: now, waiting: waiting)
        return []
    }

    /// A text frame arrived on the session's WebSocket (the one in use, or the one being probed).
    public mutating func receive(webSocketText text: String, now: NIODeadline) -> [Action] {
        guard text.utf8.count <= self.configuration.maxPayload else {
            return self.webSocketFailed(.payloadTooLarge(text.utf8.count, limit: self.configuration.maxPayload))
        }
        let packet: EnginePacket
        do {
            packet = try EnginePacket(webSocketText: text)
        } catch {
            return self.webSocketFailed(error)
        }
        return self.receiveWebSocket(packet, now: now)
    }

    /// A binary frame arrived on the session's WebSocket: a binary message.
    public mutating func receive(webSocketBinary bytes: [UInt8], now: NIODeadline) -> [Action] {
        guard bytes.count <= self.configuration.maxPayload else {
            return self.webSocketFailed(.payloadTooLarge(bytes.count, limit: self.configuration.maxPayload))
        }
        return self.receiveWebSocket(.message(.binary(bytes)), now: now)
    }

    /// The session's WebSocket closed (or failed): the session ends if it ran there; a probe just stops.
    public mutating func webSocketClosed() -> [Action] {
        switch self.state {
        case .webSocket: return self.end(.transportClose)
        case .probing(_, let waiting): self.state = .polling(waiting: waiting)
        case .upgrading: self.state = .polling(waiting: false)
        case .polling, .closed: break
        }
        return []
    }

    private mutating func webSocketFailed(_ error: EngineIOError) -> [Action] {
        switch self.state {
        case .webSocket: return self.end(.parseError(error))
        case .probing, .upgrading: return self.abandonProbe()
        case .polling, .closed: return []
        }
    }

    private mutating func receiveWebSocket(_ packet: EnginePacket, now: NIODeadline) -> [Action] {
        switch self.state {
        case .webSocket:
            return self.receive(packet, now: now)
        case .probing(let since, let waiting) where packet == .ping("probe"):
            self.state = .upgrading(since: since)
            // The waiting GET is answered now (`6` if nothing waits) so the client's polling can pause.
            let flush = waiting ? [Action.answerPoll(self.queue.isEmpty ? EnginePacket.encodePayload([.noop]) : self.takePayload())] : []
            return [.send([.pong("probe")])] + flush
        case .probing(_, let waiting) where packet == .upgrade:
            // The reference server also takes `5` without a probe; a waiting GET must still be answered.
            self.state = .webSocket
            return (waiting ? [.answerPoll(EnginePacket.encodePayload([.noop]))] : []) + self.flushToWebSocket()
        case .upgrading where packet == .upgrade:
            self.state = .webSocket
            return self.flushToWebSocket()
        case .probing, .upgrading:
            return self.abandonProbe()
        case .polling, .closed:
            return []
        }
    }

    private mutating func flushToWebSocket() -> [Action] {
        guard !self.queue.isEmpty else { return [] }
        defer { self.queue = [] }
        return [.send(self.queue)]
    }

    private mutating func abandonProbe() -> [Action] {
        switch self.state {
        case .probing(_, let waiting): self.state = .polling(waiting: waiting)
        case .upgrading: self.state = .polling(waiting: false)
        default: return []
        }
        return [.closeProbe]
    }

    // MARK: Both transports

    /// Sends a message to the client: on the WebSocket, to the waiting GET, or queued for the next GET.
    public mutating func send(_ message: EngineMessage) -> [Action] {
        self.send(.message(message))
    }

    /// Ends the session from the server side.
    public mutating func close() -> [Action] {
        guard !self.isClosed else { return [] }
        return self.end(.serverClose)
    }

    /// Sends a ping when one is due, ends the session when a pong is overdue, drops an upgrade that took too long.
    public mutating func tick(now: NIODeadline) -> [Action] {
        var actions: [Action] = []
        switch self.state {
        case .closed: return []
        case .probing(let since, _), .upgrading(let since):
            if now - since >= self.configuration.upgradeTimeout { actions += self.abandonProbe() }
        case .polling, .webSocket: break
        }
        if let deadline = self.pongDeadline, now >= deadline {
            return actions + self.end(.pingTimeout)
        }
        if let next = self.nextPing, now >= next {
            self.nextPing = nil
            // Counted from when the ping was due, as the reference server's timers run: a sweep that comes a little
            // late does not lengthen the session's life. One that comes very late still leaves the client half of it.
            let half = TimeAmount.nanoseconds(self.configuration.pingTimeout.nanoseconds / 2)
            self.pongDeadline = max(next + self.configuration.pingTimeout, now + half)
            actions += self.send(.ping(""))
        }
        return actions
    }

    private mutating func receive(_ packet: EnginePacket, now: NIODeadline) -> [Action] {
        switch packet {
        case .pong:
            self.pongDeadline = nil
            self.nextPing = now + self.configuration.pingInterval
            return []
        case .message(let message):
            return [.deliver(message)]
        case .close:
            return self.end(.clientClose)
        case .ping:
            // v4 reversed the heartbeat: only the server pings (the probe aside).
            return self.end(.transportError("invalid heartbeat direction: in Engine.IO v4 only the server pings"))
        case .open, .upgrade, .noop:
            // The reference server ignores these from a client outside an upgrade.
            return []
        }
    }

    private mutating func send(_ packet: EnginePacket) -> [Action] {
        switch self.state {
        case .webSocket:
            return [.send([packet])]
        case .polling(waiting: true):
            self.queue.append(packet)
            self.state = .polling(waiting: false)
            return [.answerPoll(self.takePayload())]
        case .probing(let since, waiting: true):
            self.queue.append(packet)
            self.state = .probing(since: since, waiting: false)
            return [.answerPoll(self.takePayload())]
        case .polling(waiting: false), .probing(_, waiting: false), .upgrading:
            self.queue.append(packet)
            return []
        case .closed:
            return []
        }
    }

    /// Takes the queued packets that fit in `maxPayload` (at least one, so an oversized packet cannot stall the
    /// queue: the limit is on what the client sends, and the server's own packets must still get through).
    private mutating func takePayload() -> [UInt8] {
        var size = 0
        var taken = 0
        for packet in self.queue {
            let added = packet.pollingCount + (taken == 0 ? 0 : 1)
            if taken > 0, size + added > self.configuration.maxPayload { break }
            size += added
            taken += 1
        }
        let body = EnginePacket.encodePayload(self.queue[..<taken])
        self.queue.removeFirst(taken)
        return body
    }

    private mutating func end(_ reason: CloseReason) -> [Action] {
        var actions: [Action] = []
        switch self.state {
        case .polling(waiting: true), .probing(_, waiting: true):
            // The client's own close packet ends the waiting GET with a noop (the reference polling transport's
            // `onClose`: "close pending poll request"); any other end tells it the session closed.
            actions.append(.answerPoll(EnginePacket.encodePayload([reason == .clientClose ? .noop : .close])))
        default:
            break
        }
        self.state = .closed
        self.queue = []
        self.nextPing = nil
        self.pongDeadline = nil
        actions.append(.close(reason))
        return actions
    }
}
