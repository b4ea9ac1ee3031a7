/// Standard base64 (RFC 4648 §4) for binary messages in long-polling payloads, written here because the
/// project keeps Foundation out of its protocol targets.
enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// 255 marks a byte outside the alphabet.
    private static let values: [UInt8] = {
        var table = [UInt8](repeating: 255, count: 256)
        for (index, byte) in alphabet.enumerated() { table[Int(byte)] = UInt8(index) }
        return table
    }()

    static func encodedCount(_ byteCount: Int) -> Int { (byteCount + 2) / 3 * 4 }

    static func encode(_ bytes: some Collection<UInt8>, into output: inout [UInt8]) {
        var iterator = bytes.makeIterator()
        while let first = iterator.next() {
            let second = iterator.next()
            let third = iterator.next()
            let group = UInt32(first) << 16 | UInt32(second ?? 0) << 8 | UInt32(third ?? 0)
            output.append(alphabet[Int(group >> 18 & 63)])
            output.append(alphabet[Int(group >> 12 & 63)])
            output.append(second == nil ? UInt8(ascii: "=") : alphabet[Int(group >> 6 & 63)])
            output.append(third == nil ? UInt8(ascii: "=") : alphabet[Int(group & 63)])
        }
    }

    /// Decodes padded or unpadded base64; `nil` for any byte outside the alphabet, misplaced padding or a length
    /// no encoder produces. Browsers and Node pad, but accepting the unpadded form costs nothing.
    static func decode(_ text: ArraySlice<UInt8>) -> [UInt8]? {
        var end = text.endIndex
        if text.count % 4 == 0 {
            while end > text.startIndex, text[end - 1] == UInt8(ascii: "="), text.endIndex - end < 2 { end -= 1 }
        }
        let digits = end - text.startIndex
        guard digits % 4 != 1 else { return nil }
        var output: [UInt8] = []
        output.reserveCapacity(digits / 4 * 3 + 2)
        var group: UInt32 = 0
        var count = 0
        for byte in text[text.startIndex..<end] {
            let value = values[Int(byte)]
            guard value != 255 else { return nil }
            group = group << 6 | UInt32(value)
            count += 1
            if count == 4 {
                output.append(UInt8(group >> 16 & 0xFF))
                output.append(UInt8(group >> 8 & 0xFF))
                output.append(UInt8(group & 0xFF))
                (group, count) = (0, 0)
            }
        }
        switch count {
        case 2: output.append(UInt8(group >> 4 & 0xFF))
        case 3:
            output.append(UInt8(group >> 10 & 0xFF))
            output.append(UInt8(group >> 2 & 0xFF))
        default: break
        }
        return output
    }
}
