import SwitchboardCore

/// A test broker around the real in-memory one: everything is forwarded to `inner` unless the test's broker
/// implements it itself (to record, hold or reroute one call).
protocol ForwardingBroker: Broker {
    var inner: InMemoryBroker { get }
}

extension ForwardingBroker {
    func register(_ connection: ConnectionInfo) async throws { try await self.inner.register(connection) }
    func registerNow(_ connection: ConnectionInfo) -> Bool { self.inner.registerNow(connection) }
    func unregister(_ connection: ConnectionID) async -> Bool { await self.inner.unregister(connection) }
    func join(_ room: RoomID, member: RoomMember, listing limit: Int) async throws -> RoomRoster {
        try await self.inner.join(room, member: member, listing: limit)
    }
    func leave(_ room: RoomID, member: RoomMember) async { await self.inner.leave(room, member: member) }
    func publish(_ frame: OutboundFrame, to audience: Audience) { self.inner.publish(frame, to: audience) }
    func publish(_ message: RoomMessage) { self.inner.publish(message) }
    func history(of room: RoomID, after offset: Int64, limit: Int) async -> RoomHistory {
        await self.inner.history(of: room, after: offset, limit: limit)
    }
    func lastOffset(of room: RoomID) async -> Int64 { await self.inner.lastOffset(of: room) }
    func stash(_ value: [UInt8], under key: String, for ttl: Duration) async { await self.inner.stash(value, under: key, for: ttl) }
    func takeStashed(_ key: String) async -> [UInt8]? { await self.inner.takeStashed(key) }
    func send(_ command: ConnectionCommand, to connection: ConnectionID) { self.inner.send(command, to: connection) }
    func connection(_ id: ConnectionID) async -> RegisteredConnection? { await self.inner.connection(id) }
    var localRoomCount: Int { self.inner.localRoomCount }
    var localDelivery: any LocalDelivery { self.inner.localDelivery }
    func connections(after cursor: String?, limit: Int) async -> Page<RegisteredConnection> {
        await self.inner.connections(after: cursor, limit: limit)
    }
    func rooms(after cursor: String?, limit: Int) async -> Page<(room: RoomID, members: Int)> {
        await self.inner.rooms(after: cursor, limit: limit)
    }
    func members(of room: RoomID, after cursor: String?, limit: Int) async -> Page<RoomMember> {
        await self.inner.members(of: room, after: cursor, limit: limit)
    }
}
