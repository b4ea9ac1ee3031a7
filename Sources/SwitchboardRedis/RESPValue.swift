import NIOCore

/// A value of the Redis protocol, RESP2 and RESP3 (https://redis.io/docs/latest/develop/reference/protocol-spec/).
public enum RESPValue: Sendable, Hashable {
    case simpleString(String)
    case error(String)
    case integer(Int64)
    /// A bulk string; `nil` is RESP2's null bulk string.
    case bulkString([UInt8]?)
    /// An array; `nil` is RESP2's null array.
    case array([RESPValue]?)
    // RESP3
    case null
    case boolean(Bool)
    case double(Double)
    case map([(RESPValue, RESPValue)])
    case set([RESPValue])
    /// Out-of-band data (pub/sub messages under RESP3).
    case push([RESPValue])

    public static func == (lhs: RESPValue, rhs: RESPValue) -> Bool {
        switch (lhs, rhs) {
        case (.simpleString(let a), .simpleString(let b)), (.error(let a), .error(let b)): a == b
        case (.integer(let a), .integer(let b)): a == b
        case (.bulkString(let a), .bulkString(let b)): a == b
        case (.array(let a), .array(let b)): a == b
        case (.null, .null): true
        case (.boolean(let a), .boolean(let b)): a == b
        case (.double(let a), .double(let b)): a == b
        case (.map(let a), .map(let b)): a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        case (.set(let a), .set(let b)), (.push(let a), .push(let b)): a == b
        default: false
        }
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(self.string)
    }

    /// The value as text: simple and bulk strings, integers.
    public var string: String? {
        switch self {
        case .simpleString(let text): text
        case .bulkString(let bytes?): String(decoding: bytes, as: UTF8.self)
        case .integer(let value): String(value)
        default: nil
        }
    }

    public var bytes: [UInt8]? {
        switch self {
        case .bulkString(let bytes): bytes
        case .simpleString(let text): Array(text.utf8)
        default: nil
        }
    }

    public var int: Int64? {
        switch self {
        case .integer(let value): value
        case .bulkString, .simpleString: self.string.flatMap { Int64($0) }
        default: nil
        }
    }

    /// Elements of arrays, sets and pushes; a map's keys and values in turn.
    public var elements: [RESPValue]? {
        switch self {
        case .array(let values): values
        case .set(let values), .push(let values): values
        case .map(let pairs): pairs.flatMap { [$0.0, $0.1] }
        default: nil
        }
    }

    public var isNull: Bool {
        switch self {
        case .null, .bulkString(nil), .array(nil): true
        default: false
        }
    }
}

/// A malformed reply: the connection cannot be trusted after it and is closed.
public struct RESPParseError: Error, CustomStringConvertible {
    public let reason: String
    public var description: String { "malformed Redis reply: \(self.reason)" }
}

/// Incremental RESP parsing: returns `nil` until a whole value has arrived, consuming nothing in that case.
enum RESPParser {
    static let maximumDepth = 32

    static func parse(_ buffer: inout ByteBuffer) throws(RESPParseError) -> RESPValue? {
        var copy = buffer
        guard let value = try self.value(&copy, depth: 0) else { return nil }
        buffer = copy
        return value
    }

    private static func line(_ buffer: inout ByteBuffer) -> String? {
        let view = buffer.readableBytesView
        guard let cr = view.firstIndex(of: 0x0D), view.index(after: cr) < view.endIndex, view[view.index(after: cr)] == 0x0A else {
            return nil
        }
        let length = cr - view.startIndex
        let text = buffer.readString(length: length)
        buffer.moveReaderIndex(forwardBy: 2)
        return text
    }

    private static func value(_ buffer: inout ByteBuffer, depth: Int) throws(RESPParseError) -> RESPValue? {
        guard depth < self.maximumDepth else { throw RESPParseError(reason: "nested deeper than \(self.maximumDepth)") }
        guard let type = buffer.readInteger(as: UInt8.self) else { return nil }
        guard let header = self.line(&buffer) else { return nil }
        func count() throws(RESPParseError) -> Int {
            guard let count = Int(header), count >= -1 else { throw RESPParseError(reason: "bad length '\(header)'") }
            return count
        }
        func elements(_ n: Int) throws(RESPParseError) -> [RESPValue]? {
            var values: [RESPValue] = []
            values.reserveCapacity(min(n, 1024))
            for _ in 0..<n {
                guard let element = try self.value(&buffer, depth: depth + 1) else { return nil }
                values.append(element)
            }
            return values
        }
        switch type {
        case UInt8(ascii: "+"): return .simpleString(header)
        case UInt8(ascii: "-"): return .error(header)
        case UInt8(ascii: ":"):
            guard let value = Int64(header) else { throw RESPParseError(reason: "bad integer '\(header)'") }
            return .integer(value)
        case UInt8(ascii: "$"), UInt8(ascii: "="), UInt8(ascii: "!"):
            let length = try count()
            if length == -1 { return .bulkString(nil) }
            guard buffer.readableBytes >= length + 2, let bytes = buffer.readBytes(length: length) else { return nil }
            buffer.moveReaderIndex(forwardBy: 2)
            if type == UInt8(ascii: "!") { return .error(String(decoding: bytes, as: UTF8.self)) }
            return .bulkString(bytes)
        case UInt8(ascii: "*"), UInt8(ascii: "~"), UInt8(ascii: ">"):
            let n = try count()
            if n == -1 { return .array(nil) }
            guard let values = try elements(n) else { return nil }
            return type == UInt8(ascii: "*") ? .array(values) : type == UInt8(ascii: "~") ? .set(values) : .push(values)
        case UInt8(ascii: "%"):
            let n = try count()
            guard n >= 0, let values = try elements(n * 2) else { return n < 0 ? .map([]) : nil }
            return .map(stride(from: 0, to: values.count, by: 2).map { (values[$0], values[$0 + 1]) })
        case UInt8(ascii: "_"): return .null
        case UInt8(ascii: "#"): return .boolean(header == "t")
        case UInt8(ascii: ","):
            guard let value = Double(header) ?? (header == "inf" ? .infinity : header == "-inf" ? -.infinity : nil) else {
                throw RESPParseError(reason: "bad double '\(header)'")
            }
            return .double(value)
        case UInt8(ascii: "("): return .bulkString(Array(header.utf8))  // big number, as text
        default:
            throw RESPParseError(reason: "unknown type byte \(type)")
        }
    }

    /// A command as RESP: an array of bulk strings.
    static func encode(_ arguments: [RedisArgument], into buffer: inout ByteBuffer) {
        buffer.writeString("*\(arguments.count)\r\n")
        for argument in arguments {
            switch argument {
            case .string(let text):
                buffer.writeString("$\(text.utf8.count)\r\n")
                buffer.writeString(text)
            case .bytes(let bytes):
                buffer.writeString("$\(bytes.count)\r\n")
                buffer.writeBytes(bytes)
            }
            buffer.writeString("\r\n")
        }
    }
}

/// One argument of a command: text or raw bytes.
public enum RedisArgument: Sendable, Hashable, ExpressibleByStringLiteral, ExpressibleByStringInterpolation {
    case string(String)
    case bytes([UInt8])

    public init(stringLiteral value: String) {
        self = .string(value)
    }

    public init(_ value: some BinaryInteger) {
        self = .string(String(value))
    }
}
