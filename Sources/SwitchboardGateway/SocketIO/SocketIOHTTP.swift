import NIOCore
import NIOHTTP1
import NIOWebSocket
import SwitchboardConfiguration
import SwitchboardCore
import SwitchboardSocketIO
import SwitchboardWebSocket
import Synchronization

/// The HTTP side of Engine.IO under `socketio.path`: the handshake, long-polling GETs and POSTs, CORS, and the
/// checks of a WebSocket upgrade. Errors answer as the reference server does: 400 (413 for a body over
/// `maxPayload`, 403 for a refused origin) with `{"code":…,"message":…}`.
enum SocketIOHTTP {
    static let ok: GatewayResponse = {
        var response = GatewayResponse(.ok, body: Array("ok".utf8))
        response.headers = [("Content-Type", "text/html")]
        return response
    }()

    static func refusal(_ status: HTTPResponseStatus, code: Int, _ message: String) -> GatewayResponse {
        GatewayResponse(status, json: ["code": .number(String(code)), "message": .string(message)])
    }

    static let unknownTransport = refusal(.badRequest, code: 0, "Transport unknown")
    static let unknownSession = refusal(.badRequest, code: 1, "Session ID unknown")
    static let badMethod = refusal(.badRequest, code: 2, "Bad handshake method")
    static let badRequest = refusal(.badRequest, code: 3, "Bad request")
    static let forbidden = refusal(.forbidden, code: 4, "Forbidden")
    static let unsupportedVersion = refusal(.badRequest, code: 5, "Unsupported protocol version")

    static func error(_ error: EngineIOError) -> GatewayResponse {
        if error == .unknownSession { return unknownSession }
        return refusal(HTTPResponseStatus(statusCode: error.httpStatus), code: 3, error.message)
    }

    /// What a refusal says to a client that cannot see its HTTP status: the body's `message`, or the body's text.
    static func message(of response: GatewayResponse) -> String {
        (try? JSONValue.parse(response.body))?.objectValue?["message"]?.stringValue ?? String(decoding: response.body, as: UTF8.self)
    }

    private static let requests = Atomic<UInt64>(0)
    static func nextRequestID() -> UInt64 { self.requests.add(1, ordering: .relaxed).newValue }

    /// Whether a decoded path is Engine.IO's (`/socket.io/`, or the same without its last `/`).
    static func owns(_ path: String, _ gateway: GatewayContext) -> Bool {
        let socketIO = gateway.configuration.socketIO
        return socketIO.enabled && (path == socketIO.path || path + "/" == socketIO.path)
    }

    /// CORS for polling: an allowed `Origin` is echoed (never `*`), with credentials; a refused one gets nothing that
    /// would let a browser read the refusal as a cross-origin answer.
    static func corsHeaders(_ head: HTTPRequestHead, _ gateway: GatewayContext) -> [(name: String, value: String)] {
        guard let origin = head.headers.first(name: "origin"), OriginPolicy.allows(origin, gateway.configuration.allowedOrigins) else {
            return []
        }
        return [("Access-Control-Allow-Origin", origin), ("Access-Control-Allow-Credentials", "true"), ("Vary", "Origin")]
    }

    /// The checks every Engine.IO request passes: origin, `EIO=4`, a known transport. Whether the `sid` is known
    /// (here, or on the node it names) is for the caller.
    static func check(_ head: HTTPRequestHead, _ gateway: GatewayContext) -> Result<(sid: String?, transport: String), GatewayResponseError> {
        if let origin = head.headers.first(name: "origin"), !OriginPolicy.allows(origin, gateway.configuration.allowedOrigins) {
            return .failure(.init(self.forbidden, reason: "origin"))
        }
        let query = RequestTarget(head.uri).query
        guard query["EIO"] == "4" else { return .failure(.init(self.unsupportedVersion, reason: "bad_request")) }
        guard let transport = query["transport"], transport == "polling" || transport == "websocket" else {
            return .failure(.init(self.unknownTransport, reason: "bad_request"))
        }
        return .success((query["sid"], transport))
    }

