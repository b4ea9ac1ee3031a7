import Logging
import NIOCore
import NIOWebSocket
import Prometheus
import SwitchboardConfiguration
import SwitchboardCore
import SwitchboardWebSocket
import Synchronization

/// One registered WebSocket connection, confined to its event loop: reads frames through ``WebSocketSession``,
/// routes messages to the built-in apps, writes what they answer, and runs `$disconnect` exactly once.
final class WebSocketConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = ByteBuffer

    private(set) var info: ConnectionInfo
    /// What the connection's JWT allows, when auth is on; replaced by `refreshToken`.
    private var claims: VerifiedClaims?
    /// Per-connection throttling, when configured, and how many messages in a row it refused.
    private var rateBucket: TokenBucket?
    private var throttledInARow = 0
    /// The rooms this connection is in, as the apps see them.
    private(set) var rooms: Set<RoomID> = []
    private let gateway: GatewayContext
    private var session: WebSocketSession
    private var liveness: Liveness
    private var context: ChannelHandlerContext?
    /// Where frames encoded by ``WireFrame`` are written: the context of NIO's `WebSocketFrameEncoder` (which the
    /// upgrader installs and cannot be removed), so bytes go out below it, already encoded once per fan-out.
    private var wire: ChannelHandlerContext?
    /// When the client last sent a message (milliseconds since 1970), for `GET @connections`.
    private(set) var lastActiveAt: Int64
    /// Work that arrived while a registry or integration call was in flight, done in order after it.
    private var backlog: [Pending] = []  // an empty array allocates nothing
    private var awaitingBackend = false
    private var disconnected = false
    private var closeTimer: Scheduled<Void>?

    init(info: ConnectionInfo, claims: VerifiedClaims?, gateway: GatewayContext, now: NIODeadline) {
        let configuration = gateway.configuration
        self.info = info
        self.claims = claims
        self.gateway = gateway
        let throttling = configuration.throttling
        if throttling.perConnectionRate > 0 {
            self.rateBucket = TokenBucket(rate: throttling.perConnectionRate, burst: throttling.perConnectionBurst, now: Throttle.now())
        }
        self.lastActiveAt = info.connectedAt
        self.session = WebSocketSession(maxMessageBytes: configuration.maxMessageBytes, rejectBinary: configuration.binaryFrames == .reject)
        self.liveness = Liveness(
            pingInterval: TimeAmount(configuration.pingInterval),
            pongTimeout: TimeAmount(configuration.pongTimeout),
            idleTimeout: configuration.idleTimeout.map(TimeAmount.init),
            now: now
        )
    }

    private var shard: LocalHub.Shard { self.gateway.hub.shard(on: self.context!.eventLoop) }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.wire = (try? context.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self)) ?? context
        self.shard.add(self)
        self.gateway.logger.info("connected", metadata: ["connectionId": "\(self.info.id)", "userId": "\(self.info.userId)"])
        if self.gateway.configuration.welcomeFrame {
            self.send(ServerFrames.connected(self.info, timestamp: self.gateway.wallClock()))
        }
        if !context.channel.isActive {
            self.channelInactive(context: context)
        } else if self.gateway.isDraining {
            // Admitted just before SIGTERM: the drain's sweep may have missed it.
            self.close(code: CloseCode.goingAway, reason: "server draining")
        }
    }

    /// The handler keeps its contexts, and a context keeps its handler: the cycle is broken here, when the closed
    /// channel's pipeline lets go of its handlers, or every connection ever served would stay in memory.
    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.wire = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.liveness.heard(at: .now())
        self.perform(self.session.receive(self.unwrapInboundIn(data)))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? NIOWebSocketError {
            self.perform(self.session.decodingFailed(error))
        } else {
            self.gateway.logger.debug("connection error", metadata: ["connectionId": "\(self.info.id)", "error": "\(error)"])
            self.session.abandon(reason: "\(error)")
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.session.abandon(reason: "connection lost")
        self.runDisconnect()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        guard !context.channel.isWritable else { return }
        self.dropSlowConsumer()
    }

    /// The client stopped reading and its queue passed the bound: it is dropped, not waited on, so memory stays
    /// bounded. Closed on the next loop turn, outside whatever fan-out wrote the last frame.
    private func dropSlowConsumer() {
        guard self.session.isOpen, let context else { return }
        let limit = self.gateway.configuration.outboundQueueBytes
        self.gateway.metrics.slowConsumerCloses.increment()
        _ = self.session.close(code: self.gateway.configuration.slowConsumerCloseCode, reason: "slow consumer: over \(limit) bytes queued")
        context.eventLoop.assumeIsolated().execute { context.close(promise: nil) }
    }

    // MARK: Sending

    /// Queues a message; `flush: false` lets a fan-out flush every recipient once at the end.
    func send(_ buffer: ByteBuffer, kind: OutboundFrame.Kind, flush: Bool) {
        guard let context else { return }
        let maxFrame = self.gateway.configuration.maxFrameBytes
        self.write(WireFrame.encode(kind, buffer, maxFrame: maxFrame, allocator: context.channel.allocator), flush: flush)
    }

    /// Queues frames already encoded by ``WireFrame`` (a fan-out encodes once for all its recipients). Unflushed
    /// bytes are flushed early past a quarter of the outbound queue bound, so batching never makes a reader that
    /// keeps up look like a slow consumer.
    func write(_ frames: ByteBuffer, flush: Bool) {
        guard self.session.isOpen else { return }
        if self.held != nil {
            // A rejoin is replaying history: live frames wait behind it, within the same bound as the socket's queue.
            self.held!.append(frames)
            self.heldBytes += frames.readableBytes
            if self.heldBytes > self.gateway.configuration.outboundQueueBytes { self.dropSlowConsumer() }
            return
        }
        self.writeNow(frames, flush: flush)
    }

    /// - Returns: whether the frames were written (the connection is open).
    @discardableResult
    private func writeNow(_ frames: ByteBuffer, flush: Bool, promise: EventLoopPromise<Void>? = nil) -> Bool {
        guard self.session.isOpen, let wire = self.wire else { return false }
        wire.write(self.wrapOutboundOut(frames), promise: promise)
        self.unflushedBytes += frames.readableBytes
        if flush || self.unflushedBytes > self.gateway.configuration.outboundQueueBytes / 4 { self.flush() }
        return true
    }

    func flush() {
        self.unflushedBytes = 0
        self.wire?.flush()
    }

    private var unflushedBytes = 0
    /// Live frames held while a rejoin's history is replayed, so that the client sees the room in offset order;
    /// `nil` when no replay runs.
    private var held: [ByteBuffer]?
    private var heldBytes = 0

    /// A control frame, flushed at once.
    @discardableResult
    private func writeControl(_ opcode: UInt8, _ payload: ByteBuffer) -> EventLoopFuture<Void> {
        let wire = self.wire!
        return wire.writeAndFlush(self.wrapOutboundOut(WireFrame.encode(opcode, payload, allocator: wire.channel.allocator)))
    }

    /// Whether the hub has queued a flush for this connection (see `LocalHub.Shard.send`).
    var awaitsFlush = false

    /// A frame for this connection alone (replies, errors); fan-out is counted by the hub in batches.
    private func send(_ frame: OutboundFrame) {
        guard let context else { return }
        self.send(context.channel.allocator.buffer(bytes: frame.bytes), kind: frame.kind, flush: true)
        self.gateway.metrics.messagesSent.increment()
        self.gateway.metrics.bytesSent.increment(by: Int64(frame.bytes.count))
    }

    /// Bytes written to this connection and not yet taken by the kernel.
    var queuedBytes: Int {
        (try? self.context?.channel.syncOptions?.getOption(ChannelOptions.bufferedWritableBytes)) ?? 0
    }

    // MARK: Session actions

    private func perform(_ action: WebSocketSession.Action) {
        guard let context else { return }
        switch action {
        case .none:
            break
        case .deliver(let buffer, let isText):
            self.liveness.messageReceived(at: .now())
            self.enqueue(.message(buffer, isText: isText))
        case .pong(let payload):
            self.writeControl(WireFrame.pong, payload)
        case .sendClose(let code, let reason):
            self.countClientError(code)
            self.writeClose(code: code, reason: reason)
            let timeout = TimeAmount(self.gateway.configuration.closeTimeout)
            self.closeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { context.close(promise: nil) }
        case .sendCloseAndDisconnect(let code, let reason):
            if let code { self.countClientError(code) }
            self.writeClose(code: code, reason: reason).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        case .disconnect:
            context.close(promise: nil)
        }
    }

    /// Closes the gateway starts because the client broke a rule are client errors, by rule.
    private func countClientError(_ code: UInt16) {
        let reasons: [UInt16: String] = [
            CloseCode.protocolError: "protocol_error", CloseCode.unsupportedData: "unsupported_data",
            CloseCode.invalidPayload: "invalid_utf8", CloseCode.messageTooBig: "message_too_big",
        ]
        if let reason = reasons[code] { self.gateway.metrics.clientError(reason) }
    }

    @discardableResult
    private func writeClose(code: UInt16?, reason: String) -> EventLoopFuture<Void> {
        let context = self.context!
        var data = context.channel.allocator.buffer(capacity: 2 + reason.utf8.count)
        if let code {
            data.writeInteger(code)
            // A close frame's payload is at most 125 bytes; cut the reason on a character boundary.
            data.writeString(String(decoding: reason.utf8.prefix(123), as: UTF8.self).trimmingSuffix("\u{FFFD}"))
        }
        return self.writeControl(WireFrame.close, data)
    }

    /// The gateway closes this connection (drain, kick) with a code the client sees.
    func close(code: UInt16, reason: String) {
        self.perform(self.session.close(code: code, reason: reason))
    }

    /// Heartbeat: called by the loop's sweep.
    func tick(now: NIODeadline) {
        guard self.session.isOpen, let context else { return }
        if let expiresAt = self.claims?.expiresAt, self.gateway.wallClock() >= expiresAt {
            self.close(code: self.gateway.configuration.auth.expiredCloseCode, reason: "token expired")
            return
        }
        switch self.liveness.tick(now: now) {
        case .none:
            break
        case .sendPing:
            self.writeControl(WireFrame.ping, ByteBuffer())
        case .timedOut:
            self.session.abandon(reason: "no pong within \(self.gateway.configuration.pongTimeout)")
            context.close(promise: nil)
        case .idle:
            self.close(code: CloseCode.goingAway, reason: "idle timeout")
        }
    }

    // MARK: Routing

    private enum Pending {
        case message(ByteBuffer, isText: Bool)
        case command(ConnectionCommand)
    }

    private func enqueue(_ work: Pending) {
        if self.awaitingBackend {
            self.backlog.append(work)
        } else {
            self.run(work)
        }
    }

    private func run(_ work: Pending) {
        switch work {
        case .message(let buffer, let isText): self.route(buffer, isText: isText)
        case .command(.join(let room)): self.join(room, after: nil)
        case .command(.leave(let room)): if self.rooms.contains(room) { self.leave(room) }
        case .command(.close(let code, let reason)): self.close(code: code, reason: reason)
        }
    }

    /// A backend's command (management API), in order with the client's own messages; closes act at once.
    func perform(_ command: ConnectionCommand) {
        if case .close(let code, let reason) = command {
            self.close(code: code, reason: reason)
        } else {
            self.enqueue(.command(command))
        }
    }

    /// Whether `bytes` more fit in the outbound queue under `limits.outbound_queue_bytes`. A backend's direct send
    /// that would not fit is refused (429) rather than written, so the backend learns to slow down and the
    /// client is not dropped for it.
    func hasRoom(for bytes: Int) -> Bool {
        guard self.session.isOpen, let channel = self.context?.channel, channel.isWritable else { return false }
        return self.queuedBytes + self.heldBytes + bytes <= self.gateway.configuration.outboundQueueBytes
    }

    private func route(_ buffer: ByteBuffer, isText: Bool) {
        let configuration = self.gateway.configuration
        guard self.admitMessage() else { return }
        let body = isText ? buffer.withUnsafeReadableBytes { try? JSONValue.parse($0) } : nil
        let selected = configuration.routeSelectionExpression.routeKey(for: body)
        let now = self.gateway.wallClock()
        if selected == "refreshToken", let authenticator = self.gateway.authenticator {
            self.refreshToken(body?.objectValue?["token"]?.stringValue, authenticator: authenticator, now: now)
            return
        }
        let (key, target) = configuration.routes.resolve(selectedKey: selected)
        self.lastActiveAt = now
        self.gateway.metrics.received(route: key, bytes: buffer.readableBytes)
        if let requirement = configuration.auth.routeClaims[key], !self.claimsSatisfy(requirement) {
            self.gateway.metrics.clientError("forbidden")
            self.send(ServerFrames.error("Forbidden: route \(key) needs claim \(requirement)", timestamp: now))
            return
        }
        switch target {
        case .builtin(let app):
            self.runApp(app, buffer: buffer, isText: isText, body: body, selected: selected, now: now)
        case .integration(let url, let routeResponse):
            self.runIntegration(url: url, routeKey: key, routeResponse: routeResponse, buffer: buffer, isText: isText, now: now)
        case .none:
            self.send(ServerFrames.error("No route for \(selected ?? key)", timestamp: now))
        }
    }

    private func runApp(_ app: BuiltinApp, buffer: ByteBuffer, isText: Bool, body: JSONValue?, selected: String?, now: Int64) {
        let request = AppRequest(selectedKey: selected, body: body, isBinary: !isText)
        for effect in BuiltinApps.handle(app, request: request, userId: self.info.userId, rooms: self.rooms, now: now) {
            switch effect {
            case .reply(let frame): self.send(frame)
            case .error(let message):
                self.gateway.metrics.clientError("bad_message")
                self.send(ServerFrames.error(message, timestamp: now))
            case .echo:
                self.send(buffer, kind: isText ? .text : .binary, flush: true)
                self.gateway.metrics.messagesSent.increment()
                self.gateway.metrics.bytesSent.increment(by: Int64(buffer.readableBytes))
            case .publish(let frame, let audience): self.gateway.broker.publish(frame, to: audience)
            case .roomMessage(let message):
                guard self.mayUse(message.room, now: now) else { continue }
                self.gateway.broker.publish(message)
            case .join(let room, let after):
                guard self.mayUse(room, now: now) else { continue }
                let limit = self.gateway.configuration.maxRoomsPerConnection
                guard self.rooms.count < limit || self.rooms.contains(room) else {
                    self.gateway.metrics.clientError("too_many_rooms")
                    self.send(ServerFrames.error("Too many rooms (at most \(limit))", timestamp: now))
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
                    self.send(OutboundFrame(reply.bodyIsBinary ? .binary : .text, body))
                }
            default:
                let frame: JSONValue = [
                    "message": "Internal server error", "connectionId": .string(self.info.id.rawValue), "requestId": .string(requestId),
                ]
                self.send(.text(frame))
            }
        }
    }

    private var member: RoomMember { RoomMember(connection: self.info.id, userId: self.info.userId) }

    // MARK: Limits and authorization

    /// Stage-wide and per-connection throttling: a refused message gets API Gateway's `Too Many Requests` frame, and
    /// a connection that keeps going is closed with 1008.
    private func admitMessage() -> Bool {
        var refusedBy: String?
        if let throttle = self.gateway.messageThrottle, !throttle.admit() {
            refusedBy = "message_rate"
        } else if self.rateBucket?.take(now: Throttle.now()) == false {
            refusedBy = "connection_rate"
        }
        guard let reason = refusedBy else {
            self.throttledInARow = 0
            return true
        }
        self.throttledInARow += 1
        self.gateway.metrics.throttled(reason)
        if self.throttledInARow >= self.gateway.configuration.throttling.abuseCloseAfter {
            self.close(code: CloseCode.policyViolation, reason: "rate limit exceeded")
        } else {
            let frame: JSONValue = [
                "message": "Too Many Requests", "connectionId": .string(self.info.id.rawValue), "requestId": .string(ConnectionID.random().rawValue),
            ]
            self.send(.text(frame))
        }
        return false
    }

    /// Whether the token (if any) lets this connection into `room`; answers the client when not.
    private func mayUse(_ room: RoomID, now: Int64) -> Bool {
        guard let claims = self.claims, !claims.allows(room: room) else { return true }
        self.gateway.metrics.clientError("forbidden")
        self.send(ServerFrames.error("Forbidden: the token does not allow room \(room)", timestamp: now))
        return false
    }

    /// `claim` or `claim:value`, matched against the claim's own value (``VerifiedClaims/satisfies(_:)``).
    private func claimsSatisfy(_ requirement: String) -> Bool {
        self.claims?.satisfies(requirement) ?? false
    }

    /// `{"action":"refreshToken","token":…}`: a fresh token for the same user extends the connection's life.
    private func refreshToken(_ token: String?, authenticator: Authenticator, now: Int64) {
        guard let token else {
            self.send(ServerFrames.error("refreshToken needs a token", timestamp: now))
            return
        }
        let userId = self.info.userId
        self.awaitBackend {
            try await authenticator.verify(token, now: now)
        } then: { result in
            switch result {
            case .success(let claims) where claims.userId == userId:
                self.claims = claims
                self.info.authorizer = claims.all
                var reply: [JSONObject.Member] = [.init("action", "tokenRefreshed")]
                if let expiresAt = claims.expiresAt { reply.append(.init("expiresAt", .number(String(expiresAt)))) }
                self.send(.text(.object(JSONObject(reply))))
            case .success:
                self.send(ServerFrames.error("Token refresh failed: the token is for another user", timestamp: now))
            case .failure(let error):
                self.send(ServerFrames.error("Token refresh failed: \(error)", timestamp: now))
            }
        }
    }

    /// Joins a room: `joinedRoom` (with the room's current offset), then, for a client rejoining with the last
    /// offset it saw, what it missed or `historyLost`. Messages published meanwhile may arrive twice; offsets let
    /// clients drop what they have already seen.
    private func join(_ room: RoomID, after: Int64?) {
        let (broker, member, limit) = (self.gateway.broker, self.member, self.gateway.configuration.maxMembersListed)
        let page = self.replayPage
        self.awaitBackend {
            let roster = try await broker.join(room, member: member, listing: limit)
            let offset = await broker.lastOffset(of: room)
            let missed = if let after { await broker.history(of: room, after: after, limit: page) } else { RoomHistory.messages([]) }
            return (roster, offset, missed)
        } then: { result in
            guard !self.disconnected else {
                // Gone while the registry answered: undo, as $disconnect could not see this room.
                Task { await broker.leave(room, member: member) }
                return
            }
            let now = self.gateway.wallClock()
            switch result {
            case .success(let (roster, offset, missed)):
                let isNew = self.rooms.insert(room).inserted
                if isNew { self.shard.join(room, self) }
                // Presence goes out before the joiner hears `joinedRoom`: whatever the joiner's answer sets off
                // (another client joining, say) then happens after it, so nobody gets a stale `userJoined`.
                if isNew, self.gateway.configuration.presence {
                    broker.publish(
                        ServerFrames.userJoined(room, userId: member.userId, timestamp: now),
                        to: .room(room, excluding: member.connection)
                    )
                }
                self.send(ServerFrames.joinedRoom(room, members: roster.userIds, memberCount: roster.count, offset: offset))
                switch missed {
                case .messages(let entries): self.replay(room, entries, upTo: offset)
                case .lost(let oldest): self.send(ServerFrames.historyLost(room, lastOffset: after ?? 0, oldestOffset: oldest, timestamp: now))
                case .unavailable: self.sendHistoryUnavailable(room, after: after ?? 0)
                }
            case .failure(let error):
                self.gateway.metrics.executionErrors.increment()
                self.gateway.logger.error("join failed", metadata: ["connectionId": "\(member.connection)", "room": "\(room)", "error": "\(error)"])
                self.send(ServerFrames.error("Could not join room; try again", timestamp: now))
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
        guard let context, let reached = entries.last?.offset else { return }
        guard entries.count == self.replayPage, reached < last else {
            for entry in entries { self.send(entry.frame) }
            return
        }
        self.held = []
        let (broker, page) = (self.gateway.broker, self.replayPage)
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
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
            let held = self.held ?? []
            (self.held, self.heldBytes) = (nil, 0)
            for frames in held { self.writeNow(frames, flush: false) }
            self.flush()
        }
    }

    /// One page of a replay, bypassing the hold; completes once the kernel has taken all of it.
    private func writeReplayed(_ entries: [HistoryEntry], on loop: any EventLoop) -> EventLoopFuture<Void> {
        let written = loop.makePromise(of: Void.self)
        guard let context, self.session.isOpen, !entries.isEmpty else {
            written.fail(ChannelError.ioOnClosedChannel)
            return written.futureResult
        }
        let maxFrame = self.gateway.configuration.maxFrameBytes
        for (index, entry) in entries.enumerated() {
            let payload = context.channel.allocator.buffer(bytes: entry.frame.bytes)
            let frames = WireFrame.encode(entry.frame.kind, payload, maxFrame: maxFrame, allocator: context.channel.allocator)
            guard self.writeNow(frames, flush: false, promise: index == entries.count - 1 ? written : nil) else {
                written.fail(ChannelError.ioOnClosedChannel)
                break
            }
            self.gateway.metrics.messagesSent.increment()
            self.gateway.metrics.bytesSent.increment(by: Int64(entry.frame.bytes.count))
        }
        self.flush()
        // The kernel taking a page shows the client reads: reads (and so pongs) are off during the replay.
        written.futureResult.assumeIsolated().whenSuccess { self.liveness.heard(at: .now()) }
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
        self.rooms.remove(room)
        self.shard.leave(room, self)
        let (broker, member, presence) = (self.gateway.broker, self.member, self.gateway.configuration.presence)
        let now = self.gateway.wallClock()
        self.awaitBackend {
            await broker.leave(room, member: member)
        } then: { _ in
            if presence { broker.publish(ServerFrames.userLeft(room, userId: member.userId, timestamp: now), to: .room(room)) }
        }
    }

    /// Runs a registry or integration call off the loop and holds this connection's later messages (and reads)
    /// until it answers, so a client's messages are handled, and reach its backend, in the order it sent them.
    private func awaitBackend<T: Sendable>(
        _ operation: @escaping @Sendable () async throws -> T,
        then completion: @escaping (Result<T, any Error>) -> Void
    ) {
        guard let context else { return }
        self.awaitingBackend = true
        context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
        context.eventLoop.makeFutureWithTask(operation).assumeIsolated().whenComplete { result in
            // Cleared first: the completion may start the next call (a replay's next page), which holds again.
            self.awaitingBackend = false
            completion(result)
            // The backlog first: turning reads back on may deliver newer messages at once.
            while !self.awaitingBackend, self.session.isOpen, !self.backlog.isEmpty {
                self.run(self.backlog.removeFirst())
            }
            if !self.awaitingBackend, context.channel.isActive {
                context.channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
            }
        }
    }

    // MARK: $disconnect

    /// Runs once, whatever ended the connection: leaves every room (telling the others) and unregisters.
    private func runDisconnect() {
        guard !self.disconnected, let context else { return }
        self.disconnected = true
        self.closeTimer?.cancel()
        self.backlog.removeAll()
        self.shard.remove(self)
        let status = self.session.closeStatus ?? (CloseCode.abnormal, "")
        self.gateway.metrics.disconnected(code: status.code)
        self.gateway.releaseUser(self.info.userId)
        self.gateway.slots.subtract(1, ordering: .relaxed)  // at once, not after a slow backend hears `$disconnect`
        self.gateway.logger.info(
            "disconnected",
            metadata: ["connectionId": "\(self.info.id)", "closeCode": "\(status.code)", "closeReason": "\(status.reason)"]
        )
        let (gateway, member, rooms, info) = (self.gateway, self.member, self.rooms, self.info)
        // The connection is gone from the registry (as on API Gateway, where posting to it during `$disconnect` is a
        // GoneException) before its rooms hear `userLeft` and its backend, however slow, is told; neither happens
        // here when the cluster swept it meanwhile (its node was cut off from Redis) and did both already.
        context.eventLoop.makeFutureWithTask {
            defer { gateway.activeConnections.subtract(1, ordering: .relaxed) }
            for room in rooms { await gateway.broker.leave(room, member: member) }
            guard await gateway.broker.unregister(member.connection) else { return }
            if gateway.configuration.presence {
                for room in rooms {
                    gateway.broker.publish(ServerFrames.userLeft(room, userId: member.userId, timestamp: gateway.wallClock()), to: .room(room))
                }
            }
            await Self.deliverDisconnect(info, status: status, gateway: gateway)
        }.whenComplete { _ in }
    }
}

