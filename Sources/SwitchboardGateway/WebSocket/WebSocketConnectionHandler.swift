import Logging
import NIOCore
import NIOWebSocket
import Prometheus
import SwitchboardConfiguration
import SwitchboardCore
import SwitchboardWebSocket

/// One WebSocket connection speaking the seed JSON protocol, confined to its event loop. It reports every channel
/// event to two value-type machines and carries out what they return: ``WebSocketSession`` (RFC 6455 framing and the
/// close handshake) and ``ConnectionStateMachine`` (everything the gateway decides: order, throttling, liveness,
/// closes). What it holds of the node is its ``ConnectionLease``, ended once in ``runDisconnect(_:)``.
final class WebSocketConnectionHandler: ChannelInboundHandler, RemovableChannelHandler, Connection {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = ByteBuffer

    private(set) var info: ConnectionInfo
    /// What the connection's JWT allows, when auth is on; replaced by `refreshToken`.
    private var claims: VerifiedClaims?
    private let lease: ConnectionLease
    private let gateway: GatewayContext
    private var session: WebSocketSession
    private var machine: ConnectionStateMachine
    private var context: ChannelHandlerContext?
    /// Where frames encoded by ``WireFrame`` are written: the context of NIO's `WebSocketFrameEncoder` (which the
    /// upgrader installs and cannot be removed), so bytes go out below it, already encoded once per fan-out.
    private var wire: ChannelHandlerContext?
    /// Bytes written since the last flush: flushed early past a quarter of the outbound bound, so batching never
    /// makes a reader that keeps up look like a slow consumer.
    private var unflushedBytes = 0
    /// Started when a close handshake begins; its firing goes to the state machine.
    private var closeTimer: Scheduled<Void>?
    /// The node's shared encoding for this connection's wire: plain, or deflated with the window it agreed to.
    let encoding: any FrameEncoding

    init(_ admitted: Admitted, gateway: GatewayContext, now: NIODeadline) {
        let configuration = gateway.configuration
        (self.info, self.claims, self.lease, self.gateway) = (admitted.info, admitted.claims, admitted.lease, gateway)
        self.session = WebSocketSession(
            maxMessageBytes: configuration.maxMessageBytes,
            rejectBinary: configuration.binaryFrames == .reject,
            perMessageDeflate: admitted.deflate != nil
        )
        self.encoding = gateway.encoding(for: admitted.deflate)
        let throttling = configuration.throttling
        self.machine = ConnectionStateMachine(
            rules: gateway.connectionRules,
            liveness: Liveness(gateway.livenessTiming, now: now),
            rateBucket: throttling.perConnectionRate > 0
                ? TokenBucket(rate: throttling.perConnectionRate, burst: throttling.perConnectionBurst, now: Throttle.now()) : nil,
            expiresAt: admitted.claims?.expiresAt,
            connectedAt: admitted.info.connectedAt
        )
    }

    private var shard: LocalHub.Shard { self.gateway.hub.shard(on: self.context!.eventLoop) }

    // MARK: Connection

    var id: ConnectionID { self.info.id }
    var userId: String { self.info.userId }
    var lastActiveAt: Int64 { self.machine.lastActiveAt }

    /// Bytes written to this connection and not yet taken by the kernel.
    var queuedBytes: Int {
        (try? self.context?.channel.syncOptions?.getOption(ChannelOptions.bufferedWritableBytes)) ?? 0
    }

    func write(_ encoded: ByteBuffer) -> Bool {
        switch self.machine.liveFrame(encoded) {
        case .discard:
            return false
        case .held:
            if self.machine.heldOverBound { self.dropSlowConsumer() }
            return false
        case .write:
            let waiting = self.unflushedBytes > 0
            self.writeNow(encoded, flush: false)
            return !waiting && self.unflushedBytes > 0
        }
    }

    func flush() {
        self.unflushedBytes = 0
        self.wire?.flush()
    }

    func perform(_ command: ConnectionCommand) {
        self.carryOut(self.machine.commanded(command))
    }

    func tick(now: NIODeadline) {
        self.carryOut(self.machine.tick(now: now, wallClock: self.gateway.wallClock()))
    }

