import Synchronization

/// The single-node broker: the registry lives in this process and everything is delivered locally.
///
/// No lock covers the whole node, so rooms and connections that have nothing in common do not wait on each other
/// (with one lock, admission and fan-out of every event loop queued on it: 8 loops admitted handshakes more slowly
/// than 1). Rooms, with their members and history, are split over stripes by room id, and the connection registry
/// over stripes of its own by connection id. Only the node-wide history byte budget is shared: every kept message
/// is numbered in a FIFO behind a small lock of its own, held just to append or to take expired entries out.
///
/// Lock order: a publish takes `kept` inside its room's stripe (and hands the frame to `local`, which queues it on
/// every event loop, so each loop delivers a room's messages in offset order); no other lock is ever taken while one
/// is held. Expiring takes entries out of `kept`, lets go, then
/// takes each room's stripe to drop them there. Join and leave take the room's stripe, then the connection's, one
/// after the other (the gateway runs one connection's joins and leaves in order). So no deadlock.
///
/// Joins and leaves are O(1); a roster costs O(listing limit), never O(members), so a room of 100k members is as
/// cheap to join as an empty one. Listings visit every stripe and sort the keys they page through, which is fine
/// for the tens of thousands of connections one node holds and is not on any message path.
public final class InMemoryBroker: Broker {
    /// The rooms of one stripe.
    private struct Rooms {
        var members: [RoomID: [ConnectionID: String]] = [:]
        var histories: [RoomID: History] = [:]
    }

    /// The connections of one stripe and the rooms each is in.
    private struct Connections {
        var info: [ConnectionID: ConnectionInfo] = [:]
        var rooms: [ConnectionID: Set<RoomID>] = [:]
    }

    /// Every kept message of every room, oldest first, numbered in the order kept: age and the byte budget both
    /// expire from the front, so pruning costs O(messages dropped), never O(rooms).
    private struct Kept {
        var entries = FIFO<(room: RoomID, number: UInt64, at: ContinuousClock.Instant, bytes: Int)>()
        var bytes = 0
        var last: UInt64 = 0  // the last number handed out
    }

    /// A room's recent messages, each with its number in `Kept`, and the last offset ever assigned. A room whose
    /// history is empty and which has no members is forgotten, its counter with it: a client rejoining later with an
    /// old offset is told `historyLost`.
    private struct History {
        var last: Int64 = 0
        var entries = FIFO<(number: UInt64, entry: HistoryEntry)>()
    }

    /// Stashed values (``stash(_:under:for:)``) and their expiry, oldest first: expiring costs O(entries dropped).
    private struct Stash {
        var values: [String: (value: [UInt8], expires: ContinuousClock.Instant)] = [:]
        var order = FIFO<(key: String, expires: ContinuousClock.Instant)>()
        var bytes = 0
    }

    /// The bounds of the stash: past either, the oldest entries go first, as a cache's would.
    public static let maximumStashed = (count: 65_536, bytes: 64 << 20)

