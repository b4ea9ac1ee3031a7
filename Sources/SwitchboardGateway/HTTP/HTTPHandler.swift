import NIOCore
import NIOHTTP1
import SwitchboardConfiguration
import SwitchboardCore
import SwitchboardWebSocket
import Synchronization

/// An HTTP response the gateway writes itself: a status and a JSON body.
struct GatewayResponse: Sendable {
    var status: HTTPResponseStatus
    var body: [UInt8]
    var headers: [(name: String, value: String)] = []

    init(_ status: HTTPResponseStatus, json: JSONValue) {
        self.status = status
        self.body = json.jsonBytes
    }

    /// A response without a body (204, or 200 for a delivered `@connections` POST, as API Gateway answers).
    init(_ status: HTTPResponseStatus) {
        self.status = status
        self.body = []
    }

    /// A backend's body passed through (a refused `$connect`): JSON when it parses as JSON, text otherwise.
    init(_ status: HTTPResponseStatus, body: [UInt8]) {
        self.status = status
        self.body = body
        if (try? JSONValue.parse(body)) == nil { self.headers.append(("Content-Type", "text/plain; charset=utf-8")) }
    }

    /// API Gateway's error shape: `{"message": …}`.
    static func message(_ status: HTTPResponseStatus, _ message: String) -> GatewayResponse {
        GatewayResponse(status, json: ["message": .string(message)])
    }
}

/// The bytes of request bodies being read before their sender is known, across the node. A SigV4 signature covers
/// the body, so such a body must be read before it can be checked; without a bound, many sockets each sending most of
/// a large body could pin memory. Each ``HTTPHandler`` owns what its current request reserved and gives it back once.
final class BodyBudget: Sendable {
    let limit: Int
    private let used = Atomic<Int>(0)

    init(limit: Int) {
        self.limit = limit
    }

    var inUse: Int { self.used.load(ordering: .relaxed) }

    /// Takes `bytes` (one read's worth, far below `Int.max`) when they fit, nothing otherwise.
    func reserve(_ bytes: Int) -> Bool {
        guard self.used.add(bytes, ordering: .relaxed).newValue <= self.limit else {
            self.used.subtract(bytes, ordering: .relaxed)
            return false
        }
        return true
    }

    func release(_ bytes: Int) {
        self.used.subtract(bytes, ordering: .relaxed)
    }
}

/// A connection that passed `$connect`, on its way to its handler.
struct Admitted {
    var info: ConnectionInfo
    var claims: VerifiedClaims?
    var lease: ConnectionLease
    /// The permessage-deflate the handshake agreed to, if any.
    var deflate: PerMessageDeflate.Agreement?
}

/// Per-connection state shared by the WebSocket upgrader and ``HTTPHandler`` before the upgrade.
final class UpgradeState {
    /// Why `$connect` refused the upgrade; the HTTP handler answers with it.
    var rejection: GatewayResponse?
    /// The connection admitted by `$connect` and not yet handed to its WebSocket handler. If the channel closes
    /// before the handover, its lease ends here, so nothing leaks.
    var admitted: Admitted?
    /// Closes a connection that does not finish its request in time (slowloris): armed while waiting for a request,
    /// cancelled once one has arrived (for an upgrade, when the upgrader sees its head).
    var requestTimer: Scheduled<Void>?
    /// An Engine.IO WebSocket the upgrader accepted (no `$connect`: that runs per namespace), with its `sid` when it
    /// is offered for an upgrade from polling.
    var socketIO: (head: HTTPRequestHead, sid: String?)?
}

