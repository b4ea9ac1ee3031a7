/// Why Engine.IO input was refused. Errors compare by kind only, so callers and tests match on the kind
/// (`error == .payloadTooLarge`) while the message keeps the detail a user needs.
public struct EngineIOError: Error, Hashable, Sendable, CustomStringConvertible {
    private enum Code: Hashable, Sendable {
        case emptyPacket
        case unknownPacketType
        case invalidBase64
        case invalidText
        case payloadTooLarge
        case invalidHandshake
        case requestOverlap
        case wrongTransport
        case unknownSession
    }

    private let code: Code
    /// What went wrong, for logs and for the body of an HTTP error answer.
    public let message: String

    private init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { self.message }

    /// The status an HTTP request refused with this error is answered with (413 for a body over the limit, as
    /// the reference server does; 400 otherwise).
    public var httpStatus: Int { self.code == .payloadTooLarge ? 413 : 400 }

    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code }
    public func hash(into hasher: inout Hasher) { hasher.combine(self.code) }

    public static let emptyPacket = Self(.emptyPacket, "empty Engine.IO packet")
    public static let unknownPacketType = Self(.unknownPacketType, "unknown Engine.IO packet type")
    public static let invalidBase64 = Self(.invalidBase64, "binary packet is not valid base64")
    public static let invalidText = Self(.invalidText, "payload is not valid UTF-8")
    public static let payloadTooLarge = Self(.payloadTooLarge, "payload exceeds maxPayload")
    public static let invalidHandshake = Self(.invalidHandshake, "open packet does not carry a valid handshake")
    public static let requestOverlap = Self(.requestOverlap, "overlap from client: a second GET while one is waiting")
    public static let wrongTransport = Self(.wrongTransport, "the session does not use this transport")
    /// The reference server's words for a request naming a session that is gone.
    public static let unknownSession = Self(.unknownSession, "Session ID unknown")

    static func unknownPacketType(_ byte: UInt8) -> Self {
        Self(.unknownPacketType, "unknown Engine.IO packet type \(Self.quote(byte)): types are 0 to 6")
    }

    static func payloadTooLarge(_ count: Int, limit: Int) -> Self {
        Self(.payloadTooLarge, "payload of \(count) bytes exceeds maxPayload (\(limit) bytes)")
    }

    static func invalidHandshake(_ reason: String) -> Self { Self(.invalidHandshake, "invalid open packet: \(reason)") }

    static func wrongTransport(_ reason: String) -> Self { Self(.wrongTransport, reason) }

    private static func quote(_ byte: UInt8) -> String {
        (0x20..<0x7F).contains(byte) ? "'\(Character(Unicode.Scalar(byte)))'" : "byte \(byte)"
    }
}
