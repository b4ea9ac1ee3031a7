import Logging
import NIOCore
import Prometheus
import SwitchboardConfiguration
import SwitchboardCore
import SwitchboardWebSocket

/// What a ``ClientConnection`` needs of the wire it runs on: an RFC 6455 WebSocket (``WebSocketConnectionHandler``)
/// or a Socket.IO namespace on an Engine.IO session (``SocketIONamespace``). The seed protocol's logic lives once,
/// in the connection; the transport only moves bytes and says how the protocol ends a connection. Called on the
/// connection's event loop only.
protocol ClientTransport: AnyObject {
    /// Queues encoded bytes, unflushed; `promise` completes once the bytes are taken by the kernel (or a poll).
    func write(_ encoded: ByteBuffer, promise: EventLoopPromise<Void>?)
    func flush()
    /// Bytes written and not yet taken.
    var queuedBytes: Int { get }
    /// Whether more may be written now (false: the client stopped reading).
    var isWritable: Bool { get }
    /// Stops (`false`) or resumes reading from the client while a backend call holds its later messages.
    func setReading(_ on: Bool)
    /// A protocol-level ping is due (``ConnectionStateMachine/Action/sendPing``).
    func sendPing()
    /// Starts the protocol's close with this status (``ConnectionStateMachine/Action/close(_:)``).
    func close(_ status: ConnectionStateMachine.CloseStatus)
    /// Tells the peer if it can and drops the connection (``ConnectionStateMachine/Action/closeNow(_:)``).
    func closeNow(_ status: ConnectionStateMachine.CloseStatus)
    /// Drops the connection without a word (``ConnectionStateMachine/Action/drop``).
    func drop(reason: String)
    /// The route key of the message about to be routed: the route selection expression's, or one the protocol names
    /// (a Socket.IO event's name). Called once per routed message, in order.
    func selectRoute(_ body: JSONValue?) -> String?
    /// The bytes that answer the message being routed (a reply, an error, an echo): the connection's encoding, or
    /// the protocol's own answer (a Socket.IO ACK).
    func encodeReply(_ kind: OutboundFrame.Kind, _ payload: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer
    /// The message being routed is done with (its backend call, if any, answered).
    func messageDone()
    /// What to do once the ended connection is off the registry, given the rooms it was in: a dropped Socket.IO
    /// socket leaves what its reconnect needs to recover (``SocketIORecovery``).
    func afterUnregistered(rooms: Set<RoomID>) -> (@Sendable () async -> Void)?
}

extension ClientTransport {
    func afterUnregistered(rooms: Set<RoomID>) -> (@Sendable () async -> Void)? { nil }
}

/// One client connection speaking the seed protocol, whatever carries it: routing, the built-in apps,
/// integrations, join/leave/replay, throttling, token refresh and `$disconnect`, confined to its event loop. It
/// reports every gateway decision to ``ConnectionStateMachine`` and carries out what it returns; what is the
/// wire's business (framing, pings, the close handshake) goes to its ``ClientTransport``. What it holds of the node
/// is its ``ConnectionLease``, ended once in ``runDisconnect(_:)``.
final class ClientConnection: Connection {
    private(set) var info: ConnectionInfo
    /// What the connection's JWT allows, when auth is on; replaced by `refreshToken`.
    private var claims: VerifiedClaims?
    private let lease: ConnectionLease
    let gateway: GatewayContext
    private(set) var machine: ConnectionStateMachine
    let eventLoop: any EventLoop
    /// The wire; `nil` once it let go of the connection (the cycle transport → connection → transport is broken then).
    private var transport: (any ClientTransport)?
    /// Bytes written since the last flush: flushed early past a quarter of the outbound bound, so batching never
    /// makes a reader that keeps up look like a slow consumer.
    private var unflushedBytes = 0
    /// The node's shared encoding for this connection's wire (a fan-out encodes once per encoding); a Socket.IO
    /// session changes it when it moves from polling to a WebSocket.
    var encoding: any FrameEncoding

