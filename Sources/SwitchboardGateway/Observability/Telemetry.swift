import Foundation
import NIOCore
import Prometheus
import SwitchboardCore
import Synchronization

/// What `/metrics` and the dashboard read: the registry's text after the gauges are brought up to date.
extension GatewayContext {
    /// Sets the gauges that are sampled rather than counted, then renders the Prometheus text. O(1) in rooms and
    /// connections: a scrape reads counts, it never lists (a scrape every second must not slow the node).
    func prometheusText() async -> String {
        self.metrics.connectionsActive.set(Int64(self.activeConnections.load(ordering: .relaxed)))
        self.metrics.rooms.set(Int64(self.broker.localRoomCount))
        self.metrics.outboundQueueBytes.set(Int64(await self.sampledQueuedBytes()))
        return self.metrics.registry.emitToString()
    }

    /// One dashboard update: the metrics text, the ten largest of the first rooms listed (at most
    /// ``dashboardRoomSample``, so an update costs the same with a million rooms), and the nodes.
    func dashboardSnapshot() async -> JSONValue {
        let listing = await self.broker.rooms(after: nil, limit: Self.dashboardRoomSample).items
        let metrics = await self.prometheusText()
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

    static let dashboardRoomSample = 1000

    /// Queued outbound bytes over all connections, summed at most every five seconds however often it is asked.
    func sampledQueuedBytes() async -> Int {
        let now = ContinuousClock.now
        let fresh = self.queuedBytesSample.withLock { sample -> Int? in
            if let at = sample.at, now - at < .seconds(5) { return sample.bytes }
            sample.at = now  // whoever gets here first sums; the others meanwhile read the previous sum
            return nil
        }
        if let fresh { return fresh }
        let bytes = await self.hub.queuedBytes()
        self.queuedBytesSample.withLock { $0.bytes = bytes }
        return bytes
    }
}