    /// A WebSocket upgrade under the path: the Engine.IO checks and the drain; `$connect` runs per namespace later.
    static func admitUpgrade(_ head: HTTPRequestHead, _ gateway: GatewayContext) -> Result<String?, GatewayResponseError> {
        if gateway.isDraining {
            return .failure(.init(.message(.serviceUnavailable, "Server is draining; reconnect to another node"), reason: "draining"))
        }
        switch self.check(head, gateway) {
        case .failure(let refusal): return .failure(refusal)
        case .success((_, let transport)) where transport != "websocket": return .failure(.init(self.badRequest, reason: "bad_request"))
        case .success((nil, _)):
            if let refusal = self.refuseOpening(gateway) { return .failure(.init(refusal, reason: "connect_rate")) }
            return .success(nil)
        case .success((let sid?, _)):
            // A session of another node: its messages and frames are relayed (``SocketIORelay``).
            guard gateway.engines.contains(sid) || gateway.socketIORelay.remoteOwner(of: sid) != nil else {
                return .failure(.init(self.unknownSession, reason: "bad_request"))
            }
            return .success(sid)
        }
    }

    /// A new session is a handshake like a WebSocket's: the node's connect throttle applies.
    static func refuseOpening(_ gateway: GatewayContext) -> GatewayResponse? {
        guard let throttle = gateway.connectThrottle, !throttle.admit() else { return nil }
        gateway.metrics.throttled("connect_rate")
        return self.refusal(.tooManyRequests, code: 3, "Too many connection attempts; retry later")
    }

    static func full(_ gateway: GatewayContext) -> GatewayResponse {
        gateway.metrics.rejected("max_sessions")
        return self.refusal(.serviceUnavailable, code: 3, "Too many Engine.IO sessions on this node (at most \(gateway.engines.maximum))")
    }

    /// A plain HTTP request under the path. `responder` answers it (from any loop); a waiting poll answers later.
    /// - Returns: the `sid` of a GET now waiting for packets, so the caller can report its connection closing.
    static func handle(
        _ head: HTTPRequestHead,
        body: [UInt8],
        responder: PollResponder,
        remoteAddress: SocketAddress?,
        eventLoop: any EventLoop,
        gateway: GatewayContext
    ) -> String? {
        if head.method == .OPTIONS {
            var response = GatewayResponse(.noContent)
            response.headers = [
                ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
                ("Access-Control-Allow-Headers", head.headers[canonicalForm: "access-control-request-headers"].joined(separator: ", ")),
            ]
            if let origin = head.headers.first(name: "origin"), !OriginPolicy.allows(origin, gateway.configuration.allowedOrigins) {
                responder.respond(self.forbidden)
            } else {
                responder.respond(response)
            }
            return nil
        }
        let (sid, transport): (String?, String)
        switch self.check(head, gateway) {
        case .failure(let refusal):
            responder.respond(refusal.response)
            return nil
        case .success(let checked):
            (sid, transport) = checked
        }
        guard let sid else {
            guard head.method == .GET else {
                responder.respond(self.badMethod)
                return nil
            }
            guard transport == "polling", !gateway.isDraining else {
                responder.respond(
                    gateway.isDraining ? .message(.serviceUnavailable, "Server is draining; reconnect to another node") : self.badRequest
                )
                return nil
            }
            if let refusal = self.refuseOpening(gateway) {
                responder.respond(refusal)
                return nil
            }
            let sid = SocketIORelay.makeSid(node: gateway.socketIORelay.node)
            guard gateway.engines.reserve(sid, on: eventLoop) else {
                responder.respond(self.full(gateway))
                return nil
            }
            let session = EngineConnection(
                sid: sid,
                transport: .polling,
                head: head,
                remoteAddress: remoteAddress,
                gateway: gateway,
                eventLoop: eventLoop,
                now: .now()
            )
            gateway.engines.add(session)
            var response = GatewayResponse(.ok, body: EnginePacket.encodePayload([session.openPacket]))
            response.headers = [("Content-Type", "text/plain; charset=UTF-8")]
            responder.respond(response)
            return nil
        }
        guard transport == "polling" else {
            responder.respond(self.badRequest)
            return nil
        }
        guard head.method == .GET || head.method == .POST else {
            responder.respond(self.badMethod)
            return nil
        }
        let isGet = head.method == .GET
        if !gateway.engines.contains(sid), let owner = gateway.socketIORelay.remoteOwner(of: sid) {
            gateway.socketIORelay.forward(isGet: isGet, sid: sid, to: owner, body: body, responder: responder, loop: eventLoop)
            return isGet ? sid : nil
        }
        let found = self.serve(isGet: isGet, sid: sid, body: body, responder: responder, gateway: gateway)
        return found && isGet ? sid : nil
    }

