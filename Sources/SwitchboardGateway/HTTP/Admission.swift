import Logging
import NIOCore
import NIOHTTP1
import Prometheus
import SwitchboardCore
import Synchronization

/// `$connect` for the built-in gateway: decides whether an upgrade request becomes a registered connection.
/// Refusals carry an HTTP status and a message, as API Gateway answers a refused `$connect`.
enum Admission {
    /// Paths the HTTP side owns; every other path accepts WebSocket upgrades (`/`, `/ws`, `/prod`, `/prod/ws`).
    /// Any segment starting with `@` belongs to the management API.
    static let reservedPrefixes = ["/health", "/metrics", "/dashboard", "/client", "/demo"]

    static func isWebSocketPath(_ path: String) -> Bool {
        !self.reservedPrefixes.contains { path == $0 || path.hasPrefix($0 + "/") } && !path.contains("/@")
    }

    /// A handshake that passed the synchronous checks, with what the asynchronous ones need.
    struct Candidate: Sendable {
        var info: ConnectionInfo
        /// The JWT, from the `token` query parameter, `Authorization: Bearer` or a `Sec-WebSocket-Protocol` entry.
        var token: String?
        /// The subprotocol to answer with when the token came as one (browsers require an answer).
        var subprotocol: String?
    }

    /// The checks that need no I/O: draining, path, origin, node limits, stage throttle, user id, token location.
    static func evaluate(
        _ head: HTTPRequestHead,
        remoteAddress: SocketAddress?,
        gateway: GatewayContext
    ) -> Result<Candidate, GatewayResponseError> {
        func refuse(_ status: HTTPResponseStatus, _ message: String, _ reason: String) -> Result<Candidate, GatewayResponseError> {
            .failure(GatewayResponseError(.message(status, message), reason: reason))
        }
        let configuration = gateway.configuration
        if gateway.isDraining { return refuse(.serviceUnavailable, "Server is draining; reconnect to another node", "draining") }
        let (path, query) = self.split(head.uri)
        guard self.isWebSocketPath(path) else { return refuse(.notFound, "Not Found", "not_found") }
        if let origin = head.headers.first(name: "origin"), !OriginPolicy.allows(origin, configuration.allowedOrigins) {
            return refuse(.forbidden, "Origin \(origin) is not allowed", "origin")
        }
        if let throttle = gateway.connectThrottle, !throttle.admit() {
            gateway.metrics.throttled("connect_rate")
            return refuse(.tooManyRequests, "Too Many Requests", "connect_rate")
        }
        var userId = "anonymous"
        if let requested = query["userId"] {
            if let problem = Name.problem(with: requested, field: "userId") { return refuse(.badRequest, problem, "bad_request") }
            userId = requested
        }
        var token = query["token"]
        if token == nil, let authorization = head.headers.first(name: "authorization"), authorization.hasPrefix("Bearer ") {
            token = String(authorization.dropFirst("Bearer ".count))
        }
        var subprotocol: String?
        let protocols = head.headers[canonicalForm: "sec-websocket-protocol"].map(String.init)
        if token == nil, let jwt = protocols.first(where: OriginPolicy.looksLikeJWT) {
            token = jwt
            subprotocol = protocols.first { !OriginPolicy.looksLikeJWT($0) } ?? jwt
        }
        let segments = path.split(separator: "/")
        let stage = segments.first.map(String.init).flatMap { $0 == "ws" ? nil : $0 }
        let info = ConnectionInfo(
            id: .random(),
            userId: userId,
            connectedAt: gateway.wallClock(),
            sourceIp: remoteAddress?.ipAddress ?? "",
            userAgent: head.headers.first(name: "user-agent") ?? "",
            stage: stage,
            domainName: head.headers.first(name: "host") ?? "localhost"
        )
        // Last, so that every refusal above leaves the slots alone; whoever ends the handshake gives the slot back.
        let taken = gateway.slots.add(1, ordering: .relaxed).newValue
        if let limit = configuration.maxConnections, taken > limit {
            gateway.slots.subtract(1, ordering: .relaxed)
            return refuse(.tooManyRequests, "Too many connections on this node (at most \(limit))", "max_connections")
        }
        return .success(Candidate(info: info, token: token, subprotocol: subprotocol))
    }