    init(
        info: ConnectionInfo,
        claims: VerifiedClaims?,
        lease: ConnectionLease,
        gateway: GatewayContext,
        liveness: Liveness,
        eventLoop: any EventLoop,
        encoding: any FrameEncoding
    ) {
        (self.info, self.claims, self.lease, self.gateway, self.eventLoop) = (info, claims, lease, gateway, eventLoop)
        self.encoding = encoding
        let throttling = gateway.configuration.throttling
        self.machine = ConnectionStateMachine(
            rules: gateway.connectionRules,
            liveness: liveness,
            rateBucket: throttling.perConnectionRate > 0
                ? TokenBucket(rate: throttling.perConnectionRate, burst: throttling.perConnectionBurst, now: Throttle.now()) : nil,
            expiresAt: claims?.expiresAt,
            connectedAt: info.connectedAt
        )
    }

    var shard: LocalHub.Shard { self.gateway.hub.shard(on: self.eventLoop) }

    // MARK: Connection

    var id: ConnectionID { self.info.id }
    var userId: String { self.info.userId }
    var lastActiveAt: Int64 { self.machine.lastActiveAt }
    var queuedBytes: Int { self.transport?.queuedBytes ?? 0 }

    func write(_ encoded: ByteBuffer) -> Bool {
        switch self.machine.liveFrame(encoded) {
        case .discard:
            return false
        case .held:
            if self.machine.heldOverBound { self.writabilityLost() }
            return false
        case .write:
            let waiting = self.unflushedBytes > 0
            self.writeNow(encoded, flush: false)
            return !waiting && self.unflushedBytes > 0
        }
    }

    func flush() {
        self.unflushedBytes = 0
        self.transport?.flush()
    }

    func perform(_ command: ConnectionCommand) {
        self.carryOut(self.machine.commanded(command))
    }

    func tick(now: NIODeadline) {
        self.carryOut(self.machine.tick(now: now, wallClock: self.gateway.wallClock()))
    }

    /// Whether `bytes` more fit in the outbound queue under `limits.outbound_queue_bytes`.
    func hasRoom(for bytes: Int) -> Bool {
        guard self.machine.isOpen, let transport, transport.isWritable else { return false }
        return self.queuedBytes + self.machine.heldBytesCount + bytes <= self.gateway.configuration.outboundQueueBytes
    }

    // MARK: Events from the transport

    /// The transport is ready: the hub knows the connection, the log says so, and it opens (or ends at once, when
    /// the wire is already gone).
    func start(_ transport: any ClientTransport, active: Bool, metadata extra: Logger.Metadata = [:]) {
        self.transport = transport
        self.shard.add(self)
        let metadata: Logger.Metadata = ["connectionId": "\(self.info.id)", "userId": "\(self.info.userId)"]
        self.gateway.logger.info("connected", metadata: metadata.merging(extra) { $1 })
        let started = self.machine.started(channelActive: active)
        if self.gateway.configuration.welcomeFrame {
            self.send(ServerFrames.connected(self.info, timestamp: self.gateway.wallClock()))
        }
        self.carryOut(started)
        if self.gateway.isDraining {
            // Admitted just before SIGTERM: the drain's sweep may have missed it.
            self.carryOut(self.machine.closeRequested(.init(code: CloseCode.goingAway, reason: "server draining")))
        }
    }

    /// A recovered Socket.IO socket rejoins its rooms, each replayed after the offset `points` finds for it (off
    /// the loop); the client's own messages meanwhile wait behind the rejoins, in order.
    func recover(_ points: @escaping @Sendable () async -> [(room: RoomID, after: Int64)]) {
        self.awaitBackend(points) { result in
            for (room, after) in (try? result.get()) ?? [] { self.carryOut(self.machine.rejoining(room, after: after)) }
        }
    }

    /// The transport let go (its handler was removed): nothing more is written.
    func detach() {
        self.transport = nil
    }

