import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Prometheus
import SwitchboardConfiguration
import SwitchboardCore
import Synchronization

/// `$connect` for the built-in gateway: decides whether an upgrade request becomes a registered connection.
/// Refusals carry an HTTP status and a message, as API Gateway answers a refused `$connect`.
enum Admission {
    /// Paths the HTTP side owns; every other path accepts WebSocket upgrades (`/`, `/ws`, `/prod`, `/prod/ws`).
    /// Any segment starting with `@` belongs to the management API.
    static let reservedPrefixes = ["/health", "/metrics", "/dashboard", "/client", "/demo"]

    /// Whether a decoded path (``RequestTarget/path``) takes WebSocket upgrades: not reserved, and no segment that
    /// starts with `@`. Callers pass the decoded path so that `/%40broadcast` is refused here as `/@broadcast` is.
    static func isWebSocketPath(_ path: String) -> Bool {
        !self.reservedPrefixes.contains { path == $0 || path.hasPrefix($0 + "/") }
            && !path.split(separator: "/").contains { $0.hasPrefix("@") }
    }

    /// A handshake that passed the synchronous checks, with what the asynchronous ones need.
    struct Candidate: Sendable {
        var info: ConnectionInfo
        /// The JWT, from the `token` query parameter, `Authorization: Bearer` or a `Sec-WebSocket-Protocol` entry.
        var token: String?
        /// The subprotocol to answer with when the token came as one (browsers require an answer).
        var subprotocol: String?
        /// The slot it holds, and whatever later checks add to it; whoever ends the handshake ends the lease.
        var lease: ConnectionLease
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
        if let problem = self.handshakeProblem(head) { return refuse(.badRequest, "Invalid WebSocket handshake: \(problem)", "bad_request") }
        if gateway.isDraining { return refuse(.serviceUnavailable, "Server is draining; reconnect to another node", "draining") }
        let target = RequestTarget(head.uri)
        if let problem = target.problem { return refuse(.badRequest, problem, "bad_request") }
        let (path, query) = (target.path, target.query)
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
        let token: String?
        switch self.token(head) {
        case .success(let found): token = found
        case .failure(let problem): return refuse(.badRequest, problem.message, "bad_request")
        }
        var subprotocol: String?
        let protocols = head.headers[canonicalForm: "sec-websocket-protocol"].map(String.init)
        if let jwt = protocols.first(where: OriginPolicy.looksLikeJWT) {
            subprotocol = protocols.first { !OriginPolicy.looksLikeJWT($0) } ?? jwt
        }
        let stage = target.segments.first.flatMap { $0.isEmpty || $0 == "ws" ? nil : $0 }
        let info = ConnectionInfo(
            id: .random(),
            userId: userId,
            connectedAt: gateway.wallClock(),
            sourceIp: remoteAddress?.ipAddress ?? "",
            userAgent: head.headers.first(name: "user-agent") ?? "",
            stage: stage,
            domainName: head.headers.first(name: "host") ?? "localhost"
        )
        // Last, so that every refusal above leaves the slots alone.
        guard let lease = ConnectionLease.take(gateway) else {
            let limit = configuration.maxConnections ?? 0
            return refuse(.tooManyRequests, "Too many connections on this node (at most \(limit))", "max_connections")
        }
        return .success(Candidate(info: info, token: token, subprotocol: subprotocol, lease: lease))
    }

    /// What RFC 6455 4.2.1 asks of an opening handshake and NIO's upgrader does not check: HTTP/1.1 or later, `GET`,
    /// a `Host`, `Upgrade` among the `Connection` tokens, one `Sec-WebSocket-Key` that is base64 of exactly 16 bytes,
    /// and no body (a body would be read while `$connect` runs, for nothing).
    static func handshakeProblem(_ head: HTTPRequestHead) -> String? {
        guard head.version.major > 1 || (head.version.major == 1 && head.version.minor >= 1) else { return "needs HTTP/1.1" }
        guard head.method == .GET else { return "the method must be GET, not \(head.method.rawValue)" }
        guard head.headers["host"].count == 1 else { return "needs exactly one Host header" }
        guard head.headers[canonicalForm: "connection"].contains(where: { $0.lowercased() == "upgrade" }) else {
            return "needs Connection: Upgrade"
        }
        let keys = head.headers["sec-websocket-key"]
        guard keys.count == 1, let key = keys.first, key.utf8.count == 24, Data(base64Encoded: key)?.count == 16 else {
            return "Sec-WebSocket-Key must be the base64 of 16 bytes"
        }
        guard case .none = RequestBody.declared(by: head) else { return "a handshake has no body" }
        return nil
    }

