import Foundation
import Logging
import NIOCore
import SwitchboardCore
import SwitchboardRedis

/// Everything an operator can set. Defaults are a single node on port 8080 serving the seed protocol; each
/// property's key, flag and environment variable are listed by ``ConfigurationSchema`` and `switchboard --help`.
public struct GatewayConfiguration: Sendable {
    /// What happens to binary frames.
    public enum BinaryFrames: String, Sendable, CaseIterable {
        /// Routed like text: to `$default` (text routes need JSON, so a binary frame never selects one).
        case route
        /// Closed with 1003 (unsupported data).
        case reject
    }

    public var host = "0.0.0.0"
    public var port = 8080
    /// Threads serving connections; each owns its connections outright.
    public var eventLoops = System.coreCount
    public var routeSelectionExpression = RouteSelectionExpression.default
    public var routes = RouteTable.seedProtocol
    public var welcomeFrame = false
    public var binaryFrames = BinaryFrames.route
    public var maxMessageBytes = 1 << 20
    public var maxFrameBytes = 1 << 20
    public var outboundQueueBytes = 4 << 20
    public var slowConsumerCloseCode: UInt16 = CloseCode.policyViolation
    /// permessage-deflate (RFC 7692) for clients that offer it.
    public var compression = Compression()
    public var pingInterval = Duration.seconds(25)
    public var pongTimeout = Duration.seconds(60)
    /// Closes a connection that sent no message for this long (1001); `nil` keeps it while pings succeed.
    public var idleTimeout: Duration?
    public var presence = true
    public var maxMembersListed = 100
    /// Messages each room keeps for clients that rejoin with their last offset.
    public var history = HistoryLimits()
    public var drainDelay = Duration.zero
    public var drainGracePeriod = Duration.seconds(25)
    /// How long a close handshake the gateway started may take before the TCP connection is dropped.
    public var closeTimeout = Duration.seconds(5)
    public var logLevel = Logger.Level.info
    /// Levels for subsystems (`connections`, `management`, `integrations`) that differ from `logLevel`.
    public var logLevels: [String: Logger.Level] = [:]
    /// `json` lines (the default, for log shippers) or `text` for people.
    public var logFormat = LogFormat.json

    public enum LogFormat: String, Sendable, CaseIterable {
        case json
        case text
    }
    /// A separate port for the management API (`nil`: the gateway's own port serves it).
    public var managementPort: Int?
    /// AWS Signature V4 secret keys by access key id, for SDK clients of the management API.
    public var managementAccessKeys: [String: String] = [:]
    /// A static bearer token accepted by the management API.
    public var managementBearerToken: String?
    public var managementMaxClockSkew = Duration.seconds(300)
    /// Route keys served by HTTP integrations, with their URLs; merged into `routes` when the configuration is loaded.
    public var integrations: [String: String] = [:]
    /// Routes whose integration reply `body` is sent back to the client (API Gateway's two-way routes).
    public var integrationRouteResponses: Set<String> = []
    public var integrationTimeout = Duration.seconds(29)
    public var integrationMaxConcurrency = 100
    public var integrationHeaders: [String: String] = [:]
    /// How long a failed `$disconnect` delivery is retried, with backoff, before it is given up (and logged).
    public var integrationDisconnectRetryFor = Duration.seconds(60)
    /// `requestContext.apiId` in events.
    public var apiId = "switchboard"
    /// A Redis URL makes this node part of a cluster; `nil` keeps everything in memory.
    public var redisURL: String?
    /// Overrides the URL's password, so the URL can sit in plain configuration and the password in a secret store.
    public var redisPassword: String?
    public var redisPrefix = "switchboard:"
    /// One Redis, a Redis Cluster (ElastiCache cluster mode, ElastiCache Serverless, Valkey), or `auto`: asked at start.
    public var redisMode = RedisMode.standalone