    /// Anything arrived from the client, pongs included.
    func heard(now: NIODeadline) {
        self.machine.heard(now: now)
    }

    /// A complete message from the client.
    func received(_ buffer: ByteBuffer, isText: Bool, now: NIODeadline) {
        self.carryOut(self.machine.received(buffer, isText: isText, now: now))
    }

    /// An error below the protocol: the connection is dropped.
    func failed(_ description: String) {
        self.carryOut(self.machine.failed(description))
    }

    /// The wire is gone: `$disconnect` runs, once.
    func closed() {
        self.carryOut(self.machine.channelClosed())
    }

    /// The protocol started a close itself (the client broke a rule): the status is recorded.
    func closeStarted(_ status: ConnectionStateMachine.CloseStatus) {
        self.machine.closeStarted(status)
    }

    /// The protocol ended the exchange (see ``ConnectionStateMachine/protocolEnded(_:)``).
    func protocolEnded(_ status: ConnectionStateMachine.CloseStatus?) {
        self.machine.protocolEnded(status)
    }

    /// The close handshake took too long.
    func closeTimerFired() {
        self.carryOut(self.machine.closeTimerFired())
    }

    /// The client stopped reading and its queue (or a replay's hold) passed the bound.
    func writabilityLost() {
        let action = self.machine.writabilityLost()
        if action != .none { self.gateway.metrics.slowConsumerCloses.increment() }
        self.carryOut(action)
    }

    /// What the connection state machine decided.
    func carryOut(_ action: ConnectionStateMachine.Action) {
        guard let transport else { return }
        switch action {
        case .none:
            break
        case .run(.message(let buffer, let isText)):
            self.route(buffer, isText: isText)
            if !self.machine.awaitingBackend { transport.messageDone() }
        case .run(.command(.join(let room))):
            self.join(room, after: nil)
        case .run(.rejoin(let room, let after)):
            let now = self.gateway.wallClock()
            guard self.mayUse(room, now: now), self.machine.mayJoin(room) else { break }
            self.join(room, after: after, announce: false)
        case .run(.command(.leave(let room))):
            self.leave(room)
        case .run(.command(.close)):
            break  // closes act at once (``ConnectionStateMachine/commanded(_:)``), never queued
        case .resumeReads:
            transport.setReading(true)
        case .sendPing:
            transport.sendPing()
        case .close(let status):
            transport.close(status)
        case .closeNow(let status):
            transport.closeNow(status)
        case .drop:
            transport.drop(reason: self.machine.closeStatus?.reason ?? "dropped")
        case .disconnect(let status):
            self.runDisconnect(status)
        }
    }

    // MARK: Sending

    /// A frame for this connection alone that is not an answer (a replay, `historyLost`); fan-out is counted by the
    /// hub in batches.
    private func send(_ frame: OutboundFrame) {
        let encoded = self.encoding.encode(frame, allocator: ByteBufferAllocator())
        self.sent(encoded, frameBytes: frame.bytes.count)
    }

    /// The answer to the message being routed: a reply, an error, an echo (``ClientTransport/encodeReply(_:_:allocator:)``).
    private func reply(_ frame: OutboundFrame) {
        self.reply(frame.kind, ByteBuffer(bytes: frame.bytes))
    }

    private func reply(_ kind: OutboundFrame.Kind, _ payload: ByteBuffer) {
        guard let transport else { return }
        let encoded = transport.encodeReply(kind, payload, allocator: ByteBufferAllocator())
        self.sent(encoded, frameBytes: payload.readableBytes)
    }

    private func sent(_ encoded: ByteBuffer, frameBytes: Int) {
        self.writeNow(encoded, flush: true)
        self.gateway.metrics.messagesSent.increment()
        self.gateway.metrics.bytesSent.increment(by: Int64(frameBytes))
        self.gateway.metrics.wireBytesSent.increment(by: Int64(encoded.readableBytes))
    }