    /// The checks that need I/O: the token's signature and claims, the per-user limit, then the `$connect` route.
    static func authorize(_ candidate: Candidate, head: HTTPRequestHead, gateway: GatewayContext) async throws -> (ConnectionInfo, VerifiedClaims?) {
        var info = candidate.info
        var claims: VerifiedClaims?
        if let authenticator = gateway.authenticator {
            guard let token = candidate.token else {
                gateway.logger.info("connection refused", metadata: ["reason": "no token", "sourceIp": "\(info.sourceIp)"])
                throw GatewayResponseError(
                    .message(.unauthorized, "Unauthorized: no token (token query parameter, Authorization: Bearer, or subprotocol)"),
                    reason: "unauthorized"
                )
            }
            do {
                let verified = try await authenticator.verify(token, now: gateway.wallClock())
                info.userId = verified.userId
                info.authorizer = verified.all
                claims = verified
            } catch {
                gateway.logger.info("connection refused", metadata: ["reason": "\(error.reason)", "sourceIp": "\(info.sourceIp)"])
                throw GatewayResponseError(.message(.unauthorized, "Unauthorized: \(error.reason)"), reason: "unauthorized")
            }
        }
        if let limit = gateway.configuration.maxConnectionsPerUser {
            let admitted = gateway.connectionsPerUser.withLock { counts -> Bool in
                guard counts[info.userId, default: 0] < limit else { return false }
                counts[info.userId, default: 0] += 1
                return true
            }
            guard admitted else {
                throw GatewayResponseError(
                    .message(.tooManyRequests, "Too many connections for this user (at most \(limit))"),
                    reason: "max_connections_per_user"
                )
            }
        }
        do {
            return (try await self.runConnectRoute(info, head: head, gateway: gateway), claims)
        } catch {
            gateway.releaseUser(info.userId)
            throw error
        }
    }

    /// Runs the `$connect` integration, when there is one: a 2xx reply admits the connection (with the reply's
    /// `context` attached), any other status refuses the upgrade with that status and the reply's body, and a
    /// backend that fails or is unreachable refuses it with 500, as API Gateway does.
    static func runConnectRoute(_ admitted: ConnectionInfo, head: HTTPRequestHead, gateway: GatewayContext) async throws -> ConnectionInfo {
        guard let connect = gateway.configuration.routes.integration(for: RouteTable.connectKey) else { return admitted }
        let requestId = ConnectionID.random().rawValue
        let handshake = LambdaProxyEvent.Handshake(
            headers: head.headers.map { ($0.name, $0.value) },
            query: self.queryPairs(head.uri)
        )
        let event = LambdaProxyEvent.make(
            .connect,
            routeKey: RouteTable.connectKey,
            connection: admitted,
            apiId: gateway.configuration.apiId,
            requestId: requestId,
            now: gateway.wallClock(),
            handshake: handshake
        )
        let reply: IntegrationReply
        do {
            reply = try await gateway.invoke(connect.url, event: event, route: RouteTable.connectKey, requestId: requestId)
        } catch {
            throw GatewayResponseError(.message(.internalServerError, "Internal server error"), reason: "integration_error")
        }
        guard reply.isSuccess else {
            let status = HTTPResponseStatus(statusCode: reply.statusCode)
            throw GatewayResponseError(
                GatewayResponse(status, body: reply.body ?? Array(status.reasonPhrase.utf8)),
                reason: "integration_\(reply.statusCode)"
            )
        }
        var info = admitted
        info.authorizer.merge(reply.context) { _, new in new }
        if let userId = reply.context["userId"] {
            if let problem = Name.problem(with: userId, field: "userId") {
                gateway.logger.error("$connect integration returned a bad userId", metadata: ["problem": "\(problem)"])
                throw GatewayResponseError(.message(.internalServerError, "Internal server error"), reason: "integration_error")
            }
            info.userId = userId
        }
        return info
    }

    /// The query's decoded name/value pairs in order, repeats kept.
    static func queryPairs(_ uri: String) -> [(name: String, value: String)] {
        let parts = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else { return [] }
        return parts[1].split(separator: "&").map { pair in
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            return (self.percentDecode(kv[0]), kv.count == 2 ? self.percentDecode(kv[1]) : "")
        }
    }

    /// Splits a request target into its path and its decoded query parameters (the first value of each name wins).
    static func split(_ uri: String) -> (path: String, query: [String: String]) {
        var query: [String: String] = [:]
        for (name, value) in self.queryPairs(uri) where query[name] == nil { query[name] = value }
        return (String(uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)[0]), query)
    }

    /// Decodes `%XX` escapes (and `+` as a space in query strings); invalid escapes are dropped.
    static func percentDecode(_ text: some StringProtocol, plusIsSpace: Bool = true) -> String {
        var bytes: [UInt8] = []
        var utf8 = text.utf8.makeIterator()
        while let byte = utf8.next() {
            switch byte {
            case UInt8(ascii: "+") where plusIsSpace: bytes.append(UInt8(ascii: " "))
            case UInt8(ascii: "%"):
                let high = utf8.next().flatMap(self.hexValue)
                let low = utf8.next().flatMap(self.hexValue)
                if let high, let low { bytes.append(high << 4 | low) }
            default: bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// A refusal as an `Error`, so it can travel through futures and `Result`; `reason` labels the rejection metric.
struct GatewayResponseError: Error {
    let response: GatewayResponse
    let reason: String

    init(_ response: GatewayResponse, reason: String) {
        self.response = response
        self.reason = reason
    }
}
