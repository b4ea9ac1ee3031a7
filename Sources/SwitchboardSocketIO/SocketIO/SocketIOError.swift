/// Why Socket.IO input was refused, or why a Socket.IO connection was closed. Errors compare by kind only, so
/// callers and tests match on the kind while the message keeps the detail.
public struct SocketIOError: Error, Hashable, Sendable, CustomStringConvertible {
    private enum Code: Hashable, Sendable {
        case emptyPacket
        case unknownPacketType
        case invalidAttachments
        case tooManyAttachments
        case invalidAckID
        case invalidJSON
        case invalidData
        case invalidPlaceholder
        case unexpectedBinary
        case unexpectedText
        case invalidState
        case connectTimeout
    }

    private let code: Code
    /// What went wrong, for logs.
    public let message: String

    private init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { self.message }

    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code }
    public func hash(into hasher: inout Hasher) { hasher.combine(self.code) }

    public static let emptyPacket = Self(.emptyPacket, "empty Socket.IO packet")
    public static let unknownPacketType = Self(.unknownPacketType, "unknown Socket.IO packet type: types are 0 to 6")
    public static let invalidAttachments = Self(.invalidAttachments, "binary packet without a valid '<count>-' attachment header")
    public static let tooManyAttachments = Self(.tooManyAttachments, "binary packet announces too many attachments")
    public static let invalidAckID = Self(.invalidAckID, "invalid ack id")
    public static let invalidJSON = Self(.invalidJSON, "packet data is not valid JSON")
    public static let invalidData = Self(.invalidData, "packet data does not fit its packet type")
    public static let invalidPlaceholder = Self(.invalidPlaceholder, "binary placeholder does not name a received attachment")
    public static let unexpectedBinary = Self(.unexpectedBinary, "binary message while no binary packet waits for attachments")
    public static let unexpectedText = Self(.unexpectedText, "text packet while a binary packet still waits for attachments")
    public static let invalidState = Self(.invalidState, "packet not allowed in the namespace's state")
    public static let connectTimeout = Self(.connectTimeout, "no namespace connected within the connect timeout")

    static func tooManyAttachments(limit: Int) -> Self {
        Self(.tooManyAttachments, "binary packet announces more than \(limit) attachments")
    }
    static func invalidAckID(_ reason: String) -> Self { Self(.invalidAckID, "invalid ack id: \(reason)") }
    static func invalidJSON(_ reason: String) -> Self { Self(.invalidJSON, "packet data is not valid JSON: \(reason)") }
    static func invalidData(_ reason: String) -> Self { Self(.invalidData, reason) }
    static func invalidState(_ reason: String) -> Self { Self(.invalidState, reason) }
}