    public enum RedisMode: String, Sendable, CaseIterable {
        case standalone
        case cluster
        /// `INFO cluster` at start says which; the node refuses to start if Redis cannot be asked.
        case auto
    }
    /// How long a dead node's entries live before survivors sweep them.
    public var redisTTL = Duration.seconds(30)
    public var redisIngressBroadcast: [String] = []
    public var redisIngressRoomPattern: String?
    /// Answer 503 on `/health` while Redis is unreachable (by default local delivery goes on and `/health` stays 200).
    public var redisRequiredForHealth = false
    /// How often to print this node's `ActiveConnections` as a CloudWatch embedded-metric log line (`nil`: never),
    /// for autoscaling on connections per task.
    public var emfInterval: Duration?
    /// The `ServiceName` dimension of those lines.
    public var emfService = "switchboard"
    /// JWT on `$connect` (off until a key is configured).
    public struct Authentication: Sendable {
        public var hmacSecret: String?
        public var hmacAlgorithm = "HS256"
        public var publicKeyFile: String?
        public var publicKeyId: String?
        /// A JWKS file or `https://` URL.
        public var jwks: String?
        public var issuer: String?
        public var audience: String?
        public var leeway = Duration.seconds(30)
        public var userClaim = "sub"
        /// The claim listing (as globs) the rooms a connection may join and publish to; absent in a token: any room.
        public var roomsClaim = "rooms"
        public var requireExpiry = false
        public var expiredCloseCode: UInt16 = 4001
        /// Routes that need a claim: route key → `claim` or `claim=value`.
        public var routeClaims: [String: String] = [:]

        public var enabled: Bool { self.hmacSecret != nil || self.publicKeyFile != nil || self.jwks != nil }

        public init() {}
    }

    /// Stage-wide and per-connection limits, as API Gateway throttles (0 turns a bucket off).
    /// permessage-deflate, always without context takeover (so a fan-out compresses once, and idle connections hold
    /// no zlib memory: ``PerMessageDeflate``).
    public struct Compression: Sendable {
        public var enabled = true
        /// Messages smaller than this go out uncompressed: deflate saves little on them and costs the same work.
        public var thresholdBytes = 256
        /// zlib's level, 1 (fastest) to 9 (smallest).
        public var level = 6
    }

    public struct Throttling: Sendable {
        public var connectRate = 0.0
        public var connectBurst = 0
        public var messageRate = 0.0
        public var messageBurst = 0
        public var perConnectionRate = 0.0
        public var perConnectionBurst = 0
        /// Throttled messages in a row after which the connection is closed with 1008.
        public var abuseCloseAfter = 50

        public init() {}
    }

    /// Socket.IO (Engine.IO v4, Socket.IO v5) clients on the same port (`docs/socketio.md`).
    public struct SocketIO: Sendable {
        public var enabled = true
        /// Where Engine.IO requests go; starts and ends with `/`.
        public var path = "/socket.io/"
        public var pingInterval = Duration.seconds(25)
        public var pingTimeout = Duration.seconds(20)
        /// The most bytes of one POST body or WebSocket message (announced as `maxPayload`).
        public var maxPayload = 1_000_000
        /// The namespaces a client may join; each starts with `/`.
        public var namespaces = ["/"]
        /// How long a client may take to join its first namespace.
        public var connectTimeout = Duration.seconds(45)
        /// The event name of a pushed frame without an `action` (a management-API post of any JSON, text, binary).
        public var pushEvent = "message"
        /// Every this often, each socket gets `heartbeat` `{"timestamp":…}` (seed 004); `nil` is off.
        public var heartbeatEventInterval: Duration?
        /// Connection state recovery (Socket.IO 4.6+): how long a dropped socket's id and rooms are kept for a
        /// reconnect naming its `pid`, which then gets what its rooms missed; `nil` is off, as in Socket.IO.
        public var recoveryWindow: Duration?

        public init() {}
    }

