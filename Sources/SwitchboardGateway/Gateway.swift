import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import Prometheus
import ServiceLifecycle
import SwitchboardConfiguration
import SwitchboardCore
import SwitchboardRedis
import SwitchboardWebSocket
import Synchronization
import UnixSignals

/// A Switchboard node: WebSocket and HTTP on one port, run as a `Service` so a `ServiceGroup` drains it on SIGTERM.
///
/// Each connection lives on one event loop for its whole life (its state, its heartbeat, its shard of the hub),
/// which is what keeps a connection to a few kilobytes and a message free of locks and task hops.
public final class Gateway: Service {
    private let gateway: GatewayContext
    private let group: MultiThreadedEventLoopGroup
    private let boundAddress = Mutex<SocketAddress?>(nil)
    /// The TLS context new connections get; replaced on SIGHUP so renewed certificates apply without a restart.
    private let tls = Mutex<NIOSSLContext?>(nil)

    /// - Parameters:
    ///   - configuration: the validated configuration.
    ///   - logger: where connection events and errors go.
    ///   - wallClock: milliseconds since 1970 for frame timestamps; tests may fix it.
    ///   - metrics: the registry `/metrics` exposes (pass the one bootstrapped into swift-metrics to export both).
    ///   - makeBroker: builds the broker given this node's local delivery (in-memory unless a cluster is set up).
    /// - Throws: when the resource files it serves (OpenAPI document, dashboard, browser client) are missing.
    public init(
        configuration: GatewayConfiguration,
        logger: Logger,
        wallClock: (@Sendable () -> Int64)? = nil,
        metrics registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry(),
        makeBroker: ((any LocalDelivery) -> any Broker)? = nil
    ) throws {
        let resources = try GatewayResources.load()
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: configuration.eventLoops)
        let metrics = GatewayMetrics(registry: registry, routes: configuration.routes)
        let hub = LocalHub(group: self.group, metrics: metrics)
        let hasIntegrations = configuration.routes.routes.values.contains { if case .integration = $0 { true } else { false } }
        let broker = makeBroker?(hub) ?? Self.defaultBroker(configuration, group: self.group, hub: hub, logger: logger)
        self.gateway = GatewayContext(
            configuration: configuration,
            broker: broker,
            hub: hub,
            logger: logger,
            wallClock: wallClock ?? GatewayContext.systemWallClock,
            integrations: hasIntegrations ? IntegrationClient(group: self.group, configuration: configuration) : nil,
            metrics: metrics,
            resources: resources
        )
        if let redis = broker as? RedisBroker {
            let gateway = self.gateway
            // A dead node's connections: their rooms hear `userLeft` and their `$disconnect` runs, once, here.
            redis.whenSwept { info, rooms in
                gateway.metrics.disconnected(code: CloseCode.abnormal)
                // A Socket.IO socket of the dead node is left for its reconnect, as if its node had dropped it.
                await SocketIORecovery.leave(info, rooms: rooms, heardAt: info.connectedAt, gateway: gateway)
                await gateway.announceDeparture(info, rooms: rooms, status: .init(code: CloseCode.abnormal, reason: "node lost"))
            }
            // Engine.IO requests relayed between nodes (sessions without sticky load balancing), and their answers.
            redis.whenRelayed { node, payload in gateway.socketIORelay.received(from: node, payload, gateway: gateway) }
        }
    }

    /// In memory for one node; over Redis when `redis.url` is set.
    private static func defaultBroker(_ configuration: GatewayConfiguration, group: any EventLoopGroup, hub: LocalHub, logger: Logger) -> any Broker {
        guard let url = configuration.redisURL, var redis = try? RedisConfiguration(url: url) else {
            return InMemoryBroker(delivering: hub, history: configuration.history)
        }
        if let password = configuration.redisPassword { redis.password = password }
        // A room message travels whole in one reply (pub/sub, a history page): the bound must fit the largest.
        redis.maximumReplyBytes = max(redis.maximumReplyBytes, 2 * configuration.maxMessageBytes + (1 << 20))
        var options = RedisBroker.Options()
        options.prefix = configuration.redisPrefix
        options.ttl = configuration.redisTTL
        options.ingressBroadcast = configuration.redisIngressBroadcast
        options.ingressRoomPattern = configuration.redisIngressRoomPattern
        options.history = configuration.history
        options.layout = configuration.redisMode == .cluster ? .cluster : .standalone
        var brokerLogger = logger
        brokerLogger[metadataKey: "subsystem"] = "cluster"
        return RedisBroker(configuration: redis, node: configuration.nodeId, options: options, group: group, local: hub, logger: brokerLogger)
    }

    /// `redis.mode: auto` made definite by asking Redis (`INFO cluster`), before a node is built on it: its key layout
    /// depends on the answer, so a Redis that cannot be asked stops the start with a message saying so.
    public static func resolveRedisMode(_ configuration: inout GatewayConfiguration) async throws {
        guard configuration.redisMode == .auto, let url = configuration.redisURL else { return }
        do {
            var redis = try RedisConfiguration(url: url)
            if let password = configuration.redisPassword { redis.password = password }
            let group = MultiThreadedEventLoopGroup.singleton
            configuration.redisMode = try await RedisClusterClient.isCluster(redis, group: group) ? .cluster : .standalone
        } catch {
            throw ConfigurationError(
                key: "redis.mode",
                reason: "auto: cannot ask \(url) whether it is a cluster (\(error)); set standalone or cluster"
            )
        }
    }

    /// The address the server listens on, once `run()` has bound it.
    public var localAddress: SocketAddress? { self.boundAddress.withLock { $0 } }

    public func run() async throws {
        try self.loadTLS()
        do {
            try await self.serveWithBackgroundWork()
        } catch {
            // A node that could not start (a port taken) lets its event loops go too.
            try? await self.group.shutdownGracefully()
            throw error
        }
        try await self.group.shutdownGracefully()
        self.gateway.logger.info("stopped")
    }

    private func serveWithBackgroundWork() async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await self.gateway.broker.run() }
            if self.gateway.configuration.tlsCertificateFile != nil {
                group.addTask {
                    for await _ in await UnixSignalsSequence(trapping: .sighup) {
                        do {
                            try self.loadTLS()
                            self.gateway.logger.info("TLS certificate reloaded")
                        } catch {
                            self.gateway.logger.error("TLS reload failed; keeping the previous certificate", metadata: ["error": "\(error)"])
                        }
                    }
                }
            }
            try await self.serve()
            group.cancelAll()
        }
    }

    private func serve() async throws {
        let configuration = self.gateway.configuration
        try await self.gateway.authenticator?.prepare()
        let management = ManagementAPI(gateway: self.gateway)
        let listeners = try await self.listen(management: configuration.managementPort == nil ? management : nil)
        let server = listeners[0]
        self.boundAddress.withLock { $0 = server.localAddress }
        self.gateway.logger.info(
            "listening",
            metadata: [
                "address": "\(server.localAddress.map { "\($0)" } ?? "?")",
                "cluster": "\(configuration.redisURL == nil ? "none (in-memory)" : configuration.nodeId)",
            ]
        )
        var servers = listeners
        if let port = configuration.managementPort {
            let separate: any Channel
            do {
                separate = try await self.bootstrap(self.group, management: management, webSocket: false).bind(host: configuration.host, port: port)
                    .get()
            } catch {
                for listener in listeners { try? await listener.close() }
                throw error
            }
            self.gateway.logger.info("management API listening", metadata: ["address": "\(separate.localAddress.map { "\($0)" } ?? "?")"])
            servers.append(separate)
        }
        if configuration.managementIsOpen {
            self.gateway.logger.warning(
                "management API has no credentials (management.access_keys or management.bearer_token): it answers loopback clients only"
            )
        }
        var sweeps = self.startHeartbeats()
        if let interval = configuration.emfInterval { sweeps.append(self.startEmbeddedMetrics(every: interval)) }

        // Serve until SIGTERM/SIGINT (or cancellation), then drain.
        try? await gracefulShutdown()
        await self.drain()
        for sweep in sweeps { sweep.cancel() }
        for server in servers { try? await server.close() }
        await self.gateway.integrations?.shutdown()
        await self.gateway.authenticator?.shutdown()
    }

    /// Reads `tls.cert_file` and `tls.key_file` (TLS 1.2 and later) into the context new connections use.
    private func loadTLS() throws {
        let configuration = self.gateway.configuration
        guard let certificate = configuration.tlsCertificateFile, let key = configuration.tlsKeyFile else { return }
        do {
            var tls = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            )
            tls.minimumTLSVersion = .tlsv12
            let context = try NIOSSLContext(configuration: tls)
            self.tls.withLock { $0 = context }
        } catch {
            throw ConfigurationError(key: "tls.cert_file", reason: "cannot load \(certificate) and \(key): \(error)")
        }
    }

    /// Stops taking connections, reports 503, closes every client with 1001 so it reconnects elsewhere, and waits
    /// (at most the grace period) until every `$disconnect` has run.
    private func drain() async {
        let configuration = self.gateway.configuration
        self.gateway.draining.store(true, ordering: .relaxed)
        let active = self.gateway.activeConnections.load(ordering: .relaxed)
        self.gateway.logger.info("draining", metadata: ["connections": "\(active)"])
        try? await Task.sleep(for: configuration.drainDelay)
        self.gateway.hub.closeAll(code: CloseCode.goingAway, reason: "server draining")
        let deadline = ContinuousClock.now + configuration.drainGracePeriod
        while self.gateway.activeConnections.load(ordering: .relaxed) > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        let left = self.gateway.activeConnections.load(ordering: .relaxed)
        if left > 0 { self.gateway.logger.warning("grace period over with connections still open", metadata: ["connections": "\(left)"]) }
    }

    /// One sweep per event loop drives every connection's ``Liveness``: no timer per connection.
    private func startHeartbeats() -> [RepeatedTask] {
        let configuration = self.gateway.configuration
        let shortest = [configuration.pingInterval, configuration.pongTimeout, configuration.idleTimeout].compactMap { $0 }.min()!
        let tick = TimeAmount(min(max(shortest / 4, .milliseconds(50)), .seconds(1)))
        let (hub, engines) = (self.gateway.hub, self.gateway.engines)
        let engineTick = EngineSessions.sweepInterval(configuration.socketIO)
        return self.group.makeIterator().flatMap { loop in
            [
                loop.scheduleRepeatedTask(initialDelay: tick, delay: tick) { _ in hub.tick(on: loop, now: .now()) },
                loop.scheduleRepeatedTask(initialDelay: engineTick, delay: engineTick) { _ in engines.tick(on: loop, now: .now()) },
            ]
        }
    }

    /// CloudWatch's embedded metric format: the log line is the metric, so autoscaling on connections per task needs
    /// no agent and no API calls.
    private func startEmbeddedMetrics(every interval: Duration) -> RepeatedTask {
        let gateway = self.gateway
        return self.group.next().scheduleRepeatedTask(initialDelay: .zero, delay: TimeAmount(interval)) { _ in
            let line: JSONValue = [
                "_aws": [
                    "Timestamp": .number(String(gateway.wallClock())),
                    "CloudWatchMetrics": [
                        [
                            "Namespace": "Switchboard", "Dimensions": [["ServiceName"]],
                            "Metrics": [["Name": "ActiveConnections", "Unit": "Count"]],
                        ]
                    ],
                ],
                "ServiceName": .string(gateway.configuration.emfService),
                "ActiveConnections": .number(String(gateway.activeConnections.load(ordering: .relaxed))),
            ]
            FileHandle.standardOutput.write(Data(line.jsonBytes + [0x0A]))
        }
    }

    /// The WebSocket port: one listening socket per event loop (`SO_REUSEPORT`), so the kernel spreads new
    /// connections over the loops and each loop accepts and serves its own. With one listener, one loop accepts for
    /// all of them between serving its own connections, and a reconnect storm overflows the listen queue while the
    /// other loops idle. A plain bind comes first (``reserve(_:)``): it fails when anyone holds the port (with
    /// `SO_REUSEPORT` alone, a second node started on the same port by mistake would silently share it), and
    /// resolves port 0.
    private func listen(management: ManagementAPI?) async throws -> [any Channel] {
        let (host, loops) = (self.gateway.configuration.host, Array(self.group.makeIterator()))
        guard loops.count > 1 else {
            return [
                try await self.bootstrap(self.group, management: management, webSocket: true).bind(host: host, port: self.gateway.configuration.port)
                    .get()
            ]
        }
        let port = try Self.reserve(try SocketAddress.makeAddressResolvingHost(host, port: self.gateway.configuration.port))
        var listeners: [any Channel] = []
        do {
            for loop in loops {
                let bootstrap = self.bootstrap(loop, management: management, webSocket: true).serverChannelOption(
                    .socketOption(NIOBSDSocket.Option(rawValue: SO_REUSEPORT)),
                    value: 1
                )
                listeners.append(try await bootstrap.bind(host: host, port: port).get())
            }
        } catch {
            // A node that cannot listen on every loop does not start, and leaves nothing bound.
            for listener in listeners { try? await listener.close() }
            throw error
        }
        return listeners
    }

    /// Binds `address` without `SO_REUSEPORT` and without listening, then lets it go: throws when anyone holds the
    /// port, and returns the port (the one the kernel chose, for port 0). It never accepts a connection, so a health
    /// check cannot reach the node before its real listeners; the port is free for the microseconds until they bind.
    private static func reserve(_ address: SocketAddress) throws -> Int {
        let descriptor = socket(CInt(address.protocol.rawValue), CInt(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw IOError(errnoCode: errno, reason: "socket") }
        defer { close(descriptor) }
        var on: CInt = 1
        _ = setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<CInt>.size))
        guard address.withSockAddr({ bind(descriptor, $0, socklen_t($1)) }) == 0 else { throw IOError(errnoCode: errno, reason: "bind") }
        var bound = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &bound) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        guard named == 0 else { throw IOError(errnoCode: errno, reason: "getsockname") }
        // `sin_port` and `sin6_port` both sit at byte 2, in network order.
        return Int(withUnsafeBytes(of: &bound) { UInt16(bigEndian: $0.load(fromByteOffset: 2, as: UInt16.self)) })
    }

    private func bootstrap(_ group: any EventLoopGroup, management: ManagementAPI?, webSocket: Bool) -> ServerBootstrap {
        let gateway = self.gateway
        let node = self  // each accepted connection reads the current TLS context, which SIGHUP may have replaced
        let queue = gateway.configuration.outboundQueueBytes
        return ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // Accept up to 64 connections per wake-up (NIO's default is 4): a storm drains the listen queue faster.
            .serverChannelOption(.maxMessagesPerRead, value: 64)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: queue / 2, high: queue))
            // Each channel keeps its last receive buffer for reuse; NIO's default first buffer is 2 KiB, a third of
            // an idle connection's memory. Start at 256 bytes (a handshake or a chat message) and grow on demand.
            .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 256, maximum: 65536))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let context = node.tls.withLock({ $0 }) {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                    }
                    if webSocket {
                        try Self.configure(channel, gateway: gateway, management: management)
                    } else {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                        try channel.pipeline.syncOperations.addHandler(HTTPHandler(gateway: gateway, upgrade: UpgradeState(), management: management))
                    }
                }
            }
    }

    /// The pipeline of a new TCP connection: HTTP/1.1 with a WebSocket upgrader whose `shouldUpgrade` is `$connect`.
    private static func configure(_ channel: any Channel, gateway: GatewayContext, management: ManagementAPI?) throws {
        let upgrade = NIOLoopBound(UpgradeState(), eventLoop: channel.eventLoop)
        let upgrader = NIOWebSocketServerUpgrader(
            maxFrameSize: gateway.configuration.maxFrameBytes,
            automaticErrorHandling: false,
            shouldUpgrade: { channel, head in
                upgrade.value.requestTimer?.cancel()
                if SocketIOHTTP.owns(RequestTarget(head.uri).path, gateway) {
                    switch SocketIOHTTP.admitUpgrade(head, gateway) {
                    case .failure(let refusal):
                        gateway.metrics.rejected(refusal.reason)
                        upgrade.value.rejection = refusal.response
                        return channel.eventLoop.makeSucceededFuture(nil)
                    case .success(let sid):
                        upgrade.value.socketIO = (head, sid)
                        return channel.eventLoop.makeSucceededFuture(HTTPHeaders())
                    }
                }
                switch Admission.evaluate(head, remoteAddress: channel.remoteAddress, gateway: gateway) {
                case .failure(let refusal):
                    gateway.metrics.rejected(refusal.reason)
                    upgrade.value.rejection = refusal.response
                    return channel.eventLoop.makeSucceededFuture(nil)
                case .success(let candidate):
                    func answer(_ info: ConnectionInfo, _ claims: VerifiedClaims?) -> HTTPHeaders? {
                        guard channel.isActive else {
                            // The client left during the checks: no handler will ever run, so no `$disconnect`.
                            candidate.lease.end(nil)
                            return nil
                        }
                        candidate.lease.open()
                        let deflate =
                            gateway.configuration.compression.enabled
                            ? PerMessageDeflate.negotiate(head.headers[canonicalForm: "sec-websocket-extensions"].map(String.init)) : nil
                        upgrade.value.admitted = Admitted(info: info, claims: claims, lease: candidate.lease, deflate: deflate)
                        var headers = HTTPHeaders()
                        if let subprotocol = candidate.subprotocol { headers.add(name: "Sec-WebSocket-Protocol", value: subprotocol) }
                        if let deflate { headers.add(name: "Sec-WebSocket-Extensions", value: deflate.response) }
                        return headers
                    }
                    func refuse(_ error: any Error) -> HTTPHeaders? {
                        candidate.lease.end(nil)
                        if let refusal = error as? GatewayResponseError {
                            gateway.metrics.rejected(refusal.reason)
                            upgrade.value.rejection = refusal.response
                        } else {
                            gateway.metrics.rejected("internal")
                            gateway.logger.error("registering a connection failed", metadata: ["error": "\(error)"])
                            upgrade.value.rejection = .message(.internalServerError, "Internal server error")
                        }
                        return nil
                    }
                    do {
                        if let (info, claims) = try Admission.authorizeNow(candidate, gateway: gateway) {
                            return channel.eventLoop.makeSucceededFuture(answer(info, claims))
                        }
                    } catch {
                        return channel.eventLoop.makeSucceededFuture(refuse(error))
                    }
                    return channel.eventLoop.makeFutureWithTask {
                        try await Admission.authorize(candidate, head: head, gateway: gateway)
                    }
                    .assumeIsolated().map(answer).recover(refuse).nonisolated()
                }
            },
            upgradePipelineHandler: { channel, _ in
                channel.eventLoop.makeCompletedFuture {
                    if let (head, sid) = upgrade.value.socketIO {
                        upgrade.value.socketIO = nil
                        try channel.pipeline.syncOperations.addHandler(SocketIOWebSocketHandler(head: head, sid: sid, gateway: gateway))
                        return
                    }
                    guard let admitted = upgrade.value.admitted else { throw ChannelError.inappropriateOperationForState }
                    upgrade.value.admitted = nil
                    try channel.pipeline.syncOperations.addHandler(
                        WebSocketConnectionHandler(admitted, gateway: gateway, eventLoop: channel.eventLoop, now: .now())
                    )
                }
            }
        )
        try channel.pipeline.syncOperations.configureHTTPServerPipeline(
            withServerUpgrade: (
                upgraders: [upgrader],
                completionHandler: { context in context.pipeline.removeHandler(name: HTTPHandler.name, promise: nil) }
            )
        )
        try channel.pipeline.syncOperations.addHandler(
            HTTPHandler(gateway: gateway, upgrade: upgrade.value, management: management, upgraders: [upgrader]),
            name: HTTPHandler.name
        )
    }
}
