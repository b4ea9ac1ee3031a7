import Foundation
import Logging
import SwitchboardCore
import Synchronization

/// What all connections of a node share: configuration, broker, the local hub, clocks and counters.
final class GatewayContext: Sendable {
    let configuration: GatewayConfiguration
    let broker: any Broker
    let hub: LocalHub
    let logger: Logger
    /// Milliseconds since 1970 for `timestamp` fields and `connectedAt`; injected so tests can fix it.
    let wallClock: @Sendable () -> Int64
    let startedAt: Int64
    /// Set by SIGTERM: new connections are refused with 503 and health reports draining.
    let draining = Atomic<Bool>(false)
    /// Registered connections whose `$disconnect` has not finished yet.
    let activeConnections = Atomic<Int>(0)
    let acceptedConnections = Atomic<Int>(0)
    /// HTTP backends, when any route has one.
    let integrations: IntegrationClient?
    let metrics: GatewayMetrics
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
        metrics: GatewayMetrics
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
        self.logger = subsystem("connections")
        self.managementLogger = subsystem("management")
        self.integrationLogger = subsystem("integrations")
        self.wallClock = wallClock
        self.startedAt = wallClock()
        self.integrations = integrations
        self.metrics = metrics
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