    /// - Returns: whether the frames were written (the connection is open).
    @discardableResult
    private func writeNow(_ frames: ByteBuffer, flush: Bool, promise: EventLoopPromise<Void>? = nil) -> Bool {
        guard self.machine.isOpen, let transport else { return false }
        transport.write(frames, promise: promise)
        self.unflushedBytes += frames.readableBytes
        if flush || self.unflushedBytes > self.gateway.configuration.outboundQueueBytes / 4 { self.flush() }
        return true
    }

    // MARK: Routing

    private func route(_ buffer: ByteBuffer, isText: Bool) {
        let configuration = self.gateway.configuration
        let body = isText ? buffer.withUnsafeReadableBytes { try? JSONValue.parse($0) } : nil
        let selected = self.transport?.selectRoute(body)
        guard self.admitMessage() else { return }
        let now = self.gateway.wallClock()
        if selected == "refreshToken", let authenticator = self.gateway.authenticator {
            self.refreshToken(body?.objectValue?["token"]?.stringValue, authenticator: authenticator, now: now)
            return
        }
        let (key, target) = configuration.routes.resolve(selectedKey: selected)
        self.machine.lastActiveAt = now
        self.gateway.metrics.received(route: key, bytes: buffer.readableBytes)
        if let requirement = configuration.auth.routeClaims[key], !self.claimsSatisfy(requirement) {
            self.gateway.metrics.clientError("forbidden")
            self.reply(ServerFrames.error("Forbidden: route \(key) needs claim \(requirement)", timestamp: now))
            return
        }
        switch target {
        case .builtin(let app):
            self.runApp(app, buffer: buffer, isText: isText, body: body, selected: selected, now: now)
        case .integration(let url, let routeResponse):
            self.runIntegration(url: url, routeKey: key, routeResponse: routeResponse, buffer: buffer, isText: isText, now: now)
        case .none:
            self.reply(ServerFrames.error("No route for \(selected ?? key)", timestamp: now))
        }
    }

    private func runApp(_ app: BuiltinApp, buffer: ByteBuffer, isText: Bool, body: JSONValue?, selected: String?, now: Int64) {
        let request = AppRequest(selectedKey: selected, body: body, isBinary: !isText)
        for effect in BuiltinApps.handle(app, request: request, userId: self.info.userId, rooms: self.machine.rooms, now: now) {
            switch effect {
            case .reply(let frame): self.reply(frame)
            case .error(let message):
                self.gateway.metrics.clientError("bad_message")
                self.reply(ServerFrames.error(message, timestamp: now))
            case .echo:
                // Straight from the read buffer, not through an `OutboundFrame` copy.
                self.reply(isText ? .text : .binary, buffer)
            case .publish(let frame, let audience): self.gateway.broker.publish(frame, to: audience)
            case .roomMessage(let message):
                guard self.mayUse(message.room, now: now) else { continue }
                self.gateway.broker.publish(message)
            case .join(let room, let after):
                guard self.mayUse(room, now: now) else { continue }
                guard self.machine.mayJoin(room) else {
                    self.gateway.metrics.clientError("too_many_rooms")
                    self.reply(ServerFrames.error("Too many rooms (at most \(self.machine.rules.maxRooms))", timestamp: now))
                    continue
                }
                self.join(room, after: after)
            case .leave(let room): self.leave(room)
            }
        }
    }

