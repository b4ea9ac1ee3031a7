/// Delivers frames and commands to the connections of this node. The gateway implements it; a broker calls it
/// for everything that reaches the node, whether sent here or, in a cluster, on another node.
public protocol LocalDelivery: Sendable {
    func deliver(_ frame: OutboundFrame, to audience: Audience)
    func perform(_ command: ConnectionCommand, on connection: ConnectionID)
    /// A frame for one connection of this node, refused when its outbound queue has no room for it.
    func deliverDirect(_ frame: OutboundFrame, to connection: ConnectionID) async -> DirectDelivery
    /// How many connections of this node an audience reaches now.
    func count(_ audience: Audience) async -> Int
    /// When each of these connections of this node last sent a message (milliseconds since 1970).
    func lastActive(_ ids: [ConnectionID]) async -> [ConnectionID: Int64]
}

/// What happened to a frame sent straight to one connection.
public enum DirectDelivery: Sendable, Hashable {
    case delivered
    /// Its outbound queue is full (API Gateway's `LimitExceededException`).
    case busy
    /// No such connection (on this node, for ``LocalDelivery``; anywhere, for ``Broker``).
    case notHere
}

/// Something done to one connection on behalf of a backend, wherever the connection lives.
public enum ConnectionCommand: Sendable, Hashable {
    /// Close it with this code and reason (its `$disconnect` runs as for any close).
    case close(code: UInt16, reason: String)
    /// Join a room as if the client had sent `joinRoom`.
    case join(RoomID)
    /// Leave a room as if the client had sent `leaveRoom`.
    case leave(RoomID)
}

/// A connection's membership in a room.
public struct RoomMember: Sendable, Hashable {
    public var connection: ConnectionID
    public var userId: String

    public init(connection: ConnectionID, userId: String) {
        self.connection = connection
        self.userId = userId
    }
}

/// A room's members as a joiner sees them: a capped list of user ids and the full count.
public struct RoomRoster: Sendable, Hashable {
    public var userIds: [String]
    public var count: Int

    public init(userIds: [String], count: Int) {
        self.userIds = userIds
        self.count = count
    }
}

/// What a rejoining client missed, one page at a time.
public enum RoomHistory: Sendable, Hashable {
    /// The kept messages after the requested offset, oldest first, at most the page's limit: a full page means
    /// there may be more after its last offset.
    case messages([HistoryEntry])
    /// Messages after the requested offset were dropped (by the length, age or byte bound); `oldest` is the first kept.
    case lost(oldest: Int64)
    /// The history could not be read now (a cluster without Redis): whether anything was missed is unknown.
    case unavailable
}

/// One kept room message and its offset.
public struct HistoryEntry: Sendable, Hashable {
    public var offset: Int64
    public var frame: OutboundFrame

    public init(offset: Int64, frame: OutboundFrame) {
        self.offset = offset
        self.frame = frame
    }
}

/// How much history rooms keep.
public struct HistoryLimits: Sendable, Hashable {
    /// Messages per room.
    public var messages: Int
    public var age: Duration
    /// Payload bytes kept over all rooms of a node (single-node broker): past it the oldest messages go first,
    /// whichever room they are in, so no number of rooms can grow memory without bound.
    public var totalBytes: Int

    public init(messages: Int = 100, age: Duration = .seconds(300), totalBytes: Int = 256 << 20) {
        self.messages = messages
        self.age = age
        self.totalBytes = totalBytes
    }
}

/// A registry entry with the rooms the connection is in.
public struct RegisteredConnection: Sendable, Hashable {
    public var info: ConnectionInfo
    public var rooms: [RoomID]

    public init(info: ConnectionInfo, rooms: [RoomID]) {
        self.info = info
        self.rooms = rooms
    }
}

/// One page of a listing, ordered by key; `next` is the cursor for the following page, `nil` on the last one.
public struct Page<Item: Sendable>: Sendable {
    public var items: [Item]
    public var next: String?

    public init(items: [Item], next: String?) {
        self.items = items
        self.next = next
    }
}

