import Foundation
import Logging
import NIOCore
import SwitchboardConfiguration
import SwitchboardCore
import SwitchboardSocketIO
import SwitchboardWebSocket
import Synchronization

/// What all connections of a node share: configuration, broker, the local hub, clocks and counters.
final class GatewayContext: Sendable {
    let configuration: GatewayConfiguration
    let broker: any Broker
    let hub: LocalHub
    /// The seed JSON protocol's encoding, shared by every WebSocket connection so a fan-out encodes once.
    let webSocketEncoding: WebSocketEncoding
    /// The same with permessage-deflate, by the window the client allowed (9–15): connections that agreed to the same
    /// window share the compressed bytes of a fan-out. A window of 8 gets ``webSocketEncoding`` (see
    /// ``encoding(for:)``).
    let deflateEncodings: [Int: DeflateEncoding]
    /// What every connection's state machine reads of the configuration, shared.
    let connectionRules: ConnectionStateMachine.Rules
    let livenessTiming: Liveness.Timing
    /// Socket.IO: the node's Engine.IO sessions, the encodings by namespace and transport, and the liveness of a
    /// namespace connection (only the idle timeout: Engine.IO's heartbeat watches the session).
    let engines: EngineSessions
    let socketIOEncodings: [String: [EngineSession.Transport: SocketIOEncoding]]
    let socketIOLiveness: Liveness.Timing
    /// Polling requests for sessions of other nodes, relayed to them (no sticky sessions needed).
    let socketIORelay: SocketIORelay
    let logger: Logger
    /// Milliseconds since 1970 for `timestamp` fields and `connectedAt`; injected so tests can fix it.
    let wallClock: @Sendable () -> Int64
    let startedAt: Int64
    /// Set by SIGTERM: new connections are refused with 503 and health reports draining.
    let draining = Atomic<Bool>(false)
    /// Registered connections whose `$disconnect` has not finished yet. This count, ``slots`` and
    /// ``connectionsPerUser`` change only in ``ConnectionLease``.
    let activeConnections = Atomic<Int>(0)
    /// Connections holding a slot under `limits.max_connections`: the registered ones plus handshakes in flight. A
    /// slot is taken before the handshake's asynchronous checks, so concurrent handshakes cannot overshoot the limit.
    let slots = Atomic<Int>(0)
    let acceptedConnections = Atomic<Int>(0)
    /// HTTP backends, when any route has one.
    let integrations: IntegrationClient?
    let metrics: GatewayMetrics
    /// The files served over HTTP (OpenAPI document, dashboard, browser client, demo), read when the node started.
    let resources: GatewayResources
    /// JWT verification, when a key is configured.
    let authenticator: Authenticator?
    /// Stage-wide token buckets (API Gateway's account-level throttling), when configured.
    let connectThrottle: Throttle?
    let messageThrottle: Throttle?
    /// The last sum of queued outbound bytes and when it was taken: summing visits every connection, so scrapes
    /// reuse it for a few seconds (``GatewayContext/sampledQueuedBytes()``).
    let queuedBytesSample = Mutex<(bytes: Int, at: ContinuousClock.Instant?)>((0, nil))
    /// Open connections per user id on this node, for `limits.max_connections_per_user`.
    let connectionsPerUser = Mutex<[String: Int]>([:])
    /// Subsystem loggers (`subsystem` metadata), each with its own level from `log.levels`.
    let managementLogger: Logger
    let integrationLogger: Logger

