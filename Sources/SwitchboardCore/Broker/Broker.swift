/// Delivers frames to the connections of this node. The gateway implements it; a broker calls it for every frame
/// that reaches the node, whether published here or, in a cluster, on another node.
public protocol LocalDelivery: Sendable {
    func deliver(_ frame: OutboundFrame, to audience: Audience)
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

/// Fan-out and the registry of connections and rooms, across however many nodes there are.
///
/// The gateway calls only this protocol, so a single node (``InMemoryBroker``) and a cluster (a Redis broker)
/// are interchangeable. `publish` is synchronous and never waits: it is on the hot path of every room message
/// and must cost one enqueue however many recipients there are. The registry calls are `async` because in a
/// cluster they are network round trips; the gateway keeps a connection's messages in order around them.
public protocol Broker: Sendable {
    /// Records a connection that has passed `$connect`.
    func register(_ connection: ConnectionInfo) async throws
    /// Forgets a connection; called once, from its `$disconnect`.
    func unregister(_ connection: ConnectionID) async
    /// Adds a member to a room and returns the roster including it, listing at most `limit` user ids.
    func join(_ room: RoomID, member: RoomMember, listing limit: Int) async throws -> RoomRoster
    func leave(_ room: RoomID, member: RoomMember) async
    /// Sends a frame to an audience wherever its connections are.
    func publish(_ frame: OutboundFrame, to audience: Audience)
    /// The registry entry of a connection on any node, or `nil` when it is gone.
    func connection(_ id: ConnectionID) async -> ConnectionInfo?
}