    /// Sends the message to its backend as a MESSAGE event; a two-way route's reply body goes back to the client.
    /// A failing backend gets the client API Gateway's error frame.
    private func runIntegration(url: String, routeKey: String, routeResponse: Bool, buffer: ByteBuffer, isText: Bool, now: Int64) {
        let requestId = ConnectionID.random().rawValue
        let event = LambdaProxyEvent.make(
            .message,
            routeKey: routeKey,
            connection: self.info,
            apiId: self.gateway.configuration.apiId,
            requestId: requestId,
            now: now,
            body: (Array(buffer.readableBytesView), !isText)
        )
        let gateway = self.gateway
        self.awaitBackend {
            try await gateway.invoke(url, event: event, route: routeKey, requestId: requestId)
        } then: { result in
            switch result {
            case .success(let reply) where reply.isSuccess:
                if routeResponse, let body = reply.body {
                    self.reply(OutboundFrame(reply.bodyIsBinary ? .binary : .text, body))
                }
            default:
                let frame: JSONValue = [
                    "message": "Internal server error", "connectionId": .string(self.info.id.rawValue), "requestId": .string(requestId),
                ]
                self.reply(.text(frame))
            }
        }
    }

    private var member: RoomMember { RoomMember(connection: self.info.id, userId: self.info.userId) }

    // MARK: Limits and authorization

    /// Stage-wide and per-connection throttling: a refused message gets API Gateway's `Too Many Requests` frame, and
    /// a connection that keeps going is closed with 1008.
    private func admitMessage() -> Bool {
        let stageAdmitted = self.gateway.messageThrottle?.admit() ?? true
        switch self.machine.throttle(stageAdmitted: stageAdmitted, now: Throttle.now()) {
        case .admit:
            return true
        case .refuse(let reason):
            self.gateway.metrics.throttled(reason)
            let frame: JSONValue = [
                "message": "Too Many Requests", "connectionId": .string(self.info.id.rawValue), "requestId": .string(ConnectionID.random().rawValue),
            ]
            self.reply(.text(frame))
        case .close(let reason, let status):
            self.gateway.metrics.throttled(reason)
            self.carryOut(.close(status))
        }
        return false
    }

    /// Whether the token (if any) lets this connection into `room`; answers the client when not.
    private func mayUse(_ room: RoomID, now: Int64) -> Bool {
        guard let claims = self.claims, !claims.allows(room: room) else { return true }
        self.gateway.metrics.clientError("forbidden")
        self.reply(ServerFrames.error("Forbidden: the token does not allow room \(room)", timestamp: now))
        return false
    }

    /// `claim` or `claim:value`, matched against the claim's own value (``VerifiedClaims/satisfies(_:)``).
    private func claimsSatisfy(_ requirement: String) -> Bool {
        self.claims?.satisfies(requirement) ?? false
    }

    /// `{"action":"refreshToken","token":…}`: a fresh token for the same user extends the connection's life.
    private func refreshToken(_ token: String?, authenticator: Authenticator, now: Int64) {
        guard let token else {
            self.reply(ServerFrames.error("refreshToken needs a token", timestamp: now))
            return
        }
        let userId = self.info.userId
        self.awaitBackend {
            try await authenticator.verify(token, now: now)
        } then: { result in
            switch result {
            case .success(let claims) where claims.userId == userId:
                self.claims = claims
                self.machine.expiresAt = claims.expiresAt
                self.info.authorizer = claims.all
                var reply: [JSONObject.Member] = [.init("action", "tokenRefreshed")]
                if let expiresAt = claims.expiresAt { reply.append(.init("expiresAt", .number(String(expiresAt)))) }
                self.reply(.text(.object(JSONObject(reply))))
            case .success:
                self.reply(ServerFrames.error("Token refresh failed: the token is for another user", timestamp: now))
            case .failure(let error):
                self.reply(ServerFrames.error("Token refresh failed: \(error)", timestamp: now))
            }
        }
    }