extension WebSocketConnectionHandler {
    /// Delivers `$disconnect` to its integration at least once: a failed or timed-out attempt is retried with
    /// exponential backoff (250 ms doubling to 5 s) for `integration.disconnect_retry_for`. API Gateway tries once.
    static func deliverDisconnect(_ info: ConnectionInfo, status: (code: UInt16, reason: String), gateway: GatewayContext) async {
        guard let disconnect = gateway.configuration.routes.integration(for: RouteTable.disconnectKey) else { return }
        let requestId = ConnectionID.random().rawValue
        let event = LambdaProxyEvent.make(
            .disconnect,
            routeKey: RouteTable.disconnectKey,
            connection: info,
            apiId: gateway.configuration.apiId,
            requestId: requestId,
            now: gateway.wallClock(),
            close: status
        )
        let deadline = ContinuousClock.now + gateway.configuration.integrationDisconnectRetryFor
        var delay = Duration.milliseconds(250)
        while true {
            gateway.metrics.disconnectDeliveryAttempts.increment()
            if (try? await gateway.invoke(disconnect.url, event: event, route: RouteTable.disconnectKey, requestId: requestId)) != nil {
                return
            }
            guard ContinuousClock.now + delay < deadline else {
                gateway.integrationLogger.error(
                    "$disconnect not delivered; gave up",
                    metadata: ["connectionId": "\(info.id)", "requestId": "\(requestId)", "url": "\(disconnect.url)"]
                )
                return
            }
            try? await Task.sleep(for: delay)
            delay = min(delay * 2, .seconds(5))
        }
    }
}

extension String {
    fileprivate func trimmingSuffix(_ suffix: Character) -> String {
        var result = self
        while result.last == suffix { result.removeLast() }
        return result
    }
}
