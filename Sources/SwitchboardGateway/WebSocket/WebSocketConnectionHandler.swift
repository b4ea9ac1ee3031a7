import Logging
import NIOCore
import NIOWebSocket
import SwitchboardConfiguration
import SwitchboardCore
import SwitchboardWebSocket

/// The RFC 6455 transport of one seed-protocol connection, confined to its event loop: frames go to
/// ``WebSocketSession`` (framing and the close handshake), whole messages to the ``ClientConnection``, which holds
/// everything the gateway decides and asks this handler to write, ping and close.
final class WebSocketConnectionHandler: ChannelInboundHandler, RemovableChannelHandler, ClientTransport {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = ByteBuffer

    let connection: ClientConnection
    private var session: WebSocketSession
    private var context: ChannelHandlerContext?
    /// Where frames encoded by ``WireFrame`` are written: the context of NIO's `WebSocketFrameEncoder` (which the
    /// upgrader installs and cannot be removed), so bytes go out below it, already encoded once per fan-out.
    private var wire: ChannelHandlerContext?
    /// Started when a close handshake begins; its firing goes to the state machine.
    private var closeTimer: Scheduled<Void>?

    init(_ admitted: Admitted, gateway: GatewayContext, eventLoop: any EventLoop, now: NIODeadline) {
        let configuration = gateway.configuration
        self.session = WebSocketSession(
            maxMessageBytes: configuration.maxMessageBytes,
            rejectBinary: configuration.binaryFrames == .reject,
            perMessageDeflate: admitted.deflate != nil
        )
        self.connection = ClientConnection(
            info: admitted.info,
            claims: admitted.claims,
            lease: admitted.lease,
            gateway: gateway,
            liveness: Liveness(gateway.livenessTiming, now: now),
            eventLoop: eventLoop,
            encoding: gateway.encoding(for: admitted.deflate)
        )
    }

    private var gateway: GatewayContext { self.connection.gateway }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.wire = (try? context.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self)) ?? context
        let metadata: Logger.Metadata = self.session.perMessageDeflate ? ["compression": "\(PerMessageDeflate.extensionName)"] : [:]
        self.connection.start(self, active: context.channel.isActive, metadata: metadata)
    }

    /// The handler keeps its contexts, and a context keeps its handler: the cycle is broken here, when the closed
    /// channel's pipeline lets go of its handlers, or every connection ever served would stay in memory.
    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.wire = nil
        self.connection.detach()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.connection.heard(now: .now())
        self.handle(self.session.receive(self.unwrapInboundIn(data)))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? NIOWebSocketError {
            self.handle(self.session.decodingFailed(error))
        } else {
            self.gateway.logger.debug("connection error", metadata: ["connectionId": "\(self.connection.id)", "error": "\(error)"])
            self.connection.failed("\(error)")
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.closeTimer?.cancel()
        self.connection.closed()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if !context.channel.isWritable { self.connection.writabilityLost() }
    }

    // MARK: ClientTransport

    var queuedBytes: Int {
        (try? self.context?.channel.syncOptions?.getOption(ChannelOptions.bufferedWritableBytes)) ?? 0
    }

    var isWritable: Bool { self.context?.channel.isWritable ?? false }

    func write(_ encoded: ByteBuffer, promise: EventLoopPromise<Void>?) {
        guard let wire else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        wire.write(self.wrapOutboundOut(encoded), promise: promise)
    }

    func flush() {
        self.wire?.flush()
    }

    func setReading(_ on: Bool) {
        guard let context, !on || context.channel.isActive else { return }
        context.channel.setOption(ChannelOptions.autoRead, value: on).whenComplete { _ in }
    }

    func sendPing() {
        self.writeControl(WireFrame.ping, ByteBuffer())
    }

    func close(_ status: ConnectionStateMachine.CloseStatus) {
        guard let context else { return }
        self.handle(self.session.close(code: status.code, reason: status.reason))
        // Read the peer's answer even while a backend call holds reads off: nothing more is routed now.
        context.channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
    }

    func closeNow(_ status: ConnectionStateMachine.CloseStatus) {
        guard let context else { return }
        // Told if it still reads; closed on the next loop turn, outside whatever fan-out wrote the last frame.
        _ = self.session.close(code: status.code, reason: status.reason)
        self.writeClose(code: status.code, reason: status.reason)
        context.eventLoop.assumeIsolated().execute { context.close(promise: nil) }
    }

    func drop(reason: String) {
        self.session.abandon(reason: reason)
        self.context?.close(promise: nil)
    }

    func selectRoute(_ body: JSONValue?) -> String? {
        self.gateway.configuration.routeSelectionExpression.routeKey(for: body)
    }

    func encodeReply(_ kind: OutboundFrame.Kind, _ payload: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        self.connection.encoding.encode(kind, payload, allocator: allocator)
    }

    func messageDone() {}

    // MARK: Carrying out the session's actions

    /// What the WebSocket session decided about a frame.
    private func handle(_ action: WebSocketSession.Action) {
        guard let context else { return }
        switch action {
        case .none:
            break
        case .deliver(let buffer, let isText):
            self.connection.received(buffer, isText: isText, now: .now())
        case .inflate(let buffer, let isText):
            guard let inflater = self.connection.shard.inflater else {
                self.connection.carryOut(.close(.init(code: CloseCode.internalError, reason: "cannot inflate messages now")))
                return
            }
            let inflated = inflater.inflate(buffer, limit: self.session.maxMessageBytes, allocator: context.channel.allocator)
            self.handle(self.session.inflated(inflated, isText: isText))
        case .pong(let payload):
            self.writeControl(WireFrame.pong, payload)
        case .sendClose(let code, let reason):
            self.countClientError(code)
            self.connection.closeStarted(.init(code: code, reason: reason))
            self.writeClose(code: code, reason: reason)
            self.startCloseTimer(context)
        case .sendCloseAndDisconnect(let code, let reason):
            if let code { self.countClientError(code) }
            self.connection.protocolEnded(self.sessionStatus)
            self.writeClose(code: code, reason: reason).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            // A peer that stopped reading never takes our close (it waits behind what the kernel would not take):
            // the timer ends it anyway. Only then: a clean close goes out at once and needs none.
            if self.queuedBytes > 0 { self.startCloseTimer(context) }
        case .disconnect:
            self.connection.protocolEnded(self.sessionStatus)
            context.close(promise: nil)
        }
    }

    /// Weakly held: a cancelled task may stay in the loop's timer queue until its deadline, and it must not keep a
    /// closed connection's handler and pipeline alive that long (10 MB per 10,000 closes, measured by `churn`).
    private func startCloseTimer(_ context: ChannelHandlerContext) {
        guard self.closeTimer == nil else { return }
        self.closeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: self.gateway.connectionRules.closeTimeout) { [weak self] in
            self?.connection.closeTimerFired()
        }
    }

    private var sessionStatus: ConnectionStateMachine.CloseStatus? {
        self.session.closeStatus.map { .init(code: $0.code, reason: $0.reason) }
    }

    /// A control frame, flushed at once.
    @discardableResult
    private func writeControl(_ opcode: UInt8, _ payload: ByteBuffer) -> EventLoopFuture<Void> {
        guard let wire = self.wire else { return self.connection.eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel) }
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
}

extension String {
    fileprivate func trimmingSuffix(_ suffix: Character) -> String {
        var result = self
        while result.last == suffix { result.removeLast() }
        return result
    }
}