    /// Joins a room: `joinedRoom` (with the room's current offset; left out for a recovered socket, whose client
    /// did not ask), then, for a client rejoining with the last offset it saw, what it missed or `historyLost`.
    /// Messages published meanwhile may arrive twice; offsets let clients drop what they have already seen.
    private func join(_ room: RoomID, after: Int64?, announce: Bool = true) {
        let (broker, member, limit) = (self.gateway.broker, self.member, self.gateway.configuration.maxMembersListed)
        let page = self.replayPage
        self.awaitBackend {
            let roster = try await broker.join(room, member: member, listing: limit)
            let offset = await broker.lastOffset(of: room)
            let missed = if let after { await broker.history(of: room, after: after, limit: page) } else { RoomHistory.messages([]) }
            return (roster, offset, missed)
        } then: { result in
            let now = self.gateway.wallClock()
            switch result {
            case .success(let (roster, offset, missed)):
                let joined = self.machine.joined(room)
                guard joined != .gone else {
                    // Gone while the registry answered: undo, as $disconnect could not see this room.
                    Task { await broker.leave(room, member: member) }
                    return
                }
                let isNew = joined == .new
                if isNew { self.shard.join(room, self) }
                // Presence goes out before the joiner hears `joinedRoom`: whatever the joiner's answer sets off
                // (another client joining, say) then happens after it, so nobody gets a stale `userJoined`.
                if isNew, self.gateway.configuration.presence {
                    broker.publish(
                        ServerFrames.userJoined(room, userId: member.userId, timestamp: now),
                        to: .room(room, excluding: member.connection)
                    )
                }
                if announce { self.reply(ServerFrames.joinedRoom(room, members: roster.userIds, memberCount: roster.count, offset: offset)) }
                switch missed {
                case .messages(let entries): self.replay(room, entries, upTo: offset)
                case .lost(let oldest): self.send(ServerFrames.historyLost(room, lastOffset: after ?? 0, oldestOffset: oldest, timestamp: now))
                case .unavailable: self.sendHistoryUnavailable(room, after: after ?? 0)
                }
            case .failure(let error):
                self.gateway.metrics.executionErrors.increment()
                self.gateway.logger.error("join failed", metadata: ["connectionId": "\(member.connection)", "room": "\(room)", "error": "\(error)"])
                self.reply(ServerFrames.error("Could not join room; try again", timestamp: now))
            }
        }
    }

    /// History entries read per page: a page holds about one outbound queue's worth of the largest messages (at
    /// most 16 MiB, well inside a Redis reply's bound), so a replay's memory is bounded like any connection's queue.
    private var replayPage: Int {
        let configuration = self.gateway.configuration
        return min(100, max(1, min(configuration.outboundQueueBytes, 16 << 20) / max(configuration.maxMessageBytes, 1)))
    }

    /// Sends a rejoining client what it missed, paced to the client: a page goes out, the next is read once the
    /// kernel has taken it, so a client that missed more than its outbound bound is not closed as a slow
    /// consumer. The client's own later messages wait (as behind any registry call), and live room traffic is held
    /// behind the replay within the outbound bound.
    private func replay(_ room: RoomID, _ entries: [HistoryEntry], upTo last: Int64) {
        guard self.transport != nil, let reached = entries.last?.offset else { return }
        guard entries.count == self.replayPage, reached < last else {
            for entry in entries { self.send(entry.frame) }
            return
        }
        self.machine.replayStarted()
        let (broker, page) = (self.gateway.broker, self.replayPage)
        let bound = NIOLoopBound(self, eventLoop: self.eventLoop)
        self.awaitBackend {
            var (next, after) = (entries, reached)
            while true {
                let sent = next
                try await bound.eventLoop.flatSubmit { bound.value.writeReplayed(sent, on: bound.eventLoop) }.get()
                guard after < last else { return }
                switch await broker.history(of: room, after: after, limit: page) {
                case .messages(let entries):
                    guard let newest = entries.last?.offset else { return }
                    (next, after) = (entries, newest)
                case .lost(let oldest):
                    let missing = after
                    try await bound.eventLoop.submit { bound.value.sendHistoryLost(room, after: missing, oldest: oldest) }.get()
                    return
                case .unavailable:
                    let missing = after
                    try await bound.eventLoop.submit { bound.value.sendHistoryUnavailable(room, after: missing) }.get()
                    return
                }
            }
        } then: { _ in
            for frames in self.machine.replayEnded() { self.writeNow(frames, flush: false) }
            self.flush()
        }
    }

