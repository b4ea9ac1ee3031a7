import Logging
import NIOCore
import NIOHTTP1
import Prometheus
import SwitchboardConfiguration
import SwitchboardCore
import Synchronization

/// A management request as the HTTP handler read it.
struct ManagementRequest: Sendable {
    var method: HTTPMethod
    /// The request target exactly as received (raw path and query), as SigV4 signs it.
    var uri: String
    var headers: [(name: String, value: String)]
    var body: [UInt8]
    /// The body went past the message limit; the rest was not kept.
    var bodyTooLarge: Bool
    var remoteAddress: SocketAddress?
    /// The address the request came in on: its port is part of the gateway's own origin.
    var localAddress: SocketAddress? = nil
}

/// Backends push through this API: API Gateway's `@connections` (so AWS SDKs work unchanged but for their endpoint)
/// and Switchboard's own rooms, users, broadcast and listings, all under `/@…` with or without a `/{stage}` prefix.
struct ManagementAPI: Sendable {
    let gateway: GatewayContext
    private let sigV4: SigV4Verifier
    /// Node-wide: one API serves every port, so bodies read on either count against the same budget.
    let bodyBudget: BodyBudget

    init(gateway: GatewayContext) {
        self.gateway = gateway
        let configuration = gateway.configuration
        self.bodyBudget = BodyBudget(limit: max(8 << 20, 4 * configuration.maxMessageBytes))
        self.sigV4 = SigV4Verifier(
            keys: configuration.managementAccessKeys,
            maxClockSkewSeconds: configuration.managementMaxClockSkew.components.seconds
        )
    }

    /// The path's segments after an optional stage, when the path is a management path (`/@…` or `/{stage}/@…`).
    static func route(_ uri: String) -> [String]? {
        RequestTarget(uri).managementSegments
    }

    /// The routes that read a body: every other management request with one is refused at its head.
    static func takesBody(_ method: HTTPMethod, _ segments: [String]) -> Bool {
        guard method == .POST, segments.count == 2 || segments == ["@broadcast"] else { return false }
        return ["@connections", "@rooms", "@users", "@broadcast"].contains(segments[0])
    }

    /// What a management request's head allows before any of its body is read.
    enum HeadDecision {
        /// Read the body; `budgeted` when its sender is not yet known (SigV4 signs the body), so its bytes count
        /// against ``bodyBudget`` until it ends.
        case readBody(budgeted: Bool)
        /// Answer now and close: the body, if any, is never read.
        case refuse(ManagementError)
    }

    /// Everything that can be checked from the head: whether the route takes a body, its declared size, and every
    /// credential that does not depend on the body (loopback, bearer token). Only a SigV4 request must send its body
    /// before it is known; those bodies are budgeted.
    func admitHead(_ request: ManagementRequest, segments: [String], body: RequestBody) -> HeadDecision {
        let limit = self.gateway.configuration.maxMessageBytes
        switch body {
        case .invalid:
            return .refuse(.badRequest("Content-Length must be one non-negative number"))
        case .length, .chunked:
            guard Self.takesBody(request.method, segments) else {
                return .refuse(
                    ManagementError(status: .payloadTooLarge, type: "PayloadTooLargeException", message: "This endpoint takes no request body")
                )
            }
            if case .length(let length) = body, length > limit {
                return .refuse(.payloadTooLarge(limit: limit))
            }
        case .none:
            break
        }
        if segments == ["@openapi.json"], request.method == .GET { return .readBody(budgeted: false) }
        do {
            let pending = try self.authorizeHead(request)
            return .readBody(budgeted: pending && body != .none)
        } catch {
            return .refuse(error)
        }
    }

    func handle(_ request: ManagementRequest) async -> GatewayResponse {
        var response: GatewayResponse
        do {
            response = try await self.dispatch(request)
        } catch let error as ManagementError {
            response = error.response
        } catch {
            self.gateway.metrics.executionErrors.increment()
            self.gateway.managementLogger.error("management request failed", metadata: ["error": "\(error)"])
            response = ManagementError(status: .internalServerError, type: "InternalServerErrorException", message: "Internal server error").response
        }
        response.headers.append(("x-amzn-RequestId", ConnectionID.random().rawValue))
        return response
    }