    /// A refusal of where a token came from.
    struct TokenProblem: Error {
        let message: String
    }

    /// The JWT of a handshake. It may come from any one of three places: the `token` query parameter, an
    /// `Authorization: Bearer` header, or a JWT-shaped `Sec-WebSocket-Protocol` entry (browsers cannot set headers).
    /// When several places (or several values in one place) carry tokens, they must be the same token: a proxy or
    /// client that adds its own would otherwise decide silently which one counts, so differing values are refused.
    static func token(_ head: HTTPRequestHead) -> Result<String?, TokenProblem> {
        var found = self.queryPairs(head.uri).filter { $0.name == "token" }.map(\.value)
        found += head.headers["authorization"].filter { $0.hasPrefix("Bearer ") }.map { String($0.dropFirst("Bearer ".count)) }
        found += head.headers[canonicalForm: "sec-websocket-protocol"].map(String.init).filter(OriginPolicy.looksLikeJWT)
        guard let first = found.first else { return .success(nil) }
        guard found.allSatisfy({ $0 == first }) else {
            return .failure(TokenProblem(message: "Token given in more than one place with different values"))
        }
        return .success(first)
    }

    /// The checks that need I/O: the token's signature and claims, the per-user limit, the `$connect` route, then
    /// the registration. What they take is held by the candidate's lease.
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
        try self.countUser(candidate.lease, info.userId, gateway: gateway)
        info = try await self.runConnectRoute(info, head: head, gateway: gateway)
        try await candidate.lease.register(info)
        return (info, claims)
    }

    /// ``authorize(_:head:gateway:)`` without leaving the event loop, when none of its steps needs I/O (no JWT key,
    /// no `$connect` route, a broker that registers in memory): no task and no thread hop per handshake, which is
    /// most of what admission costs beyond HTTP. `nil` when a step needs I/O: then ``authorize(_:head:gateway:)``
    /// runs, and may find the user already counted.
    static func authorizeNow(_ candidate: Candidate, gateway: GatewayContext) throws -> (ConnectionInfo, VerifiedClaims?)? {
        guard gateway.authenticator == nil, gateway.configuration.routes.integration(for: RouteTable.connectKey) == nil else { return nil }
        // Counted first, so a refused connection is never visible in the registry; a lease counts its user once, so
        // the asynchronous path may count again when the broker cannot register here.
        try self.countUser(candidate.lease, candidate.info.userId, gateway: gateway)
        guard candidate.lease.registerNow(candidate.info) else { return nil }
        return (candidate.info, nil)
    }

    private static func countUser(_ lease: ConnectionLease, _ userId: String, gateway: GatewayContext) throws {
        guard lease.countUser(userId) else {
            throw GatewayResponseError(
                .message(.tooManyRequests, "Too many connections for this user (at most \(gateway.configuration.maxConnectionsPerUser ?? 0))"),
                reason: "max_connections_per_user"
            )
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
        self.queryPairs(of: uri.utf8)
    }

    /// The `&`-separated pairs after the first `?`, read as bytes: every request's target goes through here.
    static func queryPairs(of uri: String.UTF8View) -> [(name: String, value: String)] {
        guard let mark = uri.firstIndex(of: UInt8(ascii: "?")) else { return [] }
        return uri[uri.index(after: mark)...].split(separator: UInt8(ascii: "&")).map { pair in
            guard let equals = pair.firstIndex(of: UInt8(ascii: "=")) else { return (self.decoded(pair[...], plusIsSpace: true), "") }
            return (self.decoded(pair[..<equals], plusIsSpace: true), self.decoded(pair[pair.index(after: equals)...], plusIsSpace: true))
        }
    }

    /// Splits a request target into its path and its decoded query parameters (the first value of each name wins).
    static func split(_ uri: String) -> (path: String, query: [String: String]) {
        var query: [String: String] = [:]
        for (name, value) in self.queryPairs(uri) where query[name] == nil { query[name] = value }
        return (String(uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)[0]), query)
    }

    /// Decodes `%XX` escapes (and `+` as a space in query strings); text with an invalid escape is kept as it is.
    static func percentDecode(_ text: some StringProtocol, plusIsSpace: Bool = true) -> String {
        self.decoded(Substring(text).utf8, plusIsSpace: plusIsSpace)
    }

    /// ``percentDecode(_:plusIsSpace:)`` on bytes; text with nothing to decode is copied as it is.
    static func decoded(_ bytes: Substring.UTF8View, plusIsSpace: Bool) -> String {
        guard bytes.contains(where: { $0 == UInt8(ascii: "%") || (plusIsSpace && $0 == UInt8(ascii: "+")) }) else {
            return String(Substring(bytes))
        }
        return PercentDecoding.bytes(bytes, plusIsSpace: plusIsSpace).map { String(decoding: $0, as: UTF8.self) } ?? String(Substring(bytes))
    }
}

