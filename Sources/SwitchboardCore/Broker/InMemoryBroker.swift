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
        /// Every kept message of every room, oldest first: age and the byte budget both expire from the front, so
        /// pruning costs O(messages dropped), never O(rooms).
        var kept = FIFO<(room: RoomID, offset: Int64, at: ContinuousClock.Instant, bytes: Int)>()
        var keptBytes = 0
    }

    /// A room's recent messages and the last offset ever assigned. A room whose history is empty and which has no
    /// members is forgotten, its counter with it: a client rejoining later with an old offset is told `historyLost`.
    private struct History {
        var last: Int64 = 0
        var entries = FIFO<HistoryEntry>()
    }

    private let local: any LocalDelivery
    public var localDelivery: any LocalDelivery { self.local }
    private let limits: HistoryLimits
    private let now: @Sendable () -> ContinuousClock.Instant
    private let state = Mutex(State())

    /// - Parameter now: the clock history ages by (tests pass their own).
    public init(
        delivering local: any LocalDelivery,
        history limits: HistoryLimits = HistoryLimits(),
        now: @escaping @Sendable () -> ContinuousClock.Instant = { .now }
    ) {
        self.local = local
        self.limits = limits
        self.now = now
    }

    /// Drops expired history every second, so a room nobody rejoins does not keep its messages past their age.
    public func run() async {
        while !Task.isCancelled {
            self.pruneHistory()
            try? await Task.sleep(for: .seconds(1))
        }
    }

    public func register(_ connection: ConnectionInfo) async throws {
        self.state.withLock { $0.connections[connection.id] = connection }
    }

    public func unregister(_ connection: ConnectionID) async -> Bool {
        self.state.withLock { state in
            state.connections.removeValue(forKey: connection)
            state.roomsOfConnection.removeValue(forKey: connection)
        }
        return true
    }

    public func join(_ room: RoomID, member: RoomMember, listing limit: Int) async throws -> RoomRoster {
        self.state.withLock { state in
            state.rooms[room, default: [:]][member.connection] = member.userId
            state.roomsOfConnection[member.connection, default: []].insert(room)
            let members = state.rooms[room]!
            return RoomRoster(userIds: Array(members.values.prefix(max(limit, 0))), count: members.count)
        }
    }

    public func leave(_ room: RoomID, member: RoomMember) async {
        self.state.withLock { state in
            state.rooms[room]?.removeValue(forKey: member.connection)
            if state.rooms[room]?.isEmpty == true {
                state.rooms.removeValue(forKey: room)
                if state.histories[room]?.entries.isEmpty == true { state.histories.removeValue(forKey: room) }
            }
            state.roomsOfConnection[member.connection]?.remove(room)
        }
    }

    public func publish(_ frame: OutboundFrame, to audience: Audience) {
        self.local.deliver(frame, to: audience)
    }

    public func publish(_ message: RoomMessage) {
        let now = self.now()
        // Assigned and delivered under the lock, so every member sees a room's messages in offset order.
        self.state.withLock { state in
            var history = state.histories.removeValue(forKey: message.room) ?? History()
            history.last += 1  // one per message: cannot reach Int64.max
            let frame = message.frame(offset: history.last)
            if self.limits.messages > 0, frame.bytes.count <= self.limits.totalBytes {
                history.entries.append(HistoryEntry(offset: history.last, frame: frame))
                state.kept.append((message.room, history.last, now, frame.bytes.count))
                state.keptBytes += frame.bytes.count
                if history.entries.count > self.limits.messages { history.entries.removeFirst() }
            } else {
                // Not kept: what is kept must stay consecutive, so a rejoin across this offset hears historyLost.
                history.entries = FIFO()
            }
            state.histories[message.room] = history
            self.prune(&state, now: now)
            self.local.deliver(frame, to: .room(message.room))
        }
    }

    func pruneHistory() {
        let now = self.now()
        self.state.withLock { self.prune(&$0, now: now) }
    }

    /// Forgets, oldest first, what is past its age, over the byte budget, or already pushed out of its room's
    /// ring by the count bound.
    private func prune(_ state: inout State, now: ContinuousClock.Instant) {
        let cutoff = now - self.limits.age
        while let oldest = state.kept.first, oldest.at < cutoff || state.keptBytes > self.limits.totalBytes {
            state.kept.removeFirst()
            state.keptBytes -= oldest.bytes
            guard var history = state.histories[oldest.room] else { continue }
            if history.entries.first?.offset == oldest.offset { history.entries.removeFirst() }
            if history.entries.isEmpty, state.rooms[oldest.room] == nil {
                state.histories.removeValue(forKey: oldest.room)
            } else {
                state.histories[oldest.room] = history
            }
        }
    }

    /// Message bytes kept for rejoining clients, over all rooms.
    public var historyBytes: Int { self.state.withLock { $0.keptBytes } }

    public func history(of room: RoomID, after offset: Int64, limit: Int) async -> RoomHistory {
        let now = self.now()
        return self.state.withLock { state in
            self.prune(&state, now: now)
            let history = state.histories[room] ?? History()
            let oldest = history.entries.first?.offset ?? history.last + 1
            // An offset past the last one is from before a restart: this node cannot know what came after it.
            guard offset <= history.last else { return .lost(oldest: oldest) }
            guard offset < history.last else { return .messages([]) }
            guard offset + 1 >= oldest else { return .lost(oldest: oldest) }
            // Offsets in the ring are consecutive: the page starts at a known index.
            let start = Int(offset + 1 - oldest)
            guard start < history.entries.count else { return .lost(oldest: oldest) }
            return .messages(Array(history.entries.suffix(from: start).prefix(max(limit, 1))))
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

    public var localRoomCount: Int { self.state.withLock { $0.rooms.count } }

    private static func sorted(_ rooms: Set<RoomID>?) -> [RoomID] {
        (rooms ?? []).sorted { $0.rawValue < $1.rawValue }
    }

    private static func page<Item>(_ keys: [String], after cursor: String?, limit: Int, item: (String) -> Item) -> Page<Item> {
        let sorted = keys.filter { cursor == nil || $0 > cursor! }.sorted()
        let selected = sorted.prefix(limit)
        return Page(items: selected.map(item), next: sorted.count > limit ? selected.last : nil)
    }
}