    public var socketIO = SocketIO()
    public var auth = Authentication()
    /// Origins allowed to connect (`https://app.example.com`, `https://*.example.com`); empty allows any.
    public var allowedOrigins: [String] = []
    public var throttling = Throttling()
    public var maxConnections: Int?
    public var maxConnectionsPerUser: Int?
    public var maxRoomsPerConnection = 100
    /// How long a new TCP connection may take to send its handshake (slowloris guard).
    public var handshakeTimeout = Duration.seconds(10)
    public var tlsCertificateFile: String?
    public var tlsKeyFile: String?

    /// This node's name in the cluster; unique per process.
    public var nodeId = GatewayConfiguration.defaultNodeId()

    static func defaultNodeId() -> String {
        let host = String(ProcessInfo.processInfo.hostName.utf8.filter(Name.isAllowedByte).prefix(40).map { Character(UnicodeScalar($0)) })
        return (host.isEmpty ? "node" : host) + "-" + String(ConnectionID.random().rawValue.prefix(6)).replacingOccurrences(of: "=", with: "0")
    }

    /// Without credentials the management API answers loopback clients only.
    public var managementIsOpen: Bool { self.managementAccessKeys.isEmpty && self.managementBearerToken == nil }

    public init() {}

    /// Puts the configured integrations into the route table (an integration replaces an app on the same key).
    public mutating func resolveIntegrations() throws(ConfigurationError) {
        var overrides: [String: RouteTarget] = [:]
        for (key, url) in self.integrations {
            guard url.hasPrefix("http://") || url.hasPrefix("https://") else {
                throw ConfigurationError(key: "integrations", reason: "route '\(key)': '\(url)' is not an http:// or https:// URL")
            }
            overrides[key] = .integration(url: url, routeResponse: self.integrationRouteResponses.contains(key))
        }
        for key in self.integrationRouteResponses where self.integrations[key] == nil {
            throw ConfigurationError(key: "integration.route_responses", reason: "route '\(key)' has no integration")
        }
        self.routes = try self.routes.merging(overrides)
    }

    /// Checks that hold between keys; single values are checked as they are read.
    public func validate() throws(ConfigurationError) {
        if self.outboundQueueBytes < self.maxMessageBytes {
            throw ConfigurationError(
                key: "limits.outbound_queue_bytes",
                reason:
                    "\(self.outboundQueueBytes) is below limits.max_message_bytes (\(self.maxMessageBytes)): one message would close its recipient"
            )
        }
        if self.redisMode != .standalone, let url = self.redisURL, let redis = try? RedisConfiguration(url: url), redis.database != 0 {
            throw ConfigurationError(key: "redis.url", reason: "a Redis Cluster has only database 0 (the URL names \(redis.database))")
        }
        if (self.tlsCertificateFile == nil) != (self.tlsKeyFile == nil) {
            throw ConfigurationError(key: "tls.cert_file", reason: "tls.cert_file and tls.key_file go together")
        }
        if let secret = self.auth.hmacSecret, secret.utf8.count < 32 {
            throw ConfigurationError(key: "auth.hmac_secret", reason: "must be at least 32 bytes (jwt-kit refuses shorter HMAC keys)")
        }
        if !self.auth.enabled, !self.auth.routeClaims.isEmpty {
            throw ConfigurationError(key: "auth.route_claims", reason: "needs a key: auth.hmac_secret, auth.public_key_file or auth.jwks")
        }
        if !self.socketIO.path.hasPrefix("/") || !self.socketIO.path.hasSuffix("/") || self.socketIO.path.count < 2 {
            throw ConfigurationError(key: "socketio.path", reason: "'\(self.socketIO.path)' must start and end with / (e.g. /socket.io/)")
        }
        if let bad = self.socketIO.namespaces.first(where: { !$0.hasPrefix("/") || $0.contains(",") }) {
            throw ConfigurationError(key: "socketio.namespaces", reason: "'\(bad)' must start with / and contain no comma")
        }
        if self.pongTimeout <= self.pingInterval {
            throw ConfigurationError(
                key: "heartbeat.pong_timeout",
                reason: "must be longer than heartbeat.ping_interval, or connections close before their first ping"
            )
        }
    }
}
