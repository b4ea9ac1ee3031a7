import Synchronization

/// The single-node broker: the registry lives in this process and every publish is delivered locally.
///
/// Joins and leaves are O(1); a roster costs O(listing limit), never O(members), so a room of 100k members is as
/// cheap to join as an empty one.
public final class InMemoryBroker: Broker {
    private struct State {
        var connections: [ConnectionID: ConnectionInfo] = [:]
        var rooms: [RoomID: [ConnectionID: String]] = [:]
    }

    private let local: any LocalDelivery
    private let state = Mutex(State())

    public init(delivering local: any LocalDelivery) {
        self.local = local
    }

    public func register(_ connection: ConnectionInfo) async throws {
        self.state.withLock { $0.connections[connection.id] = connection }
    }

    public func unregister(_ connection: ConnectionID) async {
        _ = self.state.withLock { $0.connections.removeValue(forKey: connection) }
    }

    public func join(_ room: RoomID, member: RoomMember, listing limit: Int) async throws -> RoomRoster {
        self.state.withLock { state in
            state.rooms[room, default: [:]][member.connection] = member.userId
            let members = state.rooms[room]!
            return RoomRoster(userIds: Array(members.values.prefix(limit)), count: members.count)
        }
    }

    public func leave(_ room: RoomID, member: RoomMember) async {
        self.state.withLock { state in
            state.rooms[room]?.removeValue(forKey: member.connection)
            if state.rooms[room]?.isEmpty == true { state.rooms.removeValue(forKey: room) }
        }
    }

    public func publish(_ frame: OutboundFrame, to audience: Audience) {
        self.local.deliver(frame, to: audience)
    }

    public func connection(_ id: ConnectionID) async -> ConnectionInfo? {
        self.state.withLock { $0.connections[id] }
    }

    /// Rooms with at least one member, for health and metrics.
    public var roomCount: Int { self.state.withLock { $0.rooms.count } }
}