/// A request target parsed once: its path percent-decoded once, segment by segment, and its query. Management routing,
/// the WebSocket path check and the stage all read these, so `/%40stats` is `/@stats` everywhere: a path cannot be a
/// management call to one reader and a WebSocket stage to another.
struct RequestTarget: Sendable {
    /// The decoded segments after the leading `/` (`/prod/ws` is `["prod", "ws"]`; `/` is `[""]`).
    let segments: [String]
    /// The decoded path, `/` joined.
    let path: String
    /// The decoded query; the first value of each name wins.
    let query: [String: String]
    /// Why the path is refused: an encoded `/` (no id or name contains one, and it would split a segment
    /// differently for different readers).
    let problem: String?

    /// Read as bytes: this runs for every HTTP request (each long-polling request among them).
    init(_ uri: String) {
        let utf8 = uri.utf8
        let end = utf8.firstIndex(of: UInt8(ascii: "?")) ?? utf8.endIndex
        self.segments = utf8[..<end].split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).dropFirst().map {
            Admission.decoded($0, plusIsSpace: false)
        }
        self.path = "/" + self.segments.joined(separator: "/")
        var query: [String: String] = [:]
        for (name, value) in Admission.queryPairs(of: utf8) where query[name] == nil { query[name] = value }
        self.query = query
        self.problem = self.segments.contains { $0.utf8.contains(UInt8(ascii: "/")) } ? "Encoded / (%2F) is not allowed in a path" : nil
    }

    /// The segments after an optional stage, when the path is a management path (`/@…` or `/{stage}/@…`).
    var managementSegments: [String]? {
        var segments = self.segments
        if segments.count >= 2, !segments[0].hasPrefix("@"), segments[1].hasPrefix("@") { segments.removeFirst() }
        guard let first = segments.first, first.hasPrefix("@") else { return nil }
        return segments
    }
}

/// How a request says it has a body, read from its head before any of the body arrives.
enum RequestBody: Equatable {
    case none
    /// `Content-Length`, checked: digits only, every copy equal, no overflow.
    case length(Int)
    /// `Transfer-Encoding` (chunked): the size is known only as it arrives.
    case chunked
    /// A `Content-Length` that is not one non-negative number.
    case invalid

    static func declared(by head: HTTPRequestHead) -> RequestBody {
        if !head.headers["transfer-encoding"].isEmpty { return .chunked }
        let lengths = head.headers["content-length"]
        guard let first = lengths.first else { return .none }
        // `Int(_:)` returns nil on overflow instead of trapping; the digit check refuses `+5` and `-0`.
        guard lengths.allSatisfy({ $0 == first }), first.utf8.allSatisfy({ (48...57).contains($0) }), let length = Int(first) else {
            return .invalid
        }
        return length == 0 ? .none : .length(length)
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