    /// Whether `bytes` more fit in the outbound queue under `limits.outbound_queue_bytes`.
    func hasRoom(for bytes: Int) -> Bool {
        guard self.machine.isOpen, let channel = self.context?.channel, channel.isWritable else { return false }
        return self.queuedBytes + self.machine.heldBytesCount + bytes <= self.gateway.configuration.outboundQueueBytes
    }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.wire = (try? context.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self)) ?? context
        self.shard.add(self)
        var metadata: Logger.Metadata = ["connectionId": "\(self.info.id)", "userId": "\(self.info.userId)"]
        if self.session.perMessageDeflate { metadata["compression"] = "\(PerMessageDeflate.extensionName)" }
        self.gateway.logger.info("connected", metadata: metadata)
        let started = self.machine.started(channelActive: context.channel.isActive)
        if self.gateway.configuration.welcomeFrame {
            self.send(ServerFrames.connected(self.info, timestamp: self.gateway.wallClock()))
        }
        self.carryOut(started)
        if self.gateway.isDraining {
            // Admitted just before SIGTERM: the drain's sweep may have missed it.
            self.carryOut(self.machine.closeRequested(.init(code: CloseCode.goingAway, reason: "server draining")))
        }
    }

    /// The handler keeps its contexts, and a context keeps its handler: the cycle is broken here, when the closed
    /// channel's pipeline lets go of its handlers, or every connection ever served would stay in memory.
    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.wire = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.machine.heard(now: .now())
        self.handle(self.session.receive(self.unwrapInboundIn(data)))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? NIOWebSocketError {
            self.handle(self.session.decodingFailed(error))
        } else {
            self.gateway.logger.debug("connection error", metadata: ["connectionId": "\(self.info.id)", "error": "\(error)"])
            self.carryOut(self.machine.failed("\(error)"))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.carryOut(self.machine.channelClosed())
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if !context.channel.isWritable { self.dropSlowConsumer() }
    }

    /// The client stopped reading and its queue (or a replay's hold) passed the bound.
    private func dropSlowConsumer() {
        let action = self.machine.writabilityLost()
        if action != .none { self.gateway.metrics.slowConsumerCloses.increment() }
        self.carryOut(action)
    }

    // MARK: Carrying out actions

    /// What the WebSocket session decided about a frame.
    private func handle(_ action: WebSocketSession.Action) {
        guard let context else { return }
        switch action {
        case .none:
            break
        case .deliver(let buffer, let isText):
            self.carryOut(self.machine.received(buffer, isText: isText, now: .now()))
        case .inflate(let buffer, let isText):
            guard let inflater = self.shard.inflater else {
                self.carryOut(.close(.init(code: CloseCode.internalError, reason: "cannot inflate messages now")))
                return
            }
            let inflated = inflater.inflate(buffer, limit: self.session.maxMessageBytes, allocator: context.channel.allocator)
            self.handle(self.session.inflated(inflated, isText: isText))
        case .pong(let payload):
            self.writeControl(WireFrame.pong, payload)
        case .sendClose(let code, let reason):
            self.countClientError(code)
            self.machine.closeStarted(.init(code: code, reason: reason))
            self.writeClose(code: code, reason: reason)
            self.startCloseTimer(context)
        case .sendCloseAndDisconnect(let code, let reason):
            if let code { self.countClientError(code) }
            self.machine.protocolEnded(self.sessionStatus)
            self.writeClose(code: code, reason: reason).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            // A peer that stopped reading never takes our close (it waits behind what the kernel would not take):
            // the timer ends it anyway. Only then: a clean close goes out at once and needs none.
            if self.queuedBytes > 0 { self.startCloseTimer(context) }
        case .disconnect:
            self.machine.protocolEnded(self.sessionStatus)
            context.close(promise: nil)
        }
    }

    /// Weakly held: a cancelled task may stay in the loop's timer queue until its deadline, and it must not keep a
    /// closed connection's handler and pipeline alive that long (10 MB per 10,000 closes, measured by `churn`).
    private func startCloseTimer(_ context: ChannelHandlerContext) {
        guard self.closeTimer == nil else { return }
        self.closeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: self.machine.rules.closeTimeout) { [weak self] in
            guard let self else { return }
            self.carryOut(self.machine.closeTimerFired())
        }
    }

    private var sessionStatus: ConnectionStateMachine.CloseStatus? {
        self.session.closeStatus.map { .init(code: $0.code, reason: $0.reason) }
    }

    /// What the connection state machine decided.
    private func carryOut(_ action: ConnectionStateMachine.Action) {
        guard let context else { return }
        switch action {
        case .none:
            break
        case .run(.message(let buffer, let isText)):
            self.route(buffer, isText: isText)
        case .run(.command(.join(let room))):
            self.join(room, after: nil)
        case .run(.command(.leave(let room))):
            self.leave(room)
        case .run(.command(.close)):
            break  // closes act at once (``ConnectionStateMachine/commanded(_:)``), never queued
        case .resumeReads:
            if context.channel.isActive { context.channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in } }
        case .sendPing:
            self.writeControl(WireFrame.ping, ByteBuffer())
        case .close(let status):
            self.handle(self.session.close(code: status.code, reason: status.reason))
            // Read the peer's answer even while a backend call holds reads off: nothing more is routed now.
            context.channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
        case .closeNow(let status):
            // Told if it still reads; closed on the next loop turn, outside whatever fan-out wrote the last frame.
            _ = self.session.close(code: status.code, reason: status.reason)
            self.writeClose(code: status.code, reason: status.reason)
            context.eventLoop.assumeIsolated().execute { context.close(promise: nil) }
        case .drop:
            self.session.abandon(reason: self.machine.closeStatus?.reason ?? "dropped")
            context.close(promise: nil)
        case .disconnect(let status):
            self.runDisconnect(status)
        }
    }

    // MARK: Sending

    /// A frame for this connection alone (replies, errors); fan-out is counted by the hub in batches.
    private func send(_ frame: OutboundFrame) {
        guard let context else { return }
        let encoded = self.encoding.encode(frame, allocator: context.channel.allocator)
        self.writeNow(encoded, flush: true)
        self.gateway.metrics.messagesSent.increment()
        self.gateway.metrics.bytesSent.increment(by: Int64(frame.bytes.count))
        self.gateway.metrics.wireBytesSent.increment(by: Int64(encoded.readableBytes))
    }

    /// - Returns: whether the frames were written (the connection is open).
    @discardableResult
    private func writeNow(_ frames: ByteBuffer, flush: Bool, promise: EventLoopPromise<Void>? = nil) -> Bool {
        guard self.machine.isOpen, let wire = self.wire else { return false }
        wire.write(self.wrapOutboundOut(frames), promise: promise)
        self.unflushedBytes += frames.readableBytes
        if flush || self.unflushedBytes > self.gateway.configuration.outboundQueueBytes / 4 { self.flush() }
        return true
    }

    /// A control frame, flushed at once.
    @discardableResult
    private func writeControl(_ opcode: UInt8, _ payload: ByteBuffer) -> EventLoopFuture<Void> {
        guard let wire = self.wire else { return self.context!.eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel) }
        return wire.writeAndFlush(self.wrapOutboundOut(WireFrame.encode(opcode, payload, allocator: wire.channel.allocator)))
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
        var data = ByteBuffer()
        if let code {
            data.writeInteger(code)
            // A close frame's payload is at most 125 bytes; cut the reason on a character boundary.
            data.writeString(String(decoding: reason.utf8.prefix(123), as: UTF8.self).trimmingSuffix("\u{FFFD}"))
        }
        return self.writeControl(WireFrame.close, data)
    }

    // MARK: Routing

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
        self.machine.lastActiveAt = now
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
        for effect in BuiltinApps.handle(app, request: request, userId: self.info.userId, rooms: self.machine.rooms, now: now) {
            switch effect {
            case .reply(let frame): self.send(frame)
            case .error(let message):
                self.gateway.metrics.clientError("bad_message")
                self.send(ServerFrames.error(message, timestamp: now))
            case .echo:
                // Straight from the read buffer, not through an `OutboundFrame` copy.
                let encoded = self.encoding.encode(isText ? .text : .binary, buffer, allocator: ByteBufferAllocator())
                self.writeNow(encoded, flush: true)
                self.gateway.metrics.messagesSent.increment()
                self.gateway.metrics.bytesSent.increment(by: Int64(buffer.readableBytes))
                self.gateway.metrics.wireBytesSent.increment(by: Int64(encoded.readableBytes))
            case .publish(let frame, let audience): self.gateway.broker.publish(frame, to: audience)
            case .roomMessage(let message):
                guard self.mayUse(message.room, now: now) else { continue }
                self.gateway.broker.publish(message)
            case .join(let room, let after):
                guard self.mayUse(room, now: now) else { continue }
                guard self.machine.mayJoin(room) else {
                    self.gateway.metrics.clientError("too_many_rooms")
                    self.send(ServerFrames.error("Too many rooms (at most \(self.machine.rules.maxRooms))", timestamp: now))
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
        let stageAdmitted = self.gateway.messageThrottle?.admit() ?? true
        switch self.machine.throttle(stageAdmitted: stageAdmitted, now: Throttle.now()) {
        case .admit:
            return true
        case .refuse(let reason):
            self.gateway.metrics.throttled(reason)
            let frame: JSONValue = [
                "message": "Too Many Requests", "connectionId": .string(self.info.id.rawValue), "requestId": .string(ConnectionID.random().rawValue),
            ]
            self.send(.text(frame))
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
                self.machine.expiresAt = claims.expiresAt
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
        self.machine.replayStarted()
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
            for frames in self.machine.replayEnded() { self.writeNow(frames, flush: false) }
            self.flush()
        }
    }

    /// One page of a replay, bypassing the hold; completes once the kernel has taken all of it.
    private func writeReplayed(_ entries: [HistoryEntry], on loop: any EventLoop) -> EventLoopFuture<Void> {
        let written = loop.makePromise(of: Void.self)
        guard let context, self.machine.isOpen, !entries.isEmpty else {
            written.fail(ChannelError.ioOnClosedChannel)
            return written.futureResult
        }
        for (index, entry) in entries.enumerated() {
            let frames = self.encoding.encode(entry.frame, allocator: context.channel.allocator)
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
        guard let context else { return }
        self.machine.backendCallStarted()
        context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
        context.eventLoop.makeFutureWithTask(operation).assumeIsolated().whenComplete { result in
            self.machine.backendCallEnded()
            completion(result)
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
        self.closeTimer?.cancel()
        self.shard.remove(self, rooms: self.machine.rooms)
        self.gateway.metrics.disconnected(code: status.code)
        self.gateway.logger.info(
            "disconnected",
            metadata: ["connectionId": "\(self.info.id)", "closeCode": "\(status.code)", "closeReason": "\(status.reason)"]
        )
        self.lease.end(.init(info: self.info, rooms: self.machine.rooms, status: status))
    }
}

extension String {
    fileprivate func trimmingSuffix(_ suffix: Character) -> String {
        var result = self
        while result.last == suffix { result.removeLast() }
        return result
    }
}
