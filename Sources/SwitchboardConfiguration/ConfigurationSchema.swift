import Logging
import SwitchboardCore
import SwitchboardRedis

/// A configuration value before it is typed: YAML scalars, lists and maps, or the same written as strings in
/// environment variables and flags (`a,b` for lists, `k=v,k2=v2` for maps).
public enum ConfigurationValue: Sendable, Hashable {
    case scalar(String)
    case list([String])
    case map([String: String])
}

/// One configuration key: its name in YAML, its flag and environment variable, its default and what it does.
/// The schema is the single source for parsing, validation and `--help`, so the three cannot disagree.
public struct ConfigurationOption: Sendable {
    public enum Shape: Sendable {
        case scalar
        case list
        case map
    }

    public let key: String
    public let shape: Shape
    public let defaultText: String
    public let summary: String
    let apply: @Sendable (inout GatewayConfiguration, ConfigurationValue) throws -> Void

    /// `heartbeat.ping_interval` → `--heartbeat-ping-interval`.
    public var flag: String { "--" + self.key.replacingAll(of: [".", "_"], with: "-") }
    /// `heartbeat.ping_interval` → `SWITCHBOARD_HEARTBEAT_PING_INTERVAL`.
    public var environmentVariable: String { "SWITCHBOARD_" + self.key.replacingAll(of: [".", "-"], with: "_").uppercased() }

    /// Reads a value written as a string (environment variable or flag) in this option's shape.
    /// Applies `value`; the error names this option's key whatever part of the parsing failed.
    func apply(_ value: ConfigurationValue, to configuration: inout GatewayConfiguration) throws(ConfigurationError) {
        do {
            try self.apply(&configuration, value)
        } catch let error as ConfigurationError {
            throw ConfigurationError(key: self.key, reason: error.reason)
        } catch {
            throw ConfigurationError(key: self.key, reason: "\(error)")
        }
    }

    func value(fromString string: String) -> ConfigurationValue {
        let items = string.split(separator: ",").map { $0.trimmingWhitespace() }.filter { !$0.isEmpty }
        switch self.shape {
        case .scalar: return .scalar(string)
        case .list: return .list(items)
        case .map:
            var map: [String: String] = [:]
            for item in items {
                let parts = item.split(separator: "=", maxSplits: 1)
                map[parts[0].trimmingWhitespace()] = parts.count == 2 ? parts[1].trimmingWhitespace() : ""
            }
            return .map(map)
        }
    }
}

extension ConfigurationOption {
    static func scalar<T>(
        _ key: String,
        _ keyPath: any WritableKeyPath<GatewayConfiguration, T> & Sendable,
        default defaultText: String,
        _ summary: String,
        parse: @escaping @Sendable (String) throws -> T
    ) -> ConfigurationOption {
        ConfigurationOption(key: key, shape: .scalar, defaultText: defaultText, summary: summary) {
            configuration,
            value in
            guard case .scalar(let text) = value else { throw ConfigurationError(key: key, reason: "expected a single value") }
            configuration[keyPath: keyPath] = try parse(text)
        }
    }
}