    private func dispatch(_ request: ManagementRequest) async throws -> GatewayResponse {
        guard let segments = Self.route(request.uri) else { throw ManagementError.notFound("Not Found") }
        if segments == ["@openapi.json"], request.method == .GET {
            return GatewayResponse(.ok, json: self.gateway.resources.openAPIDocument)
        }
        // An oversized body was not kept, so it cannot be signature-checked: refuse it for its size first.
        guard !request.bodyTooLarge else { throw ManagementError.payloadTooLarge(limit: self.gateway.configuration.maxMessageBytes) }
        try self.authorize(request)
        let query = Admission.split(request.uri).query
        switch (request.method, segments.count, segments[0]) {
        case (.GET, 1, "@connections"):
            return try await self.listConnections(query)
        case (_, 2, "@connections"):
            let id = try self.connectionID(segments[1])
            switch request.method {
            case .POST: return try await self.post(request, to: id)
            case .GET: return try await self.describe(id)
            case .DELETE: return try await self.delete(id, query: query)
            default: throw ManagementError.methodNotAllowed(request.method, "/@connections/{connectionId}")
            }
        case (.PUT, 4, "@connections") where segments[2] == "rooms", (.DELETE, 4, "@connections") where segments[2] == "rooms":
            let id = try self.connectionID(segments[1])
            let room = try self.roomID(segments[3])
            guard await self.gateway.broker.connection(id) != nil else { throw ManagementError.gone(id.rawValue) }
            self.gateway.broker.send(request.method == .PUT ? .join(room) : .leave(room), to: id)
            return GatewayResponse(.noContent)
        case (.GET, 1, "@rooms"):
            let page = await self.gateway.broker.rooms(after: query["cursor"], limit: try self.limit(query))
            return self.page(page) { ["roomId": .string($0.room.rawValue), "members": .number(String($0.members))] }
        case (.GET, 3, "@rooms") where segments[2] == "members":
            let page = await self.gateway.broker.members(of: try self.roomID(segments[1]), after: query["cursor"], limit: try self.limit(query))
            return self.page(page) { ["connectionId": .string($0.connection.rawValue), "userId": .string($0.userId)] }
        case (.POST, 2, "@rooms"):
            let room = try self.roomID(segments[1])
            return try await self.publish(request, query: query, to: .room(room), room: room)
        case (.POST, 2, "@users"):
            if let problem = Name.problem(with: segments[1], field: "userId") { throw ManagementError.badRequest(problem) }
            return try await self.publish(request, query: query, to: .user(segments[1]), room: nil)
        case (.POST, 1, "@broadcast"):
            return try await self.publish(request, query: query, to: .everyone, room: nil)
        case (.GET, 1, "@stats"):
            return GatewayResponse(.ok, json: await self.stats())
        default:
            throw ManagementError.notFound("No management route for \(request.method) /\(segments.joined(separator: "/"))")
        }
    }

    // MARK: Auth

    /// The management API's check, also `/metrics`'s: loopback (from this machine's own origin) when no credentials
    /// are configured, otherwise the bearer token or a SigV4 signature over the whole request.
    func authorize(_ request: ManagementRequest) throws(ManagementError) {
        guard try self.authorizeHead(request) else { return }
        let signed = SigV4Verifier.Request(method: request.method.rawValue, uri: request.uri, headers: request.headers, body: request.body)
        if let problem = self.sigV4.problem(with: signed, nowEpochSeconds: self.gateway.wallClock() / 1000) {
            throw .forbidden(problem)
        }
    }

    /// The checks that need no body. Returns whether a SigV4 signature remains to be verified over the body.
    private func authorizeHead(_ request: ManagementRequest) throws(ManagementError) -> Bool {
        let configuration = self.gateway.configuration
        if configuration.managementIsOpen {
            try self.authorizeLoopback(request.headers, remoteAddress: request.remoteAddress, localAddress: request.localAddress)
            return false
        }
        let authorization = request.headers.first { $0.name.lowercased() == "authorization" }?.value ?? ""
        if let token = configuration.managementBearerToken, authorization.hasPrefix("Bearer ") {
            guard SigV4Verifier.constantTimeEqual(String(authorization.dropFirst("Bearer ".count)), token) else {
                throw .forbidden("Invalid bearer token")
            }
            return false
        }
        guard !configuration.managementAccessKeys.isEmpty, authorization.hasPrefix("AWS4-HMAC-SHA256 ") else {
            throw .forbidden("Missing Authentication Token")
        }
        return true
    }

