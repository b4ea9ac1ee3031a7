/// Identifies one WebSocket connection, on this node or any other.
///
/// Shaped like API Gateway's ids (`L0SM9cOFvHcCIhw=`): 11 random bytes as 16 base64 characters, using the URL-safe
/// alphabet so an id can sit in a path. Eighty-eight bits from the system's CSPRNG make ids unguessable and, in
/// practice, unique across nodes without coordination.
public struct ConnectionID: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String

    /// Accepts an id read from a request: 1–128 characters of the URL-safe base64 alphabet and `=`.
    public init?(_ rawValue: some StringProtocol) {
        guard (1...128).contains(rawValue.utf8.count), rawValue.utf8.allSatisfy(Self.isIDCharacter) else { return nil }
        self.rawValue = String(rawValue)
    }

    private init(unchecked rawValue: String) {
        self.rawValue = rawValue
    }

    public var description: String { self.rawValue }

    /// A fresh id from `generator` (the system's CSPRNG unless a test seeds its own).
    public static func random(using generator: inout some RandomNumberGenerator) -> ConnectionID {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
        // 11 bytes = three 24-bit groups of four characters, the last group two bytes short: 15 characters and `=`.
        // Two draws, not one per byte: with the system generator each draw is a `getrandom` call.
        let (high, low) = (generator.next(), generator.next())
        let bytes = (0..<8).map { UInt8(truncatingIfNeeded: high >> ($0 * 8)) } + (0..<3).map { UInt8(truncatingIfNeeded: low >> ($0 * 8)) } + [0]
        var characters = [UInt8]()
        characters.reserveCapacity(16)
        for group in stride(from: 0, to: 12, by: 3) {
            let word = UInt32(bytes[group]) << 16 | UInt32(bytes[group + 1]) << 8 | UInt32(bytes[group + 2])
            for shift in [18, 12, 6, 0] { characters.append(alphabet[Int(word >> UInt32(shift) & 0x3F)]) }
        }
        characters[15] = UInt8(ascii: "=")
        return ConnectionID(unchecked: String(decoding: characters, as: UTF8.self))
    }

    public static func random() -> ConnectionID {
        var generator = SystemRandomNumberGenerator()
        return self.random(using: &generator)
    }

    private static func isIDCharacter(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        case UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "="), UInt8(ascii: "+"), UInt8(ascii: "/"): true
        default: false
        }
    }
}
