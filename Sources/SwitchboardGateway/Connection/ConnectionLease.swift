import Logging
import Prometheus
import SwitchboardConfiguration
import SwitchboardCore
import Synchronization

/// Everything one connection holds of its node, from its handshake's first check to the end of its `$disconnect`: a
/// slot under `limits.max_connections`, a count under `limits.max_connections_per_user`, its registration with the
/// broker, and its place among the active connections the drain waits for. Nothing else changes those counts, and
/// ``end(_:)`` gives back whatever was taken exactly once, whichever way the connection ends: refused, the client gone
/// during `$connect`, closed, dropped as a slow consumer, drained.
final class ConnectionLease: Sendable {
    private struct Held {
        var user: String?
        var registered: ConnectionID?
        var active = false
        var ended = false
    }

    private let gateway: GatewayContext
    private let held = Mutex(Held())

    /// Takes a slot: `nil` when the node holds `limits.max_connections` already (handshakes in flight count, so
    /// concurrent ones cannot overshoot).
    static func take(_ gateway: GatewayContext) -> ConnectionLease? {
        let taken = gateway.slots.add(1, ordering: .relaxed).newValue
        if let limit = gateway.configuration.maxConnections, taken > limit {
            gateway.slots.subtract(1, ordering: .relaxed)
            return nil
        }
        return ConnectionLease(gateway)
    }

    private init(_ gateway: GatewayContext) {
        self.gateway = gateway
    }

    /// Counts the connection for `userId` (once per lease): `false` when the user has
    /// `limits.max_connections_per_user` already.
    func countUser(_ userId: String) -> Bool {
        guard let limit = self.gateway.configuration.maxConnectionsPerUser, self.held.withLock({ $0.user == nil }) else { return true }
        let counted = self.gateway.connectionsPerUser.withLock { counts -> Bool in
            guard counts[userId, default: 0] < limit else { return false }
            counts[userId, default: 0] += 1
            return true
        }
        if counted { self.held.withLock { $0.user = userId } }
        return counted
    }

    /// Registers the connection with the broker, where the cluster and the management API see it.
    func register(_ info: ConnectionInfo) async throws {
        try await self.gateway.broker.register(info)
        self.held.withLock { $0.registered = info.id }
    }

    /// Registers without suspending, when the broker can (``Broker/registerNow(_:)``).
    func registerNow(_ info: ConnectionInfo) -> Bool {
        guard self.gateway.broker.registerNow(info) else { return false }
        self.held.withLock { $0.registered = info.id }
        return true
    }

    /// The upgrade is answered: the connection counts as active until its `$disconnect` has run.
    func open() {
        self.held.withLock { $0.active = true }
        self.gateway.activeConnections.add(1, ordering: .relaxed)
        self.gateway.acceptedConnections.add(1, ordering: .relaxed)
        self.gateway.metrics.connectionsAccepted.increment()
    }

    /// How an open connection left: what its rooms and its `$disconnect` route hear.
    struct Departure: Sendable {
        var info: ConnectionInfo
        var rooms: Set<RoomID>
        var status: ConnectionStateMachine.CloseStatus
        /// Runs once the connection is off the registry, before its rooms and backend hear it left.
        var afterwards: (@Sendable () async -> Void)? = nil
    }

    /// Gives everything back, once: the slot and the user's count at once (not after a slow backend), then, off
    /// the loop, the rooms are left and the registration undone, and when this node owns the connection's end (the
    /// cluster did not sweep it meanwhile) its rooms and backend are told. Only then does it stop counting as
    /// active, which is what the drain waits for. A connection that never reached its handler (`departure` is
    /// `nil`: refused, or gone before the handover) is unregistered without a `$disconnect`.
    func end(_ departure: Departure?) {
        let held = self.held.withLock { held -> Held? in
            guard !held.ended else { return nil }
            defer { held.ended = true }
            return held
        }
        guard let held else { return }
        let gateway = self.gateway
        gateway.slots.subtract(1, ordering: .relaxed)
        if let user = held.user {
            gateway.connectionsPerUser.withLock { counts in
                counts[user, default: 1] -= 1
                if counts[user] == 0 { counts.removeValue(forKey: user) }
            }
        }
        guard let id = held.registered else {
            if held.active { gateway.activeConnections.subtract(1, ordering: .relaxed) }
            return
        }
        Task {
            if let departure {
                let member = RoomMember(connection: id, userId: departure.info.userId)
                for room in departure.rooms { await gateway.broker.leave(room, member: member) }
            }
            // Gone from the registry (as on API Gateway, where posting to it during `$disconnect` is a
            // GoneException) before its rooms and its backend hear of it.
            let owned = await gateway.broker.unregister(id)
            await departure?.afterwards?()
            if owned, let departure {
                await gateway.announceDeparture(departure.info, rooms: departure.rooms, status: departure.status)
            }
            if held.active { gateway.activeConnections.subtract(1, ordering: .relaxed) }
        }
    }
}

extension GatewayContext {
    /// What the others hear when a connection is gone, for every way it goes (closed on this node, or swept by the
    /// cluster with a dead node): each of its rooms hears `userLeft` when presence is on, then its `$disconnect`
    /// integration is told.
    func announceDeparture(_ info: ConnectionInfo, rooms: some Sequence<RoomID>, status: ConnectionStateMachine.CloseStatus) async {
        for room in rooms { self.publishUserLeft(room, userId: info.userId) }
        await self.deliverDisconnect(info, status: status)
    }

    /// `userLeft` to a room's members, when presence is on: the one place it is decided.
    func publishUserLeft(_ room: RoomID, userId: String) {
        guard self.configuration.presence else { return }
        self.broker.publish(ServerFrames.userLeft(room, userId: userId, timestamp: self.wallClock()), to: .room(room))
    }

    /// Delivers `$disconnect` to its integration at least once: a failed or timed-out attempt is retried with
    /// exponential backoff (250 ms doubling to 5 s) for `integration.disconnect_retry_for`. API Gateway tries once.
    private func deliverDisconnect(_ info: ConnectionInfo, status: ConnectionStateMachine.CloseStatus) async {
        guard let disconnect = self.configuration.routes.integration(for: RouteTable.disconnectKey) else { return }
        let requestId = ConnectionID.random().rawValue
        let event = LambdaProxyEvent.make(
            .disconnect,
            routeKey: RouteTable.disconnectKey,
            connection: info,
            apiId: self.configuration.apiId,
            requestId: requestId,
            now: self.wallClock(),
            close: (status.code, status.reason)
        )
        let deadline = ContinuousClock.now + self.configuration.integrationDisconnectRetryFor
        var delay = Duration.milliseconds(250)
        while true {
            self.metrics.disconnectDeliveryAttempts.increment()
            if (try? await self.invoke(disconnect.url, event: event, route: RouteTable.disconnectKey, requestId: requestId)) != nil {
                return
            }
            guard ContinuousClock.now + delay < deadline else {
                self.integrationLogger.error(
                    "$disconnect not delivered; gave up",
                    metadata: ["connectionId": "\(info.id)", "requestId": "\(requestId)", "url": "\(disconnect.url)"]
                )
                return
            }
            try? await Task.sleep(for: delay)
            delay = min(delay * 2, .seconds(5))
        }
    }
}