/// Every key `switchboard serve` understands.
public enum ConfigurationSchema {
    public static let options: [ConfigurationOption] = [
        .scalar("host", \.host, default: "0.0.0.0", "Address to listen on.", parse: { $0 }),
        .scalar("port", \.port, default: "8080", "TCP port for WebSocket and HTTP.", parse: { try Parse.int($0, in: 0...65535) }),
        .scalar(
            "event_loops",
            \.eventLoops,
            default: "number of cores",
            "Threads serving connections.",
            parse: { try Parse.int($0, in: 1...256) }
        ),
        .scalar(
            "route_selection_expression",
            \.routeSelectionExpression,
            default: "$request.body.action",
            "Where a message names its route: $request.body.<dotted.path>.",
            parse: { try RouteSelectionExpression($0) }
        ),
        ConfigurationOption(
            key: "routes",
            shape: .map,
            defaultText: "the seed protocol",
            summary: "Route key to app; replaces the whole table. Apps: "
                + BuiltinApp.allCases.map(\.rawValue).joined(separator: ", ") + ".\n"
                + "  The seed protocol: ping=ping,joinRoom=joinRoom,leaveRoom=leaveRoom,\n"
                + "  sendMessage=sendMessage,$default=unknownAction. Echo server: $default=echo."
        ) { configuration, value in
            guard case .map(let map) = value else { throw ConfigurationError(key: "routes", reason: "expected a map of route key to app") }
            var routes: [String: RouteTarget] = [:]
            for (key, name) in map {
                guard let app = BuiltinApp(rawValue: name) else {
                    throw ConfigurationError(
                        key: "routes",
                        reason: "route '\(key)': unknown app '\(name)' (apps: \(BuiltinApp.allCases.map(\.rawValue).joined(separator: ", ")))"
                    )
                }
                routes[key] = .builtin(app)
            }
            configuration.routes = try RouteTable(routes)
        },
        .scalar(
            "welcome_frame",
            \.welcomeFrame,
            default: "false",
            #"Send {"action":"connected","connectionId",…} on connect, as seed 000 does."#,
            parse: { try Parse.bool($0) }
        ),
        .scalar(
            "binary_frames",
            \.binaryFrames,
            default: "route",
            "route: binary frames go to $default; reject: close with 1003.",
            parse: { try Parse.choice($0, of: GatewayConfiguration.BinaryFrames.self) }
        ),
        .scalar(
            "limits.max_message_bytes",
            \.maxMessageBytes,
            default: "1MiB",
            "Largest message (all its fragments); larger closes with 1009.",
            parse: { try Parse.bytes($0, in: 125...(1 << 30)) }
        ),
        .scalar(
            "limits.max_frame_bytes",
            \.maxFrameBytes,
            default: "1MiB",
            "Largest single frame, in and out; larger inbound closes with 1009, larger outbound is fragmented.",
            parse: { try Parse.bytes($0, in: 125...(1 << 30)) }
        ),
        .scalar(
            "limits.outbound_queue_bytes",
            \.outboundQueueBytes,
            default: "4MiB",
            "Bytes queued for a client that is not reading before it is closed as a slow consumer.",
            parse: { try Parse.bytes($0, in: 1024...(1 << 31)) }
        ),
        .scalar(
            "compression.enabled",
            \.compression.enabled,
            default: "true",
            "permessage-deflate for clients that offer it (every browser does), without context takeover.",
            parse: { try Parse.bool($0) }
        ),
        .scalar(
            "compression.threshold_bytes",
            \.compression.thresholdBytes,
            default: "256",
            "Messages smaller than this go out uncompressed.",
            parse: { try Parse.bytes($0, in: 0...(1 << 30)) }
        ),
        .scalar(
            "compression.level",
            \.compression.level,
            default: "6",
            "zlib level: 1 is fastest, 9 compresses most.",
            parse: { try Parse.int($0, in: 1...9) }
        ),
        .scalar(
            "limits.slow_consumer_close_code",
            \.slowConsumerCloseCode,
            default: "1008",
            "Close code for a slow consumer: 1008 or 1013.",
            parse: { UInt16(try Parse.int($0, in: 1008...1013)) }
        ),
        .scalar(
            "heartbeat.ping_interval",
            \.pingInterval,
            default: "25s",
            "Ping each connection this often.",
            parse: { try Parse.duration($0) }
        ),
        .scalar(
            "heartbeat.pong_timeout",
            \.pongTimeout,
            default: "60s",
            "Close a connection that sent nothing, not even a pong, for this long.",
            parse: { try Parse.duration($0) }
        ),
        .scalar(
            "heartbeat.idle_timeout",
            \.idleTimeout,
            default: "off",
            "Close (1001) a connection that sent no message for this long; off keeps it while it answers pings.",
            parse: { $0 == "off" ? nil : try Parse.duration($0) }
        ),
        .scalar(
            "rooms.presence",
            \.presence,
            default: "true",
            "Send userJoined/userLeft to a room's members. Off makes joins O(1) for any room size.",
            parse: { try Parse.bool($0) }
        ),
        .scalar(
            "rooms.max_members_listed",
            \.maxMembersListed,
            default: "100",
            "At most this many user ids in joinedRoom.members (memberCount has the total).",
            parse: { try Parse.int($0, in: 0...100_000) }
        ),
        .scalar(
            "rooms.history_messages",
            \.history.messages,
            default: "100",
            "Messages each room keeps for clients rejoining with lastOffset; 0 keeps none.",
            parse: { try Parse.int($0, in: 0...100_000) }
        ),
        .scalar(
            "rooms.history_age",
            \.history.age,
            default: "5m",
            "How long a room keeps a message for rejoining clients.",
            parse: { try Parse.duration($0) }
        ),
        .scalar(
            "rooms.history_bytes",
            \.history.totalBytes,
            default: "256MiB",
            "Message bytes all rooms of a node keep together (in memory, one node); past it the oldest go first.",
            parse: { try Parse.bytes($0, in: 0...(64 << 30)) }
        ),
        .scalar(
            "drain.delay",
            \.drainDelay,
            default: "0s",
            "After SIGTERM, answer 503 on /health this long before closing clients, so load balancers notice.",
            parse: { try Parse.duration($0) }
        ),
        .scalar(
            "drain.grace_period",
            \.drainGracePeriod,
            default: "25s",
            "After SIGTERM, wait at most this long for every $disconnect before exiting.",
            parse: { try Parse.duration($0) }
        ),
        .scalar(
            "management.port",
            \.managementPort,
            default: "0",
            "Port for the management API; 0 serves it on the gateway's port.",
            parse: { text -> Int? in
                let port = try Parse.int(text, in: 0...65535)
                return port == 0 ? nil : port
            }
        ),
        ConfigurationOption(
            key: "management.access_keys",
            shape: .map,
            defaultText: "none",
            summary: "AWS SigV4 credentials for the management API: ACCESS_KEY_ID=SECRET,..."
        ) { configuration, value in
            guard case .map(let keys) = value else { throw ConfigurationError(key: "management.access_keys", reason: "expected a map") }
            for (id, secret) in keys where id.isEmpty || secret.isEmpty {
                throw ConfigurationError(key: "management.access_keys", reason: "access key id and secret must not be empty")
            }
            configuration.managementAccessKeys = keys
        },
        .scalar(
            "management.bearer_token",
            \.managementBearerToken,
            default: "none",
            "A static token for the management API (Authorization: Bearer TOKEN), 16+ characters.",
            parse: { text in
                guard text.utf8.count >= 16 else { throw Parse.fail("must be at least 16 characters") }
                return text
            }
        ),
        .scalar(
            "management.max_clock_skew",
            \.managementMaxClockSkew,
            default: "5m",
            "How far a SigV4 request's X-Amz-Date may be from this server's clock.",
            parse: { try Parse.duration($0) }
        ),
        ConfigurationOption(
            key: "integrations",
            shape: .map,
            defaultText: "none",
            summary: "Route key to HTTP backend URL receiving API Gateway's Lambda-proxy events, e.g.\n"
                + "  $connect=http://127.0.0.1:9000/connect,$default=http://127.0.0.1:9000/message."
        ) { configuration, value in
            guard case .map(let map) = value else { throw ConfigurationError(key: "integrations", reason: "expected a map of route key to URL") }
            configuration.integrations = map
        },
        ConfigurationOption(
            key: "integration.route_responses",
            shape: .list,
            defaultText: "none",
            summary: "Routes whose integration reply body is sent back to the client (two-way routes)."
        ) { configuration, value in
            guard case .list(let keys) = value else { throw ConfigurationError(key: "integration.route_responses", reason: "expected a list") }
            configuration.integrationRouteResponses = Set(keys)
        },
        .scalar(
            "integration.timeout",
            \.integrationTimeout,
            default: "29s",
            "How long a backend may take to answer an event.",
            parse: { try Parse.duration($0) }
        ),
        .scalar(
            "integration.max_concurrency",
            \.integrationMaxConcurrency,
            default: "100",
            "Concurrent requests (pooled keep-alive connections) per backend host.",
            parse: { try Parse.int($0, in: 1...10_000) }
        ),
        ConfigurationOption(
            key: "integration.headers",
            shape: .map,
            defaultText: "none",
            summary: "Extra headers on every integration request: name=value,..."
        ) { configuration, value in
            guard case .map(let map) = value else { throw ConfigurationError(key: "integration.headers", reason: "expected a map") }
            configuration.integrationHeaders = map
        },
        .scalar(
            "integration.disconnect_retry_for",
            \.integrationDisconnectRetryFor,
            default: "60s",
            "Retry a failed $disconnect delivery, with backoff, for this long.",
            parse: { try Parse.duration($0) }
        ),
        .scalar(
            "api_id",
            \.apiId,
            default: "switchboard",
            "requestContext.apiId in integration events.",
            parse: { text in
                if let problem = Name.problem(with: text, field: "api_id") { throw Parse.fail(problem) }
                return text
            }
        ),
        .scalar(
            "redis.url",
            \.redisURL,
            default: "none (in-memory, one node)",
            "redis://[user:password@]host[:port][/db] or rediss:// (TLS): join the cluster sharing this Redis.",
            parse: { text -> String? in
                _ = try RedisConfiguration(url: text)
                return text
            }
        ),
        .scalar(
            "redis.password",
            \.redisPassword,
            default: "none",
            "Redis AUTH password (or ElastiCache auth token), overriding the URL's; keep it in a secret store.",
            parse: { $0 }
        ),
        .scalar(
            "metrics.emf_interval",
            \.emfInterval,
            default: "off",
            "Print ActiveConnections as a CloudWatch embedded-metric JSON line on stdout this often (e.g. 60s).",
            parse: { $0 == "off" ? nil : try Parse.duration($0) }
        ),
        .scalar("metrics.emf_service", \.emfService, default: "switchboard", "The ServiceName dimension of those lines.", parse: { $0 }),
        .scalar("redis.prefix", \.redisPrefix, default: "switchboard:", "Prefix of every Redis key and channel.", parse: { $0 }),
        .scalar(
            "redis.mode",
            \.redisMode,
            default: "standalone",
            "standalone: one Redis (or a primary with replicas); cluster: a Redis Cluster, the URL one seed node or\n"
                + "  ElastiCache's configuration endpoint (keys hash-tagged per room, sharded pub/sub); auto: ask at start.",
            parse: { try Parse.choice($0, of: GatewayConfiguration.RedisMode.self) }
        ),
        .scalar(
            "redis.ttl",
            \.redisTTL,
            default: "30s",
            "Registry entries of a node that stopped refreshing them are swept after this long.",
            parse: { try Parse.duration($0) }
        ),
        ConfigurationOption(
            key: "redis.ingress_broadcast",
            shape: .list,
            defaultText: "none",
            summary: "Redis channels whose messages go to every client (e.g. order:notifications)."
        ) { configuration, value in
            guard case .list(let channels) = value else { throw ConfigurationError(key: "redis.ingress_broadcast", reason: "expected a list") }
            configuration.redisIngressBroadcast = channels
        },
        .scalar(
            "redis.ingress_room_pattern",
            \.redisIngressRoomPattern,
            default: "none",
            "A channel pattern ending in * whose messages go to the room it names (chat:* sends chat:lobby to lobby).",
            parse: { text -> String? in
                guard text.hasSuffix("*"), text.dropLast().allSatisfy({ $0 != "*" }) else { throw Parse.fail("must end in a single *") }
                return text
            }
        ),
        .scalar(
            "redis.required_for_health",
            \.redisRequiredForHealth,
            default: "false",
            "Answer 503 on /health while Redis is unreachable.",
            parse: { try Parse.bool($0) }
        ),
        .scalar(
            "node_id",
            \.nodeId,
            default: "hostname-random",
            "This node's name in the cluster.",
            parse: { text in
                if let problem = Name.problem(with: text, field: "node_id") { throw Parse.fail(problem) }
                return text
            }
        ),
        .scalar(
            "auth.hmac_secret",
            \.auth.hmacSecret,
            default: "none",
            "Shared secret (32+ bytes) for HS256/384/512 tokens on $connect.",
            parse: { $0 }
        ),
        .scalar(
            "auth.hmac_algorithm",
            \.auth.hmacAlgorithm,
            default: "HS256",
            "HS256, HS384 or HS512.",
            parse: { text in
                guard ["HS256", "HS384", "HS512"].contains(text) else { throw Parse.fail("must be HS256, HS384 or HS512") }
                return text
            }
        ),
        .scalar(
            "auth.public_key_file",
            \.auth.publicKeyFile,
            default: "none",
            "PEM public key: RSA (RS256), P-256 (ES256) or Ed25519 (EdDSA).",
            parse: { $0 }
        ),
        .scalar(
            "auth.public_key_id",
            \.auth.publicKeyId,
            default: "none",
            "The kid of that key, when tokens name one.",
            parse: { $0 }
        ),
        .scalar(
            "auth.jwks",
            \.auth.jwks,
            default: "none",
            "JWKS file or https:// URL (cached; fetched again when a token names an unknown kid).",
            parse: { $0 }
        ),
        .scalar(
            "auth.issuer",
            \.auth.issuer,
            default: "none",
            "Required iss.",
            parse: { $0 }
        ),
        .scalar(
            "auth.audience",
            \.auth.audience,
            default: "none",
            "Required aud (one of the token's).",
            parse: { $0 }
        ),
        .scalar(
            "auth.leeway",
            \.auth.leeway,
            default: "30s",
            "Clock skew allowed on exp and nbf.",
            parse: { try Parse.duration($0) }
        ),
        .scalar(
            "auth.user_claim",
            \.auth.userClaim,
            default: "sub",
            "The claim that names the user.",
            parse: { $0 }
        ),
        .scalar(
            "auth.rooms_claim",
            \.auth.roomsClaim,
            default: "rooms",
            "The claim listing room globs the connection may join and publish to.",
            parse: { $0 }
        ),
        .scalar(
            "auth.require_expiry",
            \.auth.requireExpiry,
            default: "false",
            "Refuse tokens without exp.",
            parse: { try Parse.bool($0) }
        ),
        .scalar(
            "auth.expired_close_code",
            \.auth.expiredCloseCode,
            default: "4001",
            "Close code for a connection whose token expired unrefreshed.",
            parse: { UInt16(try Parse.int($0, in: 4000...4999)) }
        ),
        ConfigurationOption(
            key: "auth.route_claims",
            shape: .map,
            defaultText: "none",
            summary: "Routes that need a claim: route=claim or route=claim:value (e.g. moderate=role:admin)."
        ) { configuration, value in
            guard case .map(let map) = value else { throw ConfigurationError(key: "auth.route_claims", reason: "expected a map") }
            configuration.auth.routeClaims = map
        },
        .scalar(
            "socketio.enabled",
            \.socketIO.enabled,
            default: "true",
            "Serve Socket.IO clients (Engine.IO v4, Socket.IO v5) under socketio.path.",
            parse: { try Parse.bool($0) }
        ),
        .scalar(
            "socketio.path",
            \.socketIO.path,
            default: "/socket.io/",
            "Where Socket.IO requests go; starts and ends with /.",
            parse: { $0 }
        ),
        .scalar(
            "socketio.ping_interval",
            \.socketIO.pingInterval,
            default: "25s",
            "Engine.IO pings each session this often (pingInterval).",
            parse: { try Parse.positiveDuration($0, atMost: .seconds(3600)) }
        ),
        .scalar(
            "socketio.ping_timeout",
            \.socketIO.pingTimeout,
            default: "20s",
            "A session that does not answer a ping within this long is closed (pingTimeout).",
            parse: { try Parse.positiveDuration($0, atMost: .seconds(3600)) }
        ),
        .scalar(
            "socketio.max_payload",
            \.socketIO.maxPayload,
            default: "1000000",
            "The most bytes of one polling POST or WebSocket message (maxPayload); a message is also bounded by limits.max_message_bytes.",
            parse: { try Parse.bytes($0, in: 1024...(1 << 30)) }
        ),
        ConfigurationOption(
            key: "socketio.namespaces",
            shape: .list,
            defaultText: "/",
            summary: "Namespaces clients may join (e.g. /,/chat); others get CONNECT_ERROR Invalid namespace."
        ) { configuration, value in
            guard case .list(let namespaces) = value, !namespaces.isEmpty else {
                throw ConfigurationError(key: "socketio.namespaces", reason: "expected a non-empty list")
            }
            configuration.socketIO.namespaces = namespaces
        },
        .scalar(
            "socketio.connect_timeout",
            \.socketIO.connectTimeout,
            default: "45s",
            "A session that joins no namespace within this long is closed.",
            parse: { try Parse.positiveDuration($0, atMost: .seconds(3600)) }
        ),
        .scalar(
            "socketio.push_event",
            \.socketIO.pushEvent,
            default: "message",
            "The event name of a pushed frame without an action field (management-API posts of other JSON, text, binary).",
            parse: { text in
                guard !text.isEmpty, text.utf8.count <= 128 else { throw Parse.fail("must be 1 to 128 bytes") }
                return text
            }
        ),
        .scalar(
            "socketio.heartbeat_event_interval",
            \.socketIO.heartbeatEventInterval,
            default: "0 (off)",
            "Every this often, each socket gets the event heartbeat {timestamp} (seed 004); 0 is off.",
            parse: { try Parse.durationOrOff($0, atMost: .seconds(86_400)) }
        ),
        .scalar(
            "socketio.recovery_window",
            \.socketIO.recoveryWindow,
            default: "0 (off)",
            "Connection state recovery: a socket that drops and reconnects within this long keeps its id and gets what its rooms missed; 0 is off.",
            parse: { try Parse.durationOrOff($0, atMost: .seconds(86_400)) }
        ),
        ConfigurationOption(
            key: "origins.allowed",
            shape: .list,
            defaultText: "any",
            summary: "Origins allowed to open WebSockets (exact, or https://*.example.com); others get 403."
        ) { configuration, value in
            guard case .list(let origins) = value else { throw ConfigurationError(key: "origins.allowed", reason: "expected a list") }
            configuration.allowedOrigins = origins
        },
        .scalar(
            "throttle.connect_rate",
            \.throttling.connectRate,
            default: "0 (off)",
            "New connections per second on this node (token bucket); over it: 429.",
            parse: { text in
                guard let value = Double(text), value >= 0, value <= 1e9 else { throw Parse.fail("'\(text)' is not a rate (0...1e9)") }
                return value
            }
        ),
        .scalar(
            "throttle.message_rate",
            \.throttling.messageRate,
            default: "0 (off)",
            "Messages per second on this node; over it: a Too Many Requests error frame.",
            parse: { text in
                guard let value = Double(text), value >= 0, value <= 1e9 else { throw Parse.fail("'\(text)' is not a rate (0...1e9)") }
                return value
            }
        ),
        .scalar(
            "throttle.per_connection_rate",
            \.throttling.perConnectionRate,
            default: "0 (off)",
            "Messages per second per connection; over it: error frames, then 1008.",
            parse: { text in
                guard let value = Double(text), value >= 0, value <= 1e9 else { throw Parse.fail("'\(text)' is not a rate (0...1e9)") }
                return value
            }
        ),
        .scalar(
            "throttle.connect_burst",
            \.throttling.connectBurst,
            default: "rate",
            "Burst of that bucket.",
            parse: { try Parse.int($0, in: 0...1_000_000) }
        ),
        .scalar(
            "throttle.message_burst",
            \.throttling.messageBurst,
            default: "rate",
            "Burst of that bucket.",
            parse: { try Parse.int($0, in: 0...1_000_000) }
        ),
        .scalar(
            "throttle.per_connection_burst",
            \.throttling.perConnectionBurst,
            default: "rate",
            "Burst of that bucket.",
            parse: { try Parse.int($0, in: 0...1_000_000) }
        ),
        .scalar(
            "throttle.abuse_close_after",
            \.throttling.abuseCloseAfter,
            default: "50",
            "Throttled messages in a row before a connection is closed with 1008.",
            parse: { try Parse.int($0, in: 0...1_000_000) }
        ),
        .scalar(
            "limits.max_connections",
            \.maxConnections,
            default: "none",
            "Connections this node accepts; over it: 429.",
            parse: { $0 == "none" ? nil : try Parse.int($0, in: 1...10_000_000) }
        ),
        .scalar(
            "limits.max_connections_per_user",
            \.maxConnectionsPerUser,
            default: "none",
            "Connections per user id on this node; over it: 429.",
            parse: { $0 == "none" ? nil : try Parse.int($0, in: 1...1_000_000) }
        ),
        .scalar(
            "limits.max_rooms_per_connection",
            \.maxRoomsPerConnection,
            default: "100",
            "Rooms one connection may be in.",
            parse: { try Parse.int($0, in: 1...100_000) }
        ),
        .scalar(
            "limits.handshake_timeout",
            \.handshakeTimeout,
            default: "10s",
            "Time a new connection has to complete its HTTP request or upgrade.",
            parse: { try Parse.duration($0) }
        ),
        .scalar(
            "tls.cert_file",
            \.tlsCertificateFile,
            default: "none (plain ws://)",
            "PEM certificate chain: serve wss:// directly (TLS 1.2+; SIGHUP reloads).",
            parse: { $0 }
        ),
        .scalar(
            "tls.key_file",
            \.tlsKeyFile,
            default: "none",
            "PEM private key of that certificate.",
            parse: { $0 }
        ),
        .scalar(
            "log.level",
            \.logLevel,
            default: "info",
            "trace, debug, info, notice, warning, error or critical.",
            parse: { try Parse.choice($0, of: Logger.Level.self) }
        ),
        ConfigurationOption(
            key: "log.levels",
            shape: .map,
            defaultText: "none",
            summary: "Levels per subsystem: connections, management, integrations (e.g. integrations=debug)."
        ) { configuration, value in
            guard case .map(let map) = value else { throw ConfigurationError(key: "log.levels", reason: "expected a map") }
            var levels: [String: Logger.Level] = [:]
            for (subsystem, level) in map {
                guard ["connections", "management", "integrations"].contains(subsystem) else {
                    throw ConfigurationError(key: "log.levels", reason: "unknown subsystem '\(subsystem)' (connections, management, integrations)")
                }
                levels[subsystem] = try Parse.choice(level, of: Logger.Level.self)
            }
            configuration.logLevels = levels
        },
        .scalar(
            "log.format",
            \.logFormat,
            default: "json",
            "json: one JSON object per line; text: for people.",
            parse: { try Parse.choice($0, of: GatewayConfiguration.LogFormat.self) }
        ),
    ]

    /// The `--help` text for all keys, in lines short enough not to be re-wrapped.
    public static var helpText: String {
        var lines = [
            "CONFIGURATION",
            "A YAML file (--config, keys nested at the dots), then SWITCHBOARD_*",
            "variables, then flags; the later source wins. In variables and flags, lists",
            "are a,b and maps k=v,k2=v2. Durations: 500ms, 25s, 5m. Sizes: 64KiB, 1MiB.",
            "",
        ]
        for option in Self.options {
            lines.append("\(option.key) = \(option.defaultText)")
            lines.append("  \(option.flag), \(option.environmentVariable)")
            lines.append("  \(option.summary)")
        }
        return lines.joined(separator: "\n")
    }
}

extension String {
    fileprivate func replacingAll(of characters: Set<Character>, with replacement: Character) -> String {
        String(self.map { characters.contains($0) ? replacement : $0 })
    }
}
