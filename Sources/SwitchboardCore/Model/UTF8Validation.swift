/// UTF-8 validation without building a `String` (RFC 3629: no overlongs, no surrogates, nothing past U+10FFFF).
public enum UTF8Validation {
    /// The hot path (every text message): eight ASCII bytes at a time, then the full check from the first byte with
    /// its high bit set. Every byte before that one is ASCII, so it starts on a character boundary.
    public static func isValid(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var index = 0
        while index + 8 <= bytes.count, bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self) & 0x8080_8080_8080_8080 == 0 {
            index += 8
        }
        return Self.isValid(bytes[index...])
    }

    public static func isValid(_ bytes: some Collection<UInt8>) -> Bool {
        var iterator = bytes.makeIterator()
        while let lead = iterator.next() {
            if lead < 0x80 { continue }
            let count: Int
            var minimum: UInt32
            var scalar: UInt32
            switch lead {
            case 0xC2...0xDF: (count, minimum, scalar) = (1, 0x80, UInt32(lead & 0x1F))
            case 0xE0...0xEF: (count, minimum, scalar) = (2, 0x800, UInt32(lead & 0x0F))
            case 0xF0...0xF4: (count, minimum, scalar) = (3, 0x10000, UInt32(lead & 0x07))
            default: return false
            }
            for _ in 0..<count {
                guard let next = iterator.next(), next & 0xC0 == 0x80 else { return false }
                scalar = scalar << 6 | UInt32(next & 0x3F)
            }
            guard scalar >= minimum, scalar <= 0x10FFFF, !(0xD800...0xDFFF).contains(scalar) else { return false }
        }
        return true
    }
}