    /// Without credentials, being on this machine is the only credential, and a browser on this machine carries
    /// requests for any web page it shows. So a loopback caller is refused when a browser says the request comes from
    /// another site (`Origin` other than this port's own loopback origin, `Sec-Fetch-Site: cross-site/same-site`),
    /// and when `Host` is not a loopback name (DNS rebinding: `evil.example` resolving to 127.0.0.1).
    func authorizeLoopback(
        _ headers: [(name: String, value: String)],
        remoteAddress: SocketAddress?,
        localAddress: SocketAddress?
    ) throws(ManagementError) {
        guard remoteAddress.map(Self.isLoopback) ?? false else {
            throw .forbidden("The management API has no credentials configured and answers loopback clients only")
        }
        func values(_ name: String) -> [String] { headers.filter { $0.name.lowercased() == name }.map(\.value) }
        let hosts = values("host")
        guard hosts.count == 1, Self.loopbackAuthority(hosts[0]) != nil else {
            throw .forbidden("Without management credentials, Host must be localhost, 127.0.0.1 or [::1] (with an optional port)")
        }
        let site = values("sec-fetch-site").map { $0.lowercased() }
        guard !site.contains("cross-site"), !site.contains("same-site") else {
            throw .forbidden("Without management credentials, requests from other sites are refused (Sec-Fetch-Site)")
        }
        let scheme = self.gateway.configuration.tlsCertificateFile == nil ? "http" : "https"
        for origin in values("origin") where !Self.isOwnOrigin(origin, scheme: scheme, port: localAddress?.port) {
            throw .forbidden("Without management credentials, requests from other origins are refused (Origin \(origin.prefix(100)))")
        }
    }

    /// `host[:port]` when the host is a loopback name and the port, if any, a number in 1...65535.
    static func loopbackAuthority(_ authority: String) -> (host: String, port: Int?)? {
        let authority = authority.lowercased()
        for host in ["localhost", "127.0.0.1", "[::1]"] where authority.hasPrefix(host) {
            let rest = authority.dropFirst(host.count)
            if rest.isEmpty { return (host, nil) }
            guard rest.first == ":", rest.count <= 6, rest.dropFirst().utf8.allSatisfy({ (48...57).contains($0) }),
                let port = Int(rest.dropFirst()), (1...65535).contains(port)
            else { return nil }
            return (host, port)
        }
        return nil
    }

    /// `scheme://loopback-name[:port]` with this listener's port (explicit, or the scheme's default).
    static func isOwnOrigin(_ origin: String, scheme: String, port: Int?) -> Bool {
        guard origin.lowercased().hasPrefix(scheme + "://"),
            let (_, given) = self.loopbackAuthority(String(origin.dropFirst(scheme.count + 3)))
        else { return false }
        return (given ?? (scheme == "https" ? 443 : 80)) == port
    }

    /// The dashboard's check: the same credentials, with the bearer token also accepted as `?token=`, since a
    /// browser's `EventSource` cannot send headers.
    /// The token may come in either place; both with different values is refused, as on `$connect`.
    func authorizeDashboard(
        uri: String,
        headers: [(name: String, value: String)],
        remoteAddress: SocketAddress?,
        localAddress: SocketAddress?
    ) throws(ManagementError) {
        if self.gateway.configuration.managementIsOpen {
            try self.authorizeLoopback(headers, remoteAddress: remoteAddress, localAddress: localAddress)
            return
        }
        var given = Admission.queryPairs(uri).filter { $0.name == "token" }.map(\.value)
        given += headers.filter { $0.name.lowercased() == "authorization" && $0.value.hasPrefix("Bearer ") }.map {
            String($0.value.dropFirst("Bearer ".count))
        }
        guard given.allSatisfy({ $0 == given.first }) else {
            throw .badRequest("Token given in more than one place with different values")
        }
        guard let token = self.gateway.configuration.managementBearerToken, let first = given.first,
            SigV4Verifier.constantTimeEqual(first, token)
        else { throw .forbidden("The dashboard needs the management bearer token: /dashboard?token=TOKEN") }
    }

    static func isLoopback(_ address: SocketAddress) -> Bool {
        guard let ip = address.ipAddress else { return false }
        return ip.hasPrefix("127.") || ip == "::1" || ip.hasPrefix("::ffff:127.")
    }

    // MARK: @connections

    private func post(_ request: ManagementRequest, to id: ConnectionID) async throws -> GatewayResponse {
        let frame = self.frame(from: request)
        switch await self.gateway.broker.post(frame, to: id) {
        case .delivered:
            return GatewayResponse(.ok)
        case .busy:
            self.gateway.metrics.throttled("client_buffer_full")
            throw ManagementError.limitExceeded("The client's outbound buffer is full")
        case .notHere:
            throw ManagementError.gone(id.rawValue)
        }
    }

    private func describe(_ id: ConnectionID) async throws -> GatewayResponse {
        guard let entry = await self.gateway.broker.connection(id) else { throw ManagementError.gone(id.rawValue) }
        let lastActive = await self.gateway.broker.lastActive([entry])[id] ?? entry.info.connectedAt
        return GatewayResponse(
            .ok,
            json: [
                "connectedAt": .string(ISO8601.string(epochMilliseconds: entry.info.connectedAt)),
                "identity": ["sourceIp": .string(entry.info.sourceIp), "userAgent": .string(entry.info.userAgent)],
                "lastActiveAt": .string(ISO8601.string(epochMilliseconds: lastActive)),
            ]
        )
    }

