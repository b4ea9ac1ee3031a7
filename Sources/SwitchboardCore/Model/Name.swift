/// Room ids and user ids as the gateway accepts them.
///
/// They end up in frames, logs and (in a cluster) Redis keys, so they are held to a short, fixed character set:
/// letters, digits and `_ - . : @`, at most `maximumLength` UTF-8 bytes. Anything else is refused with a message
/// rather than escaped, so no key or log line can be forged from a client's input.
public enum Name {
    public static let maximumLength = 128

    /// Why `candidate` is not an acceptable name, or `nil` when it is.
    public static func problem(with candidate: String, field: String) -> String? {
        if candidate.isEmpty { return "\(field) must not be empty" }
        if candidate.utf8.count > Self.maximumLength { return "\(field) is longer than \(Self.maximumLength) bytes" }
        if !candidate.utf8.allSatisfy(Self.isAllowed) {
            return "\(field) may contain only letters, digits and _ - . : @"
        }
        return nil
    }

    public static func isAllowedByte(_ byte: UInt8) -> Bool { self.isAllowed(byte) }

    static func isAllowed(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        case UInt8(ascii: "_"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: ":"), UInt8(ascii: "@"): true
        default: false
        }
    }
}

/// A room's id, validated by ``Name``.
public struct RoomID: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String

    public init?(_ rawValue: String) {
        guard Name.problem(with: rawValue, field: "roomId") == nil else { return nil }
        self.rawValue = rawValue
    }

    public var description: String { self.rawValue }
}