    /// One page of a replay, bypassing the hold; completes once the kernel has taken all of it.
    private func writeReplayed(_ entries: [HistoryEntry], on loop: any EventLoop) -> EventLoopFuture<Void> {
        let written = loop.makePromise(of: Void.self)
        guard self.machine.isOpen, !entries.isEmpty else {
            written.fail(ChannelError.ioOnClosedChannel)
            return written.futureResult
        }
        for (index, entry) in entries.enumerated() {
            let frames = self.encoding.encode(entry.frame, allocator: ByteBufferAllocator())
            guard self.writeNow(frames, flush: false, promise: index == entries.count - 1 ? written : nil) else {
                written.fail(ChannelError.ioOnClosedChannel)
                break
            }
            self.gateway.metrics.messagesSent.increment()
            self.gateway.metrics.bytesSent.increment(by: Int64(entry.frame.bytes.count))
            self.gateway.metrics.wireBytesSent.increment(by: Int64(frames.readableBytes))
        }
        self.flush()
        // The kernel taking a page shows the client reads: reads (and so pongs) are off during the replay.
        written.futureResult.assumeIsolated().whenSuccess { self.machine.heard(now: .now()) }
        return written.futureResult
    }

    private func sendHistoryLost(_ room: RoomID, after: Int64, oldest: Int64) {
        self.send(ServerFrames.historyLost(room, lastOffset: after, oldestOffset: oldest, timestamp: self.gateway.wallClock()))
    }

    /// The client is in the room, but what it missed after `after` cannot be read now: it may rejoin later.
    private func sendHistoryUnavailable(_ room: RoomID, after: Int64) {
        let message = "History of \(room) after offset \(after) is unavailable now; rejoin with that lastOffset later"
        self.send(ServerFrames.error(message, timestamp: self.gateway.wallClock()))
    }

    private func leave(_ room: RoomID) {
        guard self.machine.left(room) else { return }
        self.shard.leave(room, self)
        let (broker, member) = (self.gateway.broker, self.member)
        self.awaitBackend {
            await broker.leave(room, member: member)
        } then: { _ in
            self.gateway.publishUserLeft(room, userId: member.userId)
        }
    }

    /// Runs a registry or integration call off the loop and holds this connection's later messages (and reads)
    /// until it answers, so a client's messages are handled, and reach its backend, in the order it sent them.
    private func awaitBackend<T: Sendable>(
        _ operation: @escaping @Sendable () async throws -> T,
        then completion: @escaping (Result<T, any Error>) -> Void
    ) {
        guard let transport else { return }
        self.machine.backendCallStarted()
        transport.setReading(false)
        self.eventLoop.makeFutureWithTask(operation).assumeIsolated().whenComplete { result in
            self.machine.backendCallEnded()
            completion(result)
            if !self.machine.awaitingBackend { self.transport?.messageDone() }
            // The backlog first: turning reads back on may deliver newer messages at once.
            var next = self.machine.next()
            while case .run = next {
                self.carryOut(next)
                next = self.machine.next()
            }
            self.carryOut(next)
        }
    }

    // MARK: $disconnect

    /// Runs once, whatever ended the connection (``ConnectionStateMachine/channelClosed()``): the hub forgets it,
    /// and its lease gives back what it held and, off the loop, leaves its rooms and runs `$disconnect`.
    private func runDisconnect(_ status: ConnectionStateMachine.CloseStatus) {
        self.shard.remove(self, rooms: self.machine.rooms)
        self.gateway.metrics.disconnected(code: status.code)
        self.gateway.logger.info(
            "disconnected",
            metadata: ["connectionId": "\(self.info.id)", "closeCode": "\(status.code)", "closeReason": "\(status.reason)"]
        )
        let rooms = self.machine.rooms
        self.lease.end(.init(info: self.info, rooms: rooms, status: status, afterwards: self.transport?.afterUnregistered(rooms: rooms)))
    }
}