    private func delete(_ id: ConnectionID, query: [String: String]) async throws -> GatewayResponse {
        var code = CloseCode.normal
        if let text = query["code"] {
            guard let value = UInt16(text), CloseCode.isValidOnWire(value) else {
                throw ManagementError.badRequest("code must be a close code a server may send: 1000-1003, 1007-1014 or 3000-4999")
            }
            code = value
        }
        let reason = query["reason"] ?? ""
        guard reason.utf8.count <= 123 else { throw ManagementError.badRequest("reason must be at most 123 bytes of UTF-8") }
        guard await self.gateway.broker.connection(id) != nil else { throw ManagementError.gone(id.rawValue) }
        self.gateway.broker.send(.close(code: code, reason: reason), to: id)
        return GatewayResponse(.noContent)
    }

    private func listConnections(_ query: [String: String]) async throws -> GatewayResponse {
        let page = await self.gateway.broker.connections(after: query["cursor"], limit: try self.limit(query))
        let lastActive = await self.gateway.broker.lastActive(page.items)
        return self.page(page) { entry in
            [
                "connectionId": .string(entry.info.id.rawValue), "userId": .string(entry.info.userId),
                "rooms": .array(entry.rooms.map { .string($0.rawValue) }),
                "connectedAt": .string(ISO8601.string(epochMilliseconds: entry.info.connectedAt)),
                "lastActiveAt": .string(ISO8601.string(epochMilliseconds: lastActive[entry.info.id] ?? entry.info.connectedAt)),
                "sourceIp": .string(entry.info.sourceIp), "userAgent": .string(entry.info.userAgent),
            ]
        }
    }

    // MARK: Rooms, users, broadcast

    /// Delivers the body (or, with `format=message`, a seed `message` frame around it) and reports how many
    /// connections on this node received it.
    private func publish(_ request: ManagementRequest, query: [String: String], to audience: Audience, room: RoomID?) async throws -> GatewayResponse
    {
        let frame = self.frame(from: request)
        switch query["format"] ?? "raw" {
        case "raw":
            break
        case "message":
            guard let room else { throw ManagementError.badRequest("format=message needs a room: POST /@rooms/{roomId}") }
            guard frame.kind == .text, let message = try? JSONValue.parse(frame.bytes) else {
                throw ManagementError.badRequest("format=message needs a JSON body")
            }
            let sender = query["sender"] ?? "server"
            if let problem = Name.problem(with: sender, field: "sender") { throw ManagementError.badRequest(problem) }
            let delivered = await self.gateway.broker.localReach(audience)
            self.gateway.broker.publish(ServerFrames.message(room, message: message, sender: sender, timestamp: self.gateway.wallClock()))
            return GatewayResponse(.ok, json: ["delivered": .number(String(delivered))])
        default:
            throw ManagementError.badRequest("format must be raw or message")
        }
        let delivered = await self.gateway.broker.localReach(audience)
        self.gateway.broker.publish(frame, to: audience)
        return GatewayResponse(.ok, json: ["delivered": .number(String(delivered))])
    }

    private func stats() async -> JSONValue {
        let rooms = self.gateway.broker.localRoomCount
        return [
            "connections": .number(String(self.gateway.activeConnections.load(ordering: .relaxed))),
            "connectionsAccepted": .number(String(self.gateway.acceptedConnections.load(ordering: .relaxed))),
            "rooms": .number(String(rooms)),
            "eventLoops": .number(String(self.gateway.configuration.eventLoops)),
            "draining": .bool(self.gateway.isDraining),

            "uptimeSeconds": .number(String((self.gateway.wallClock() - self.gateway.startedAt) / 1000)),
        ]
    }

    // MARK: Parsing

    private func frame(from request: ManagementRequest) -> OutboundFrame {
        OutboundFrame(UTF8Validation.isValid(request.body) ? .text : .binary, request.body)
    }

    private func connectionID(_ text: String) throws(ManagementError) -> ConnectionID {
        guard let id = ConnectionID(text) else { throw .badRequest("Invalid connectionId: '\(text.prefix(130))'") }
        return id
    }

    private func roomID(_ text: String) throws(ManagementError) -> RoomID {
        guard let room = RoomID(text) else { throw .badRequest(Name.problem(with: text, field: "roomId") ?? "Invalid roomId") }
        return room
    }

    private func limit(_ query: [String: String]) throws(ManagementError) -> Int {
        guard let text = query["limit"] else { return 100 }
        guard let limit = Int(text), (1...1000).contains(limit) else { throw .badRequest("limit must be 1...1000") }
        return limit
    }

    private func page<Item>(_ page: Page<Item>, item: (Item) -> JSONValue) -> GatewayResponse {
        GatewayResponse(.ok, json: ["items": .array(page.items.map(item)), "next": page.next.map(JSONValue.string) ?? .null])
    }
}
