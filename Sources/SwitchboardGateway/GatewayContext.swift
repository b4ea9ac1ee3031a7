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

    init(configuration: GatewayConfiguration, broker: any Broker, hub: LocalHub, logger: Logger, wallClock: @escaping @Sendable () -> Int64) {
        self.configuration = configuration
        self.broker = broker
        self.hub = hub
        self.logger = logger
        self.wallClock = wallClock
        self.startedAt = wallClock()
    }

    static let systemWallClock: @Sendable () -> Int64 = { Int64((Date().timeIntervalSince1970 * 1000).rounded()) }
}
