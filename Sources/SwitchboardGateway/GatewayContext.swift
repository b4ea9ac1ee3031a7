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
    let integrationRequests = Atomic<Int>(0)
    let integrationErrors = Atomic<Int>(0)
    let disconnectDeliveryAttempts = Atomic<Int>(0)

    init(
        configuration: GatewayConfiguration,
        broker: any Broker,
        hub: LocalHub,
        logger: Logger,
        wallClock: @escaping @Sendable () -> Int64,
        integrations: IntegrationClient?
    ) {
        self.configuration = configuration
        self.broker = broker
        self.hub = hub
        self.logger = logger
        self.wallClock = wallClock
        self.startedAt = wallClock()
        self.integrations = integrations
    }

    /// Posts an event to a backend, counting the request and any failure.
    func invoke(_ url: String, event: JSONValue) async throws(IntegrationError) -> IntegrationReply {
        self.integrationRequests.add(1, ordering: .relaxed)
        do {
            return try await self.integrations!.invoke(url, event: event)
        } catch {
            self.integrationErrors.add(1, ordering: .relaxed)
            self.logger.warning("integration failed", metadata: ["url": "\(url)", "error": "\(error)"])
            throw error
        }
    }

    static let systemWallClock: @Sendable () -> Int64 = { Int64((Date().timeIntervalSince1970 * 1000).rounded()) }
}