/// Serves the plain-HTTP side of the port before (or instead of) an upgrade: health endpoints, and the answers to
/// upgrade requests that `$connect` refused or that were not valid WebSocket handshakes.
final class HTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let gateway: GatewayContext
    private let upgrade: UpgradeState
    /// `nil` on a port that does not serve the management API.
    private let management: ManagementAPI?
    /// The WebSocket upgrader, re-armed before each request after the first (``rearmUpgrade(context:)``).
    private let upgraders: [any HTTPServerProtocolUpgrader]
    /// The encoder and the other HTTP handlers an upgrade takes out of the pipeline, once looked up.
    private var httpHandlers: (encoder: HTTPResponseEncoder, extras: [any RemovableChannelHandler])?
    private var request: HTTPRequestHead?
    /// The current request's target, parsed once at its head.
    private var target: RequestTarget?
    private var body: [UInt8] = []
    /// Whether the current body counts against the management API's ``BodyBudget``.
    private var budgeted = false
    /// What the current body holds of that budget; only ``releaseBody()`` gives it back, and zeroes it.
    private var reserved = 0
    /// The request was answered at its head and the connection is closing: nothing more is read into memory.
    private var refused = false
    /// The current request is Engine.IO's: its body is bounded by `socketio.max_payload`.
    private var socketIOBody = false
    /// The long-polling GET this connection waits on: told to the session if the connection closes first.
    private var waitingPoll: (sid: String, id: UInt64)?
    /// The dashboard's event stream, while one is open on this connection.
    private var eventStream: RepeatedTask?

    init(gateway: GatewayContext, upgrade: UpgradeState, management: ManagementAPI?, upgraders: [any HTTPServerProtocolUpgrader] = []) {
        self.gateway = gateway
        self.upgrade = upgrade
        self.management = management
        self.upgraders = upgraders
    }

    /// The name the upgrade's completion removes this handler by.
    static let name = "switchboard.http"

    /// NIO's upgrade handler looks at a connection's first request only, then leaves the pipeline. A connection kept
    /// alive gets a fresh one before its next request, so that request may still be an upgrade: clients (aiohttp)
    /// send the Engine.IO upgrade's WebSocket request on any pooled connection, after polling requests.
    private func rearmUpgrade(context: ChannelHandlerContext) {
        let pipeline = context.pipeline.syncOperations
        guard !self.upgraders.isEmpty, (try? pipeline.handler(type: HTTPServerUpgradeHandler.self)) == nil else { return }
        if self.httpHandlers == nil {
            // The connection's HTTP handlers never change: found once, not on every request.
            guard let encoder = try? pipeline.handler(type: HTTPResponseEncoder.self),
                let decoder = try? pipeline.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self),
                let pipelining = try? pipeline.handler(type: HTTPServerPipelineHandler.self),
                let validator = try? pipeline.handler(type: NIOHTTPResponseHeadersValidator.self),
                let errors = try? pipeline.handler(type: HTTPServerProtocolErrorHandler.self)
            else { return }
            self.httpHandlers = (encoder, [decoder, pipelining, validator, errors])
        }
        guard let (encoder, extras) = self.httpHandlers else { return }
        let handler = HTTPServerUpgradeHandler(
            upgraders: self.upgraders,
            httpEncoder: encoder,
            extraHTTPHandlers: extras,
            upgradeCompletionHandler: { context in context.pipeline.removeHandler(name: HTTPHandler.name, promise: nil) }
        )
        try? pipeline.addHandler(handler, position: .before(self))
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.armRequestTimer(context: context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.upgrade.requestTimer?.cancel()
        self.releaseBody()
    }

    /// A malformed request ends the connection (NIO's error handler has already answered 400): the decoder reads
    /// nothing after a parse error, so an open socket would only wait for the request timer. Other errors (a refused
    /// upgrade) are answered by this handler as usual.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is HTTPParserError { context.close(promise: nil) }
    }

    private func releaseBody() {
        if self.reserved > 0 { self.management?.bodyBudget.release(self.reserved) }
        self.reserved = 0
        self.body = []
    }

    private func armRequestTimer(context: ChannelHandlerContext) {
        self.upgrade.requestTimer?.cancel()
        let timeout = TimeAmount(self.gateway.configuration.handshakeTimeout)
        self.upgrade.requestTimer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) {
            self.gateway.metrics.clientError("handshake_timeout")
            context.close(promise: nil)
        }
    }

    /// Bodies are refused at the head except on management routes that take one (and there only within the message
    /// limit, and after the checks the head allows), so no other request makes the node hold bytes it will not use.
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.refused else { return }
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.request = head
            self.releaseBody()
            self.budgeted = false
            self.socketIOBody = false
            if let refusal = self.admitHead(head, context: context) { self.refuse(refusal, context: context) }
        case .body(let chunk):
            guard self.request != nil else { return }
            let bytes = chunk.readableBytes
            let limit = self.socketIOBody ? self.gateway.configuration.socketIO.maxPayload : self.gateway.configuration.maxMessageBytes
            guard bytes <= limit - self.body.count else {
                self.refuse(ManagementError.payloadTooLarge(limit: limit).response, context: context)
                return
            }
            if self.budgeted, let budget = self.management?.bodyBudget {
                guard budget.reserve(bytes) else {
                    self.gateway.metrics.throttled("request_bodies")
                    self.refuse(.message(.serviceUnavailable, "Too many request bodies in flight; retry later"), context: context)
                    return
                }
                self.reserved += bytes
            }
            self.body.append(contentsOf: chunk.readableBytesView)
        case .end:
            guard let head = self.request else { return }
            self.request = nil
            self.upgrade.requestTimer?.cancel()
            let body = self.body
            self.releaseBody()
            let keepAlive = head.isKeepAlive && head.headers["upgrade"].isEmpty
            if keepAlive { self.rearmUpgrade(context: context) }
            let target = self.target ?? RequestTarget(head.uri)
            if self.upgrade.rejection == nil, SocketIOHTTP.owns(target.path, self.gateway) {
                self.serveSocketIO(head, body: body, keepAlive: keepAlive, context: context)
                return
            }
            if head.method == .GET, ["/metrics", "/dashboard", "/dashboard/events"].contains(target.path) {
                self.serveTelemetry(target.path, head: head, context: context)
                return
            }
            if let management = self.management, self.upgrade.rejection == nil, target.managementSegments != nil {
                let request = self.managementRequest(head, body: body, context: context)
                context.eventLoop.makeFutureWithTask { await management.handle(request) }.assumeIsolated().whenSuccess { response in
                    self.write(response, keepAlive: keepAlive, context: context)
                }
                return
            }
            self.write(self.respond(to: head, path: target.path), keepAlive: keepAlive, context: context)
        }
    }

    /// What can be refused from the head alone (`nil`: read on). A management route says itself what it allows; any
    /// other request with a body gets 413 (or the upgrade's refusal) before a byte of the body is read.
    private func admitHead(_ head: HTTPRequestHead, context: ChannelHandlerContext) -> GatewayResponse? {
        let target = RequestTarget(head.uri)
        self.target = target
        if let problem = target.problem { return .message(.badRequest, problem) }
        let body = RequestBody.declared(by: head)
        if self.upgrade.rejection == nil, SocketIOHTTP.owns(target.path, self.gateway) {
            let limit = self.gateway.configuration.socketIO.maxPayload
            switch body {
            case .none: return nil
            case .invalid: return .message(.badRequest, "Content-Length must be one non-negative number")
            case .length(let length) where length > limit: return ManagementError.payloadTooLarge(limit: limit).response
            case .length, .chunked:
                self.socketIOBody = true
                return nil
            }
        }
        if let management = self.management, self.upgrade.rejection == nil, let segments = target.managementSegments {
            switch management.admitHead(self.managementRequest(head, body: [], context: context), segments: segments, body: body) {
            case .readBody(let budgeted):
                self.budgeted = budgeted
                return nil
            case .refuse(let error):
                return error.response
            }
        }
        switch body {
        case .none:
            return nil
        case .invalid:
            return .message(.badRequest, "Content-Length must be one non-negative number")
        case .length, .chunked:
            defer { self.upgrade.rejection = nil }
            return self.upgrade.rejection ?? .message(.payloadTooLarge, "This endpoint takes no request body")
        }
    }

    /// Answers now and closes, dropping whatever of the request is still to come.
    private func refuse(_ response: GatewayResponse, context: ChannelHandlerContext) {
        self.refused = true
        self.request = nil
        self.releaseBody()
        self.upgrade.requestTimer?.cancel()
        self.write(response, keepAlive: false, context: context)
    }

    private func managementRequest(_ head: HTTPRequestHead, body: [UInt8], context: ChannelHandlerContext) -> ManagementRequest {
        ManagementRequest(
            method: head.method,
            uri: head.uri,
            headers: head.headers.map { ($0.name, $0.value) },
            body: body,
            bodyTooLarge: false,
            remoteAddress: context.channel.remoteAddress,
            localAddress: context.channel.localAddress
        )
    }

    /// `/metrics`, the dashboard page and its event stream: part of the management API, so only on the port that
    /// serves it (404 elsewhere, as on the public port when `management.port` is set) and behind its credentials.
    /// Per-node internals are not for anonymous callers; Prometheus sends the bearer token (`authorization:`).
    private func serveTelemetry(_ path: String, head: HTTPRequestHead, context: ChannelHandlerContext) {
        let gateway = self.gateway
        guard let management = self.management else {
            self.write(.message(.notFound, "Not Found"), keepAlive: head.isKeepAlive, context: context)
            return
        }
        if path == "/metrics" {
            do {
                try management.authorize(self.managementRequest(head, body: [], context: context))
            } catch {
                self.write(error.response, keepAlive: head.isKeepAlive, context: context)
                return
            }
            context.eventLoop.makeFutureWithTask { await gateway.prometheusText() }.assumeIsolated().whenSuccess { text in
                var response = GatewayResponse(.ok, body: Array(text.utf8))
                response.headers = [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")]
                self.write(response, keepAlive: head.isKeepAlive, context: context)
            }
            return
        }
        do {
            try management.authorizeDashboard(
                uri: head.uri,
                headers: head.headers.map { ($0.name, $0.value) },
                remoteAddress: context.channel.remoteAddress,
                localAddress: context.channel.localAddress
            )
        } catch {
            self.write(error.response, keepAlive: head.isKeepAlive, context: context)
            return
        }
        if path == "/dashboard" {
            var response = GatewayResponse(.ok, body: self.gateway.resources.dashboardPage)
            response.headers = [("Content-Type", "text/html; charset=utf-8")]
            self.write(response, keepAlive: head.isKeepAlive, context: context)
            return
        }
        // Server-sent events: one snapshot a second until the browser goes away.
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "text/event-stream")
        headers.add(name: "Cache-Control", value: "no-cache")
        context.writeAndFlush(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        self.eventStream = context.eventLoop.scheduleRepeatedAsyncTask(initialDelay: .zero, delay: .seconds(1)) { _ in
            bound.eventLoop.makeFutureWithTask { await gateway.dashboardSnapshot() }.map { snapshot in
                let context = bound.value
                let event = context.channel.allocator.buffer(string: "data: \(snapshot.jsonString)\n\n")
                context.writeAndFlush(NIOAny(HTTPServerResponsePart.body(.byteBuffer(event))), promise: nil)
            }
        }
    }

    /// An Engine.IO request: answered now, or (a long-polling GET) when the session has packets; the answer may
    /// come from the session's loop, so it hops back here.
    private func serveSocketIO(_ head: HTTPRequestHead, body: [UInt8], keepAlive: Bool, context: ChannelHandlerContext) {
        let id = SocketIOHTTP.nextRequestID()
        let bound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        let cors = SocketIOHTTP.corsHeaders(head, self.gateway)
        let responder = PollResponder(id: id) { response, written in
            bound.eventLoop.execute {
                let (handler, context) = bound.value
                if handler.waitingPoll?.id == id { handler.waitingPoll = nil }
                var response = response
                response.headers += cors
                handler.write(response, keepAlive: keepAlive, context: context).whenComplete { _ in written?() }
            }
        }
        let waiting = SocketIOHTTP.handle(
            head,
            body: body,
            responder: responder,
            remoteAddress: context.channel.remoteAddress,
            eventLoop: context.eventLoop,
            gateway: self.gateway
        )
        if let waiting { self.waitingPoll = (waiting, id) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let (sid, id) = self.waitingPoll {
            self.waitingPoll = nil
            SocketIOHTTP.pollAborted(sid: sid, id: id, gateway: self.gateway)
        }
        self.eventStream?.cancel()
        self.releaseBody()
        self.upgrade.requestTimer?.cancel()
        if let admitted = self.upgrade.admitted {
            self.upgrade.admitted = nil
            admitted.lease.end(nil)
        }
        context.fireChannelInactive()
    }

    /// `path` is the decoded one (``RequestTarget/path``), as every other reader of the path sees it.
    private func respond(to head: HTTPRequestHead, path: String) -> GatewayResponse {
        if let rejection = self.upgrade.rejection {
            self.upgrade.rejection = nil
            return rejection
        }
        switch (head.method, path) {
        case (.GET, "/health"), (.HEAD, "/health"):
            if self.gateway.isDraining { return GatewayResponse(.serviceUnavailable, json: ["status": "draining"]) }
            guard self.gateway.broker.isConnected else {
                // Local delivery goes on without Redis; the load balancer keeps the node unless told otherwise.
                let status: HTTPResponseStatus = self.gateway.configuration.redisRequiredForHealth ? .serviceUnavailable : .ok
                return GatewayResponse(status, json: ["status": "degraded", "redis": "unreachable"])
            }
            return GatewayResponse(.ok, json: ["status": "ok"])
        case (.GET, "/health/websocket"):
            return self.websocketHealth()
        case (.GET, "/client/switchboard.js"):
            var response = GatewayResponse(.ok, body: self.gateway.resources.clientScript)
            response.headers = [("Content-Type", "text/javascript; charset=utf-8"), ("Cache-Control", "max-age=300")]
            return response
        case (.GET, "/demo"):
            var response = GatewayResponse(.ok, body: self.gateway.resources.demoPage)
            response.headers = [("Content-Type", "text/html; charset=utf-8")]
            return response
        default:
            break
        }
        if !head.headers["upgrade"].isEmpty {
            return .message(
                .badRequest,
                "Invalid WebSocket handshake: needs Upgrade: websocket, Connection: Upgrade, Sec-WebSocket-Key and Sec-WebSocket-Version: 13"
            )
        }
        if Admission.isWebSocketPath(path) {
            return .message(.upgradeRequired, "This is a WebSocket endpoint: connect with a WebSocket client (ws://host:port\(path))")
        }
        return .message(.notFound, "Not Found")
    }

    /// The JSON of seed `004_*`, with live counts.
    private func websocketHealth() -> GatewayResponse {
        let draining = self.gateway.isDraining
        let body: JSONValue = [
            "status": draining ? "draining" : self.gateway.broker.isConnected ? "healthy" : "degraded",
            "websocket": draining ? "unavailable" : "available",
            "endpoint": "/ws",
            "features": [
                "heartbeat": true, "stickySession": false, "authentication": false, "widgetSupport": false, "reconnection": true,
            ],
            "connections": .number(String(self.gateway.activeConnections.load(ordering: .relaxed))),
            "connectionsAccepted": .number(String(self.gateway.acceptedConnections.load(ordering: .relaxed))),
            "uptimeSeconds": .number(String((self.gateway.wallClock() - self.gateway.startedAt) / 1000)),
        ]
        return GatewayResponse(draining ? .serviceUnavailable : .ok, json: body)
    }

    /// - Returns: when the response is written.
    @discardableResult
    private func write(_ response: GatewayResponse, keepAlive: Bool, context: ChannelHandlerContext) -> EventLoopFuture<Void> {
        var headers = HTTPHeaders()
        if !response.body.isEmpty, !response.headers.contains(where: { $0.name == "Content-Type" }) {
            headers.add(name: "Content-Type", value: "application/json")
        }
        headers.add(name: "Content-Length", value: String(response.body.count))
        for (name, value) in response.headers { headers.add(name: name, value: value) }
        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: response.status, headers: headers))), promise: nil)
        context.write(self.wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: response.body)))), promise: nil)
        let done = context.writeAndFlush(self.wrapOutboundOut(.end(nil)))
        if keepAlive {
            self.armRequestTimer(context: context)
        } else {
            done.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
        return done
    }
}

extension GatewayContext {
    var isDraining: Bool { self.draining.load(ordering: .relaxed) }
}