    private let local: any LocalDelivery
    public var localDelivery: any LocalDelivery { self.local }
    private let limits: HistoryLimits
    private let now: @Sendable () -> ContinuousClock.Instant
    private let byRoom = Striped(Rooms())
    private let byConnection = Striped(Connections())
    private let kept = Mutex(Kept())
    private let stashed = Mutex(Stash())
    /// Rooms with members, counted as they appear and disappear, so reading it takes no lock.
    private let roomCount = Atomic(0)

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
        _ = self.registerNow(connection)
    }

    /// The registry is this process's memory: a handshake registers without leaving its event loop.
    public func registerNow(_ connection: ConnectionInfo) -> Bool {
        self.byConnection.withLock(connection.id.rawValue) { $0.info[connection.id] = connection }
        return true
    }

    /// Forgets the connection and its set of rooms; the gateway has left each room before.
    public func unregister(_ connection: ConnectionID) async -> Bool {
        self.byConnection.withLock(connection.rawValue) { state in
            state.info[connection] = nil
            state.rooms[connection] = nil
        }
        return true
    }

    public func join(_ room: RoomID, member: RoomMember, listing limit: Int) async throws -> RoomRoster {
        let roster = self.byRoom.withLock(room.rawValue) { state in
            if state.members[room] == nil { self.roomCount.wrappingAdd(1, ordering: .relaxed) }
            state.members[room, default: [:]][member.connection] = member.userId
            let members = state.members[room]!
            return RoomRoster(userIds: Array(members.values.prefix(max(limit, 0))), count: members.count)
        }
        // Only for a registered connection: a join that raced its connection's end must not leave an entry behind.
        self.byConnection.withLock(member.connection.rawValue) { state in
            if state.info[member.connection] != nil { state.rooms[member.connection, default: []].insert(room) }
        }
        return roster
    }

    public func leave(_ room: RoomID, member: RoomMember) async {
        self.byRoom.withLock(room.rawValue) { state in
            guard state.members[room]?.removeValue(forKey: member.connection) != nil, state.members[room]!.isEmpty else { return }
            state.members[room] = nil
            self.roomCount.wrappingSubtract(1, ordering: .relaxed)
            if state.histories[room]?.entries.isEmpty == true { state.histories[room] = nil }
        }
        self.byConnection.withLock(member.connection.rawValue) { _ = $0.rooms[member.connection]?.remove(room) }
    }

    public func publish(_ frame: OutboundFrame, to audience: Audience) {
        self.local.deliver(frame, to: audience)
    }

    public func publish(_ message: RoomMessage) {
        let now = self.now()
        // Assigned and delivered under the room's stripe, so every member sees a room's messages in offset order.
        let expired = self.byRoom.withLock(message.room.rawValue) { state in
            var history = state.histories.removeValue(forKey: message.room) ?? History()
            history.last += 1  // one per message: cannot reach Int64.max
            let frame = message.frame(offset: history.last)
            var expired: [(RoomID, UInt64)] = []
            if self.limits.messages > 0, frame.bytes.count <= self.limits.totalBytes {
                let number: UInt64
                (number, expired) = self.kept.withLock { kept in
                    kept.last += 1
                    kept.entries.append((message.room, kept.last, now, frame.bytes.count))
                    kept.bytes += frame.bytes.count
                    return (kept.last, self.expire(&kept, now: now))
                }
                history.entries.append((number, HistoryEntry(offset: history.last, frame: frame)))
                if history.entries.count > self.limits.messages { history.entries.removeFirst() }
            } else {
                // Not kept: what is kept must stay consecutive, so a rejoin across this offset hears historyLost.
                history.entries = FIFO()
            }
            state.histories[message.room] = history
            self.local.deliver(frame, to: .room(message.room))
            return expired
        }
        self.forget(expired)
    }

    func pruneHistory() {
        let now = self.now()
        self.forget(self.kept.withLock { self.expire(&$0, now: now) })
    }

    /// Takes out of `kept`, oldest first, what is past its age or over the byte budget, with the room of each.
    private func expire(_ kept: inout Kept, now: ContinuousClock.Instant) -> [(RoomID, UInt64)] {
        let cutoff = now - self.limits.age
        var expired: [(RoomID, UInt64)] = []
        while let oldest = kept.entries.first, oldest.at < cutoff || kept.bytes > self.limits.totalBytes {
            kept.entries.removeFirst()
            kept.bytes -= oldest.bytes
            expired.append((oldest.room, oldest.number))
        }
        return expired
    }

    /// Drops expired messages from their rooms (messages already pushed out by the count bound are gone already).
    /// A room's messages are numbered in the order kept and expire in that order, so all up to the newest expired
    /// number go: another thread may have taken older ones out of `kept` and not dropped them yet. Numbers are never
    /// reused, so an expired message cannot drop a newer one of a room forgotten and then used again.
    private func forget(_ expired: [(RoomID, UInt64)]) {
        for (room, number) in Dictionary(expired, uniquingKeysWith: max) {
            self.byRoom.withLock(room.rawValue) { state in
                guard var history = state.histories.removeValue(forKey: room) else { return }
                while let first = history.entries.first, first.number <= number { history.entries.removeFirst() }
                if !history.entries.isEmpty || state.members[room] != nil { state.histories[room] = history }
            }
        }
    }

    /// Message bytes kept for rejoining clients, over all rooms.
    public var historyBytes: Int { self.kept.withLock { $0.bytes } }

    public func history(of room: RoomID, after offset: Int64, limit: Int) async -> RoomHistory {
        self.pruneHistory()
        return self.byRoom.withLock(room.rawValue) { state in
            let history = state.histories[room] ?? History()
            let oldest = history.entries.first?.entry.offset ?? history.last + 1
            // An offset past the last one is from before a restart: this node cannot know what came after it.
            guard offset <= history.last else { return .lost(oldest: oldest) }
            guard offset < history.last else { return .messages([]) }
            guard offset + 1 >= oldest else { return .lost(oldest: oldest) }
            // Offsets in the ring are consecutive: the page starts at a known index.
            let start = Int(offset + 1 - oldest)
            guard start < history.entries.count else { return .lost(oldest: oldest) }
            return .messages(history.entries.suffix(from: start).prefix(max(limit, 1)).map(\.entry))
        }
    }

    public func lastOffset(of room: RoomID) async -> Int64 {
        self.byRoom.withLock(room.rawValue) { $0.histories[room]?.last ?? 0 }
    }

    public func send(_ command: ConnectionCommand, to connection: ConnectionID) {
        self.local.perform(command, on: connection)
    }

    public func stash(_ value: [UInt8], under key: String, for ttl: Duration) async {
        let (now, bounds) = (self.now(), Self.maximumStashed)
        guard value.count <= bounds.bytes else { return }
        self.stashed.withLock { stash in
            if let replaced = stash.values.removeValue(forKey: key) { stash.bytes -= replaced.value.count }
            while let first = stash.order.first,
                first.expires <= now || stash.order.count >= bounds.count || stash.bytes + value.count > bounds.bytes
            {
                stash.order.removeFirst()
                // The key may have been taken, or stashed again since: only this entry's value goes.
                if let kept = stash.values[first.key], kept.expires == first.expires {
                    stash.values[first.key] = nil
                    stash.bytes -= kept.value.count
                }
            }
            stash.values[key] = (value, now + ttl)
            stash.order.append((key, now + ttl))
            stash.bytes += value.count
        }
    }

    public func takeStashed(_ key: String) async -> [UInt8]? {
        let now = self.now()
        return self.stashed.withLock { stash in
            guard let kept = stash.values.removeValue(forKey: key) else { return nil }
            stash.bytes -= kept.value.count
            return kept.expires > now ? kept.value : nil
        }
    }

    public func connection(_ id: ConnectionID) async -> RegisteredConnection? {
        self.byConnection.withLock(id.rawValue) { state in
            state.info[id].map { RegisteredConnection(info: $0, rooms: Self.sorted(state.rooms[id])) }
        }
    }

    public func connections(after cursor: String?, limit: Int) async -> Page<RegisteredConnection> {
        Self.page(
            self.byConnection.flatMap { state in
                Self.candidates(state.info.keys.map(\.rawValue), after: cursor, limit: limit).map { key in
                    let id = ConnectionID(key)!
                    return (key, RegisteredConnection(info: state.info[id]!, rooms: Self.sorted(state.rooms[id])))
                }
            },
            limit: limit
        )
    }

    public func rooms(after cursor: String?, limit: Int) async -> Page<(room: RoomID, members: Int)> {
        Self.page(
            self.byRoom.flatMap { state in
                Self.candidates(state.members.keys.map(\.rawValue), after: cursor, limit: limit).map { key in
                    let room = RoomID(key)!
                    return (key, (room, state.members[room]!.count))
                }
            },
            limit: limit
        )
    }

    public func members(of room: RoomID, after cursor: String?, limit: Int) async -> Page<RoomMember> {
        let candidates = self.byRoom.withLock(room.rawValue) { state in
            let members = state.members[room] ?? [:]
            return Self.candidates(members.keys.map(\.rawValue), after: cursor, limit: limit).map { key in
                let id = ConnectionID(key)!
                return (key, RoomMember(connection: id, userId: members[id]!))
            }
        }
        return Self.page(candidates, limit: limit)
    }

    public var localRoomCount: Int { self.roomCount.load(ordering: .relaxed) }

    private static func sorted(_ rooms: Set<RoomID>?) -> [RoomID] {
        (rooms ?? []).sorted { $0.rawValue < $1.rawValue }
    }

    /// The first `limit` keys after `cursor`, in order, and one more: taking these from each stripe is enough to
    /// make the merged page and to know whether another page follows it.
    private static func candidates(_ keys: [String], after cursor: String?, limit: Int) -> ArraySlice<String> {
        keys.filter { cursor == nil || $0 > cursor! }.sorted().prefix(max(limit, 0) + 1)
    }

    private static func page<Item>(_ candidates: [(String, Item)], limit: Int) -> Page<Item> {
        let sorted = candidates.sorted { $0.0 < $1.0 }
        let selected = sorted.prefix(max(limit, 0))
        return Page(items: selected.map(\.1), next: sorted.count > selected.count ? selected.last?.0 : nil)
    }
}
