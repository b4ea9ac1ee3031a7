import Synchronization

/// The single-node broker: the registry lives in this process and everything is delivered locally.
///
/// Joins and leaves are O(1); a roster costs O(listing limit), never O(members), so a room of 100k members is as
/// cheap to join as an empty one. Listings sort the keys they page through, which is fine for the tens of
/// thousands of connections one node holds and is not on any message path.
public final class InMemoryBroker: Broker {
    private struct State {
        var connections: [ConnectionID: ConnectionInfo] = [:]
        var roomsOfConnection: [ConnectionID: Set<RoomID>] = [:]
        var rooms: [RoomID: [ConnectionID: String]] = [:]
        var histories: [RoomID: History] = [:]
    }

    /// A room's recent messages: a ring bounded by count and age, and the last offset ever assigned.
    private struct History {
        var last: Int64 = 0
        var entries: [(offset: Int64, at: ContinuousClock.Instant, frame: OutboundFrame)] = []
    }

    private let local: any LocalDelivery
    private let limits: HistoryLimits
    private let state = Mutex(State())

    public init(delivering local: any LocalDelivery, history limits: HistoryLimits = HistoryLimits()) {
        self.local = local
        self.limits = limits
    }

    public func register(_ connection: ConnectionInfo) async throws {
        self.state.withLock { $0.connections[connection.id] = connection }
    }

    public func unregister(_ connection: ConnectionID) async {
        self.state.withLock { state in
            state.connections.removeValue(forKey: connection)
            state.roomsOfConnection.removeValue(forKey: connection)
        }
    }

    public func join(_ room: RoomID, member: RoomMember, listing limit: Int) async throws -> RoomRoster {
        self.state.withLock { state in
            state.rooms[room, default: [:]][member.connection] = member.userId
            state.roomsOfConnection[member.connection, default: []].insert(room)
            let members = state.rooms[room]!
            return RoomRoster(userIds: Array(members.values.prefix(limit)), count: members.count)
        }
    }

    public func leave(_ room: RoomID, member: RoomMember) async {
        self.state.withLock { state in
            state.rooms[room]?.removeValue(forKey: member.connection)
            if state.rooms[room]?.isEmpty == true { state.rooms.removeValue(forKey: room) }
            state.roomsOfConnection[member.connection]?.remove(room)
        }
    }

    public func publish(_ frame: OutboundFrame, to audience: Audience) {
        self.local.deliver(frame, to: audience)
    }

    public func publish(_ message: RoomMessage) {
        // Assigned and delivered under the lock, so every member sees a room's messages in offset order.
        self.state.withLock { state in
            var history = state.histories[message.room] ?? History()
            history.last += 1
            let frame = message.frame(offset: history.last)
            if self.limits.messages > 0 {
                history.entries.append((history.last, .now, frame))
                if history.entries.count > self.limits.messages { history.entries.removeFirst(history.entries.count - self.limits.messages) }
            }
            state.histories[message.room] = history
            self.local.deliver(frame, to: .room(message.room))
        }
    }

    public func history(of room: RoomID, after offset: Int64) async -> RoomHistory {
        self.state.withLock { state in
            var history = state.histories[room] ?? History()
            let cutoff = ContinuousClock.now - self.limits.age
            history.entries.removeAll { $0.at < cutoff }
            state.histories[room] = history
            let oldest = history.entries.first?.offset ?? history.last + 1
            // An offset past the last one is from before a restart: this node cannot know what came after it.
            guard offset <= history.last else { return .lost(oldest: oldest) }
            guard offset < history.last else { return .messages([]) }
            guard offset + 1 >= oldest else { return .lost(oldest: oldest) }
            return .messages(history.entries.filter { $0.offset > offset }.map(\.frame))
        }
    }

    public func lastOffset(of room: RoomID) async -> Int64 {
        self.state.withLock { $0.histories[room]?.last ?? 0 }
    }

    public func send(_ command: ConnectionCommand, to connection: ConnectionID) {
        self.local.perform(command, on: connection)
    }

    public func connection(_ id: ConnectionID) async -> RegisteredConnection? {
        self.state.withLock { state in
            state.connections[id].map { RegisteredConnection(info: $0, rooms: Self.sorted(state.roomsOfConnection[id])) }
        }
    }

    public func connections(after cursor: String?, limit: Int) async -> Page<RegisteredConnection> {
        self.state.withLock { state in
            Self.page(state.connections.keys.map(\.rawValue), after: cursor, limit: limit) { key in
                let id = ConnectionID(key)!
                return RegisteredConnection(info: state.connections[id]!, rooms: Self.sorted(state.roomsOfConnection[id]))
            }
        }
    }

    public func rooms(after cursor: String?, limit: Int) async -> Page<(room: RoomID, members: Int)> {
        self.state.withLock { state in
            Self.page(state.rooms.keys.map(\.rawValue), after: cursor, limit: limit) { key in
                let room = RoomID(key)!
                return (room, state.rooms[room]!.count)
            }
        }
    }

    public func members(of room: RoomID, after cursor: String?, limit: Int) async -> Page<RoomMember> {
        self.state.withLock { state in
            let members = state.rooms[room] ?? [:]
            return Self.page(members.keys.map(\.rawValue), after: cursor, limit: limit) { key in
                let id = ConnectionID(key)!
                return RoomMember(connection: id, userId: members[id]!)
            }
        }
    }

    /// Rooms with at least one member, for health and stats.
    public var roomCount: Int { self.state.withLock { $0.rooms.count } }

    private static func sorted(_ rooms: Set<RoomID>?) -> [RoomID] {
        (rooms ?? []).sorted { $0.rawValue < $1.rawValue }
    }

    private static func page<Item>(_ keys: [String], after cursor: String?, limit: Int, item: (String) -> Item) -> Page<Item> {
        let sorted = keys.filter { cursor == nil || $0 > cursor! }.sorted()
        let selected = sorted.prefix(limit)
        return Page(items: selected.map(item), next: sorted.count > limit ? selected.last : nil)
    }
}
