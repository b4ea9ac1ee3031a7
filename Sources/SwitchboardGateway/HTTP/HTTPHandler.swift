import NIOCore
import NIOHTTP1
import SwitchboardCore
import Synchronization

/// An HTTP response the gateway writes itself: a status and a JSON body.
struct GatewayResponse: Sendable {
    var status: HTTPResponseStatus
    var body: [UInt8]

    init(_ status: HTTPResponseStatus, json: JSONValue) {
        self.status = status
        self.body = json.jsonBytes
    }

    /// API Gateway's error shape: `{"message": …}`.
    static func message(_ status: HTTPResponseStatus, _ message: String) -> GatewayResponse {
        GatewayResponse(status, json: ["message": .string(message)])
    }
}

/// Per-connection state shared by the WebSocket upgrader and ``HTTPHandler`` before the upgrade.
final class UpgradeState {
    /// Why `$connect` refused the upgrade; the HTTP handler answers with it.
    var rejection: GatewayResponse?
    /// The connection registered by `$connect` and not yet handed to its WebSocket handler. If the channel closes
    /// before the handover, the registration is undone here, so nothing leaks.
    var registered: ConnectionInfo?
}

/// Serves the plain-HTTP side of the port before (or instead of) an upgrade: health endpoints, and the answers to
/// upgrade requests that `$connect` refused or that were not valid WebSocket handshakes.
final class HTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let gateway: GatewayContext
    private let upgrade: UpgradeState
    private var request: HTTPRequestHead?

    init(gateway: GatewayContext, upgrade: UpgradeState) {
        self.gateway = gateway
        self.upgrade = upgrade
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head): self.request = head
        case .body: break
        case .end:
            guard let head = self.request else { return }
            self.request = nil
            let response = self.respond(to: head)
            self.write(response, keepAlive: head.isKeepAlive && head.headers["upgrade"].isEmpty, context: context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let info = self.upgrade.registered {
            self.upgrade.registered = nil
            let broker = self.gateway.broker
            let active = self.gateway
            context.eventLoop.makeFutureWithTask {
                await broker.unregister(info.id)
                active.activeConnections.subtract(1, ordering: .relaxed)
            }.whenComplete { _ in }
        }
        context.fireChannelInactive()
    }

    private func respond(to head: HTTPRequestHead) -> GatewayResponse {
        if let rejection = self.upgrade.rejection {
            self.upgrade.rejection = nil
            return rejection
        }
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? "/"
        switch (head.method, path) {
        case (.GET, "/health"), (.HEAD, "/health"):
            return self.gateway.isDraining
                ? GatewayResponse(.serviceUnavailable, json: ["status": "draining"])
                : GatewayResponse(.ok, json: ["status": "ok"])
        case (.GET, "/health/websocket"):
            return self.websocketHealth()
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
            "status": draining ? "draining" : "healthy",
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

    private func write(_ response: GatewayResponse, keepAlive: Bool, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: String(response.body.count))
        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: response.status, headers: headers))), promise: nil)
        context.write(self.wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: response.body)))), promise: nil)
        let done = context.writeAndFlush(self.wrapOutboundOut(.end(nil)))
        if !keepAlive {
            done.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }
}

extension GatewayContext {
    var isDraining: Bool { self.draining.load(ordering: .relaxed) }
}