/// Fan-out and the registry of connections and rooms, across however many nodes there are.
///
/// The gateway calls only this protocol, so a single node (``InMemoryBroker``) and a cluster (a Redis broker)
/// are interchangeable. `publish` and `send` are synchronous and never wait: `publish` is on the hot path of every
/// room message and must cost one enqueue however many recipients there are. The registry calls are `async`
/// because in a cluster they are network round trips; the gateway keeps a connection's messages in order around them.
public protocol Broker: Sendable {
    /// Records a connection that has passed `$connect`.
    func register(_ connection: ConnectionInfo) async throws
    /// Records it without suspending, when the registry needs no I/O (a single node's): `false` when it cannot, and
    /// nothing was recorded. A handshake that needs nothing else asynchronous then never leaves its event loop.
    func registerNow(_ connection: ConnectionInfo) -> Bool
    /// Forgets a connection; called once, when it closes.
    /// - Returns: whether this node runs the connection's `$disconnect`: `false` when the cluster already ran it
    ///   (it swept this node while it was cut off from Redis). So each `$disconnect` runs exactly once.
    @discardableResult
    func unregister(_ connection: ConnectionID) async -> Bool
    /// Adds a member to a room and returns the roster including it, listing at most `limit` user ids.
    func join(_ room: RoomID, member: RoomMember, listing limit: Int) async throws -> RoomRoster
    func leave(_ room: RoomID, member: RoomMember) async
    /// Sends a frame to an audience wherever its connections are.
    func publish(_ frame: OutboundFrame, to audience: Audience)
    /// Appends a message to its room's history under the room's next offset, then sends it to the room. Offsets of
    /// one room increase by one per message across all nodes.
    func publish(_ message: RoomMessage)
    /// At most `limit` of the room's messages after `offset`, oldest first, or `.lost` when some of them are no
    /// longer kept. Paged, so a rejoin reads history as fast as its client takes it, never all of it at once.
    func history(of room: RoomID, after offset: Int64, limit: Int) async -> RoomHistory
    /// The room's last assigned offset (0 before its first message).
    func lastOffset(of room: RoomID) async -> Int64
    /// Keeps a small value under `key` for `ttl`, on every node's view, replacing what was there: what a dropped
    /// Socket.IO socket leaves for its reconnect (connection state recovery). Best effort: lost when the shared
    /// state cannot be reached, or past the single-node bound.
    func stash(_ value: [UInt8], under key: String, for ttl: Duration) async
    /// Reads and forgets the value under `key`, once: `nil` when there is none, or it expired.
    func takeStashed(_ key: String) async -> [UInt8]?
    /// Runs a command on a connection wherever it is.
    func send(_ command: ConnectionCommand, to connection: ConnectionID)
    /// The registry entry of a connection on any node, or `nil` when it is gone.
    func connection(_ id: ConnectionID) async -> RegisteredConnection?
    /// Background work (pub/sub, heartbeats, sweeping) until the task is cancelled; nothing for a single node.
    func run() async
    /// Whether the broker reaches its shared state; a single node always does.
    var isConnected: Bool { get }
    /// Rooms with at least one member on this node, kept as a count: O(1), for metrics and stats.
    var localRoomCount: Int { get }
    /// This node's connections, for what only they can answer (queues, activity).
    var localDelivery: any LocalDelivery { get }
    /// Registered connections ordered by id, starting after `cursor`.
    func connections(after cursor: String?, limit: Int) async -> Page<RegisteredConnection>
    /// Rooms with their member counts, ordered by id, starting after `cursor`.
    func rooms(after cursor: String?, limit: Int) async -> Page<(room: RoomID, members: Int)>
    /// A room's members ordered by connection id, starting after `cursor`.
    func members(of room: RoomID, after cursor: String?, limit: Int) async -> Page<RoomMember>
    /// Whether ``relay(_:to:sent:)`` can reach other nodes (a cluster); a single node has none.
    var relaysToNodes: Bool { get }
    /// Sends opaque bytes to the gateway of another node (Engine.IO requests for a session it owns, and their
    /// answers), on that node's channel. `sent` runs once with whether any node was listening on it.
    func relay(_ payload: [UInt8], to node: String, sent: @escaping @Sendable (Bool) -> Void)
}

extension Broker {
    public func run() async {}
    public var isConnected: Bool { true }
    public func registerNow(_ connection: ConnectionInfo) -> Bool { false }
    public var relaysToNodes: Bool { false }
    public func relay(_ payload: [UInt8], to node: String, sent: @escaping @Sendable (Bool) -> Void) { sent(false) }

    /// Sends a frame to one connection wherever it is (`POST @connections/{id}`): written at once on this node, or
    /// refused when its queue is full; published to its node when another node holds it.
    public func post(_ frame: OutboundFrame, to id: ConnectionID) async -> DirectDelivery {
        let local = await self.localDelivery.deliverDirect(frame, to: id)
        guard local == .notHere else { return local }
        guard await self.connection(id) != nil else { return .notHere }
        self.publish(frame, to: .connection(id))
        return .delivered
    }

    /// How many connections of this node an audience reaches now: what a management publish reports as delivered.
    public func localReach(_ audience: Audience) async -> Int {
        await self.localDelivery.count(audience)
    }

    /// When a connection last sent a message, where this node knows it; its connection time otherwise.
    public func lastActive(_ connections: [RegisteredConnection]) async -> [ConnectionID: Int64] {
        let known = await self.localDelivery.lastActive(connections.map(\.info.id))
        return Dictionary(connections.map { ($0.info.id, known[$0.info.id] ?? $0.info.connectedAt) }) { first, _ in first }
    }
}