    init(
        configuration: GatewayConfiguration,
        broker: any Broker,
        hub: LocalHub,
        logger: Logger,
        wallClock: @escaping @Sendable () -> Int64,
        integrations: IntegrationClient?,
        metrics: GatewayMetrics,
        resources: GatewayResources
    ) {
        func subsystem(_ name: String) -> Logger {
            var derived = logger
            derived[metadataKey: "subsystem"] = "\(name)"
            derived.logLevel = configuration.logLevels[name] ?? configuration.logLevel
            return derived
        }
        self.configuration = configuration
        self.broker = broker
        self.hub = hub
        self.webSocketEncoding = WebSocketEncoding(maxFrameBytes: configuration.maxFrameBytes)
        let compression = configuration.compression
        self.deflateEncodings = Dictionary(
            uniqueKeysWithValues: (9...15).map { bits in
                let deflater = MessageDeflater(windowBits: bits, level: compression.level)
                return (
                    bits, DeflateEncoding(maxFrameBytes: configuration.maxFrameBytes, thresholdBytes: compression.thresholdBytes, deflater: deflater)
                )
            }
        )
        self.connectionRules = ConnectionStateMachine.Rules(configuration)
        self.livenessTiming = Liveness.Timing(
            pingInterval: TimeAmount(configuration.pingInterval),
            pongTimeout: TimeAmount(configuration.pongTimeout),
            idleTimeout: configuration.idleTimeout.map(TimeAmount.init)
        )
        self.engines = EngineSessions(group: hub.group, maximum: configuration.maxConnections ?? EngineSessions.defaultMaximum)
        let socketIO = configuration.socketIO
        self.socketIORelay = SocketIORelay(
            node: configuration.nodeId,
            broker: broker,
            metrics: metrics,
            maximum: self.engines.maximum,
            pingInterval: TimeAmount(socketIO.pingInterval),
            pingTimeout: TimeAmount(socketIO.pingTimeout)
        )
        self.socketIOEncodings = Dictionary(
            uniqueKeysWithValues: socketIO.namespaces.map { namespace in
                let encodings = [EngineSession.Transport.polling, .webSocket].map {
                    (
                        $0,
                        SocketIOEncoding(
                            namespace: namespace,
                            transport: $0,
                            pushEvent: socketIO.pushEvent,
                            maxFrameBytes: configuration.maxFrameBytes,
                            offsets: socketIO.recoveryWindow != nil
                        )
                    )
                }
                return (namespace, Dictionary(uniqueKeysWithValues: encodings))
            }
        )
        let never = TimeAmount.hours(24 * 365 * 100)
        self.socketIOLiveness = Liveness.Timing(pingInterval: never, pongTimeout: never, idleTimeout: configuration.idleTimeout.map(TimeAmount.init))
        self.logger = subsystem("connections")
        self.managementLogger = subsystem("management")
        self.integrationLogger = subsystem("integrations")
        self.wallClock = wallClock
        self.startedAt = wallClock()
        self.integrations = integrations
        self.metrics = metrics
        self.resources = resources
        self.authenticator = configuration.auth.enabled ? Authenticator(configuration.auth, group: hub.group, logger: logger) : nil
        let throttling = configuration.throttling
        self.connectThrottle = Throttle(rate: throttling.connectRate, burst: throttling.connectBurst)
        self.messageThrottle = Throttle(rate: throttling.messageRate, burst: throttling.messageBurst)
    }

    /// Posts an event to a backend, recording its latency and any failure for `route`.
    func invoke(_ url: String, event: JSONValue, route: String, requestId: String) async throws(IntegrationError) -> IntegrationReply {
        let started = ContinuousClock.now
        do {
            let reply = try await self.integrations!.invoke(url, event: event)
            self.metrics.integration(route: route, latency: ContinuousClock.now - started, failed: false)
            return reply
        } catch {
            self.metrics.integration(route: route, latency: ContinuousClock.now - started, failed: true)
            self.integrationLogger.warning(
                "integration failed",
                metadata: ["route": "\(route)", "requestId": "\(requestId)", "url": "\(url)", "error": "\(error)"]
            )
            throw error
        }
    }

    static let systemWallClock: @Sendable () -> Int64 = { Int64((Date().timeIntervalSince1970 * 1000).rounded()) }
}

/// A token bucket shared by every connection of a node (stage-wide throttling), or held by one connection.
final class Throttle: Sendable {
    private let bucket: Mutex<TokenBucket>

    /// `nil` when `rate` is 0 (off).
    init?(rate: Double, burst: Int) {
        guard rate > 0 else { return nil }
        self.bucket = Mutex(TokenBucket(rate: rate, burst: burst, now: Self.now()))
    }

    func admit() -> Bool {
        let now = Self.now()
        return self.bucket.withLock { $0.take(now: now) }
    }

    static func now() -> Double { Double(NIODeadline.now().uptimeNanoseconds) / 1e9 }
}

extension GatewayContext {
    /// The shared encoding of a configured namespace on a transport.
    func socketIOEncoding(_ namespace: String, _ transport: EngineSession.Transport) -> SocketIOEncoding {
        self.socketIOEncodings[namespace]![transport]!
    }

    /// How a WebSocket connection with this agreement (`nil`: none) encodes frames. zlib cannot write raw deflate with
    /// a 256-byte window, so a client that allows only that gets every message uncompressed, which RFC 7692 permits.
    func encoding(for agreement: PerMessageDeflate.Agreement?) -> any FrameEncoding {
        guard let agreement, let encoding = self.deflateEncodings[agreement.serverMaxWindowBits] else { return self.webSocketEncoding }
        return encoding
    }
}
