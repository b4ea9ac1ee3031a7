/// What the gateway knows about a connection from its handshake: the registry entry that the management API
/// reports and that integrations receive as `requestContext`.
public struct ConnectionInfo: Sendable, Hashable {
    public var id: ConnectionID
    /// From the `userId` query parameter (JWT `sub` once auth is on); `anonymous` otherwise, as in the seeds.
    public var userId: String
    /// Milliseconds since 1970.
    public var connectedAt: Int64
    public var sourceIp: String
    public var userAgent: String
    /// The first path segment of the upgrade request (`/prod` → `prod`), or `nil` for `/` and `/ws`.
    public var stage: String?
    /// The `Host` the client connected to, reported to integrations as `domainName`.
    public var domainName: String
    /// What `$connect` attached (an integration's `context`, JWT claims): integrations receive it as
    /// `requestContext.authorizer`.
    public var authorizer: [String: String]
    /// A Socket.IO socket with connection state recovery on: its private session id and namespace, kept with its
    /// registration so that whoever ends it (its node, or a survivor sweeping a dead node) can leave it for its
    /// reconnect. Never reported.
    public var recoverable: Recoverable?

    public struct Recoverable: Sendable, Hashable {
        public var pid: String
        public var namespace: String

        public init(pid: String, namespace: String) {
            self.pid = pid
            self.namespace = namespace
        }
    }

    public init(
        id: ConnectionID,
        userId: String,
        connectedAt: Int64,
        sourceIp: String,
        userAgent: String,
        stage: String?,
        domainName: String = "localhost",
        authorizer: [String: String] = [:],
        recoverable: Recoverable? = nil
    ) {
        self.id = id
        self.userId = userId
        self.connectedAt = connectedAt
        self.sourceIp = sourceIp
        self.userAgent = userAgent
        self.stage = stage
        self.domainName = domainName
        self.authorizer = authorizer
        self.recoverable = recoverable
    }
}

/// A frame on its way to clients: the payload is encoded once and shared by every recipient.
public struct OutboundFrame: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        case text
        case binary
    }

    public var kind: Kind
    public var bytes: [UInt8]

    public init(_ kind: Kind, _ bytes: [UInt8]) {
        self.kind = kind
        self.bytes = bytes
    }

    public static func text(_ value: JSONValue) -> OutboundFrame {
        OutboundFrame(.text, value.jsonBytes)
    }
}

/// Who receives a frame. Every audience is resolved where the connections live, so the sender never loops over
/// recipients itself: one publish per message, whatever the audience's size.
public enum Audience: Sendable, Hashable {
    case connection(ConnectionID)
    /// The room's members, optionally all but one (the joiner of a `userJoined`).
    case room(RoomID, excluding: ConnectionID? = nil)
    case user(String)
    case everyone
}
