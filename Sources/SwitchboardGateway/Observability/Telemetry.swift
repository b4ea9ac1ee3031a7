import Foundation
import NIOCore
import Prometheus
import SwitchboardCore
import Synchronization

/// What `/metrics` and the dashboard read: the registry's text after the gauges are brought up to date.
extension GatewayContext {
    /// Sets the gauges that are sampled rather than counted, then renders the Prometheus text.
    /// - Parameter roomCount: the number of rooms when the caller listed them already.
    func prometheusText(roomCount: Int? = nil) async -> String {
        self.metrics.connectionsActive.set(Int64(self.activeConnections.load(ordering: .relaxed)))
        let rooms: Int
        if let roomCount { rooms = roomCount } else { rooms = await self.broker.rooms(after: nil, limit: Int.max).items.count }
        self.metrics.rooms.set(Int64(rooms))
        self.metrics.outboundQueueBytes.set(Int64(await self.hub.queuedBytes()))
        return self.metrics.registry.emitToString()
    }

    /// One dashboard update: the metrics text, the ten largest rooms and the nodes.
    func dashboardSnapshot() async -> JSONValue {
        let listing = await self.broker.rooms(after: nil, limit: Int.max).items  // listed once for both uses
        let metrics = await self.prometheusText(roomCount: listing.count)
        let rooms = listing.sorted { $0.members > $1.members }.prefix(10)
        let node: JSONValue = [
            "node": .string(ProcessInfo.processInfo.hostName),
            "connections": .number(String(self.activeConnections.load(ordering: .relaxed))),
            "draining": .bool(self.isDraining),
        ]
        return [
            "time": .number(String(self.wallClock())),
            "metrics": .string(metrics),
            "rooms": .array(rooms.map { ["roomId": .string($0.room.rawValue), "members": .number(String($0.members))] }),
            "nodes": [node],
        ]
    }
}