    /// A GET or POST for a session of this node (asked by a client here, or relayed by another node).
    /// - Returns: whether the session was found (if not, `responder` got 400 "Session ID unknown").
    @discardableResult
    static func serve(isGet: Bool, sid: String, body: [UInt8], responder: PollResponder, gateway: GatewayContext) -> Bool {
        let found = gateway.engines.with(sid) { session in
            guard let session else { return responder.respond(self.unknownSession) }
            // The deadlines first, as timers would have fired them: a request after its session's ping timeout
            // finds the session closed, wherever the sweep's period falls.
            session.tick(now: .now())
            if isGet { session.poll(responder) } else { session.post(body, responder) }
        }
        if !found { responder.respond(self.unknownSession) }
        return found
    }

    /// The connection of a waiting GET closed before its answer: its session (here or on its owner) forgets it.
    static func pollAborted(sid: String, id: UInt64, gateway: GatewayContext) {
        guard !gateway.socketIORelay.abort(id) else { return }
        gateway.engines.with(sid) { $0?.pollAborted(id) }
    }
}

/// The RFC 6455 side of an Engine.IO session on a WebSocket (opened directly, or offered for an upgrade):
/// ``WebSocketSession`` frames and closes; whole messages go to the session's loop.
final class SocketIOWebSocketHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = ByteBuffer

    private let gateway: GatewayContext
    /// The upgrade request, until the session it opens takes what it keeps of it (a head holds most of a KiB).
    private var head: HTTPRequestHead?
    /// The session's id: given by an upgrade, made here for a session opened on this WebSocket.
    private var sid: String?
    private var session: WebSocketSession
    private var context: ChannelHandlerContext?
    /// Below NIO's frame encoder: bytes made by ``WireFrame`` go out as they are.
    private var wire: ChannelHandlerContext?
    /// The session's node, when another node owns it: messages are relayed there, frames come back.
    private var remote: (id: UInt64, owner: String)?
    /// When the owner last sent frames (it pings every ping interval), and the task that closes a silent one.
    private var lastHeard = NIODeadline.now()
    private var watchdog: RepeatedTask?

    init(head: HTTPRequestHead, sid: String?, gateway: GatewayContext) {
        (self.head, self.sid, self.gateway) = (head, sid, gateway)
        let limit = min(gateway.configuration.maxMessageBytes, gateway.configuration.socketIO.maxPayload)
        self.session = WebSocketSession(maxMessageBytes: limit, rejectBinary: false)
    }

    private var engineWire: EngineWire? {
        guard let context else { return nil }
        return EngineWire(handler: NIOLoopBound(self, eventLoop: context.eventLoop), channel: context.channel)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        guard let head = self.head else { return }
        self.head = nil
        self.context = context
        self.wire = (try? context.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self)) ?? context
        guard let engineWire else { return }
        if let sid, !self.gateway.engines.contains(sid), let owner = self.gateway.socketIORelay.remoteOwner(of: sid) {
            return self.relay(sid: sid, owner: owner, context: context)
        }
        if let sid {
            let offered = self.gateway.engines.with(sid) { session in
                guard let session else { return engineWire.close() }
                session.webSocketOffered(engineWire)
            }
            if !offered { self.closeNormally() }
            return
        }
        let sid = SocketIORelay.makeSid(node: self.gateway.socketIORelay.node)
        guard self.gateway.engines.reserve(sid, on: context.eventLoop) else {
            _ = SocketIOHTTP.full(self.gateway)
            self.writeClose(CloseCode.tryAgainLater, "too many sessions on this node").assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
            return
        }
        let session = EngineConnection(
            sid: sid,
            transport: .webSocket,
            head: head,
            remoteAddress: context.channel.remoteAddress,
            gateway: self.gateway,
            eventLoop: context.eventLoop,
            now: .now()
        )
        self.sid = session.sid
        self.gateway.engines.add(session)
        session.attach(engineWire)
        self.writeRaw(
            WireFrame.encode(.text, ByteBuffer(string: session.openPacket.webSocketText!), maxFrame: .max, allocator: context.channel.allocator),
            flush: true
        )
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.wire = nil
        self.watchdog?.cancel()
    }

    /// A WebSocket for a session of another node: registered with the relay, watched for the owner's silence.
    private func relay(sid: String, owner: String, context: ChannelHandlerContext) {
        let relay = self.gateway.socketIORelay
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        guard let id = relay.openRemote(bound, sid: sid, owner: owner) else {
            self.writeClose(CloseCode.tryAgainLater, "too many relayed sockets on this node").assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
            return
        }
        self.remote = (id, owner)
        self.lastHeard = .now()
        let timeout = relay.timeout
        self.watchdog = context.eventLoop.scheduleRepeatedTask(initialDelay: timeout, delay: .nanoseconds(timeout.nanoseconds / 4)) { _ in
            let handler = bound.value
            if .now() - handler.lastHeard > timeout { handler.closeNormally() }
        }
    }

    /// Frames the owner of a relayed session wrote, as they go on the wire.
    func remoteFrames(_ bytes: ByteBuffer) {
        self.lastHeard = .now()
        self.writeRaw(bytes, flush: true)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.session.receive(self.unwrapInboundIn(data)) {
        case .none:
            break
        case .deliver(let buffer, let isText):
            let message: EngineMessage = isText ? .text(String(buffer: buffer)) : .binary(Array(buffer.readableBytesView))
            if let remote, let sid {
                self.gateway.socketIORelay.remoteMessage(remote.id, sid: sid, owner: remote.owner, message)
            } else {
                self.toSession { $0.received(message, from: $1) }
            }
        case .inflate:
            self.closeNormally()  // permessage-deflate is not offered on this path
        case .pong(let payload):
            self.writeRaw(WireFrame.encode(WireFrame.pong, payload, allocator: context.channel.allocator), flush: true)
        case .sendClose(let code, let reason), .sendCloseAndDisconnect(let code?, let reason):
            self.writeClose(code, reason).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        case .sendCloseAndDisconnect(nil, _), .disconnect:
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? NIOWebSocketError, case .sendClose(let code, let reason) = self.session.decodingFailed(error) {
            self.writeClose(code, reason).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        } else {
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.watchdog?.cancel()
        if let remote, let sid {
            self.gateway.socketIORelay.remoteSocketEnded(remote.id, sid: sid, owner: remote.owner, closed: true)
        } else {
            self.toSession { $0.webSocketClosed($1) }
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        guard !context.channel.isWritable else { return }
        if let remote, let sid {
            self.gateway.socketIORelay.remoteSocketEnded(remote.id, sid: sid, owner: remote.owner, closed: false)
        } else {
            self.toSession { session, _ in session.webSocketUnwritable() }
        }
    }

    /// Hands an event to the session, on its loop.
    private func toSession(_ body: @escaping @Sendable (EngineConnection, EngineWire) -> Void) {
        guard let sid, let engineWire else { return }
        self.gateway.engines.with(sid) { session in
            if let session { body(session, engineWire) }
        }
    }

    // MARK: Called through ``EngineWire``

    func writeRaw(_ bytes: ByteBuffer, flush: Bool) {
        guard let wire else { return }
        wire.write(self.wrapOutboundOut(bytes), promise: nil)
        if flush { wire.flush() }
    }

    func flushRaw() {
        self.wire?.flush()
    }

    func setReading(_ on: Bool) {
        self.context?.channel.setOption(ChannelOptions.autoRead, value: on).whenComplete { _ in }
    }

    /// The session ended or refused this socket: a normal close, then the TCP connection.
    func closeNormally() {
        guard let context else { return }
        self.writeClose(CloseCode.normal, "").assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    private func writeClose(_ code: UInt16, _ reason: String) -> EventLoopFuture<Void> {
        guard let wire, let context else { return self.gateway.hub.group.next().makeSucceededVoidFuture() }
        var data = ByteBuffer()
        data.writeInteger(code)
        data.writeString(String(reason.utf8.prefix(120)) ?? "")
        return wire.writeAndFlush(self.wrapOutboundOut(WireFrame.encode(WireFrame.close, data, allocator: context.channel.allocator)))
    }
}
