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

/// A reply the client cannot use: malformed, nested too deep, or larger than `RedisConfiguration.maximumReplyBytes`.
/// The stream is out of step after it, so the connection is closed.
public struct RESPParseError: Error, CustomStringConvertible {
    public let reason: String
    public var description: String { "bad Redis reply: \(self.reason)" }
}

/// Reads RESP values from a byte stream that arrives in pieces of any size.
///
/// It consumes each element as soon as it is whole and keeps the aggregates it is inside on a stack, so the next read
/// resumes where the last one stopped: the work is linear in the size of a reply however its bytes are split (a
/// parser that restarts from a value's first byte on each read costs the square of its size). Every length and count
/// comes from the server, so each is checked against what is left of `maximumReplyBytes` as soon as its header
/// arrives, before any arithmetic and before the bytes it announces: a hostile or broken server can neither trap the
/// process nor make it buffer more than the bound. After it throws, the stream is out of step: do not use it again.
struct RESPDecoder: NIOSingleStepByteToMessageDecoder {
    typealias InboundOut = RESPValue

    /// Values nested deeper than this are refused, so a reply cannot grow the stack without bound.
    static let maximumDepth = 32
    /// Every type byte RESP2 and RESP3 define; anything else is refused as soon as it arrives.
    private static let types = Array("+-:$=!*~>%_#,(".utf8)

    /// An aggregate whose header has been read and whose elements are arriving.
    private struct Frame {
        let type: UInt8
        /// Elements still to come (a map counts its keys and its values).
        var missing: Int
        var elements: [RESPValue] = []

        var value: RESPValue {
            switch self.type {
            case UInt8(ascii: "~"): .set(self.elements)
            case UInt8(ascii: ">"): .push(self.elements)
            case UInt8(ascii: "%"): .map(stride(from: 0, to: self.elements.count, by: 2).map { (self.elements[$0], self.elements[$0 + 1]) })
            default: .array(self.elements)
            }
        }
    }

    let maximumReplyBytes: Int
    /// The aggregates the next element belongs to, outermost first.
    private var stack: [Frame] = []
    /// Bytes of the current top-level reply read so far, a bulk string's body counted as soon as its header arrives.
    private var replyBytes = 0
    /// A bulk string (`$`, `=` or `!`) whose header has been read and whose body and CR LF have not all arrived.
    private var pendingBody: (type: UInt8, length: Int)?
    /// Bytes of an incomplete line already searched for its LF, so a line that trickles in is searched once.
    private var scannedLineBytes = 0
    /// Bytes searched or copied so far: tests use it to check that the work is linear in the bytes fed.
    private(set) var bytesExamined = 0

    /// - Parameter maximumReplyBytes: the most bytes one top-level reply may take on the wire, nested elements
    ///   included (a negative bound is taken as 0).
    init(maximumReplyBytes: Int) {
        self.maximumReplyBytes = max(0, maximumReplyBytes)
    }

    /// What is left of the bound for the current reply; never negative, since every addition to `replyBytes` is
    /// checked against it first.
    private var remaining: Int { self.maximumReplyBytes - self.replyBytes }

    /// The next whole top-level value, consuming its bytes; `nil` when more bytes are needed, having consumed the
    /// elements that are already whole.
    mutating func next(_ buffer: inout ByteBuffer) throws(RESPParseError) -> RESPValue? {
        while true {
            let element: RESPValue?
            if let body = self.pendingBody {
                guard buffer.readableBytes >= body.length + 2 else { return nil }  // length + 2 fits the bound: no overflow
                element = try self.body(body, &buffer)
            } else {
                guard let line = try self.line(&buffer) else { return nil }
                element = try self.header(line.type, line.text)
            }
            if let element, let reply = self.complete(element) {
                return reply
            }
        }
    }

    mutating func decode(buffer: inout ByteBuffer) throws -> RESPValue? {
        try self.next(&buffer)
    }

    mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> RESPValue? {
        try self.next(&buffer)
    }

    /// The next header line, consumed: its type byte and the text before CR LF; `nil` until its LF has arrived.
    private mutating func line(_ buffer: inout ByteBuffer) throws(RESPParseError) -> (type: UInt8, text: String)? {
        guard let type = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return nil }
        guard Self.types.contains(type) else {
            throw RESPParseError(reason: "unknown type byte \(type) ('\(Character(Unicode.Scalar(type)))')")
        }
        guard self.stack.count < Self.maximumDepth else { throw RESPParseError(reason: "nested deeper than \(Self.maximumDepth)") }
        let view = buffer.readableBytesView
        // `min`: a caller that handed a different buffer must not make the index run past its end.
        let from = view.startIndex + min(self.scannedLineBytes, view.count)
        let lf = view[from...].firstIndex(of: UInt8(ascii: "\n"))
        self.bytesExamined += (lf ?? view.endIndex) - from
        guard let lf else {
            self.scannedLineBytes = view.count
            guard view.count <= self.remaining else { throw self.tooLarge("a line of more than \(self.remaining) bytes") }
            return nil
        }
        let length = lf - view.startIndex + 1
        guard length <= self.remaining else { throw self.tooLarge("a line of \(length) bytes") }
        // The type byte is known, so neither CR nor LF: an LF at offset 1 also lands here.
        guard view[lf - 1] == UInt8(ascii: "\r") else { throw RESPParseError(reason: "a line ends in LF without CR") }
        let text = buffer.getString(at: buffer.readerIndex + 1, length: length - 3) ?? ""
        buffer.moveReaderIndex(forwardBy: length)
        self.replyBytes += length
        self.scannedLineBytes = 0
        return (type, text)
    }

    /// The value a header line makes, or `nil` when it opens an aggregate or announces a bulk string.
    private mutating func header(_ type: UInt8, _ text: String) throws(RESPParseError) -> RESPValue? {
        switch type {
        case UInt8(ascii: "+"): return .simpleString(text)
        case UInt8(ascii: "-"): return .error(text)
        case UInt8(ascii: ":"):
            guard let value = Int64(text) else { throw RESPParseError(reason: "bad integer '\(text)'") }
            return .integer(value)
        case UInt8(ascii: "$"), UInt8(ascii: "="), UInt8(ascii: "!"):
            let length = try Self.count(text, type)
            if length == -1 { return .bulkString(nil) }
            // remaining >= 0, so remaining - 2 cannot overflow; a length that passes leaves length + 2 within the bound.
            guard length <= self.remaining - 2 else { throw self.tooLarge("a bulk string of \(length) bytes") }
            self.replyBytes += length + 2
            self.pendingBody = (type, length)
            return nil
        case UInt8(ascii: "*"), UInt8(ascii: "~"), UInt8(ascii: ">"), UInt8(ascii: "%"):
            let count = try Self.count(text, type)
            if count == -1 { return .array(nil) }
            // Every element takes at least 3 bytes on the wire ("_\r\n"), a map entry two elements: a count past
            // what is left of the bound is refused before anything is allocated, and `count * 2` cannot overflow.
            let isMap = type == UInt8(ascii: "%")
            guard count <= self.remaining / (isMap ? 6 : 3) else {
                throw self.tooLarge("an aggregate of \(count) \(isMap ? "entries" : "elements")")
            }
            let frame = Frame(type: type, missing: isMap ? count * 2 : count)
            if count == 0 { return frame.value }
            self.stack.append(frame)
            return nil
        case UInt8(ascii: "_"): return .null
        case UInt8(ascii: "#"):
            guard text == "t" || text == "f" else { throw RESPParseError(reason: "bad boolean '\(text)'") }
            return .boolean(text == "t")
        case UInt8(ascii: ","):
            guard let value = Double(text) ?? (text == "inf" ? .infinity : text == "-inf" ? -.infinity : nil) else {
                throw RESPParseError(reason: "bad double '\(text)'")
            }
            return .double(value)
        default:  // "(": a big number, as text
            return .bulkString(Array(text.utf8))
        }
    }

    /// A length or count: -1 (RESP2's null) only for `$` and `*`, no other negative.
    private static func count(_ text: String, _ type: UInt8) throws(RESPParseError) -> Int {
        let nullable = type == UInt8(ascii: "$") || type == UInt8(ascii: "*")
        guard let count = Int(text), count >= (nullable ? -1 : 0) else {
            throw RESPParseError(reason: "bad length '\(text)' after '\(Character(Unicode.Scalar(type)))'")
        }
        return count
    }

    /// A bulk string's body, consumed once it and its CR LF have all arrived.
    private mutating func body(_ body: (type: UInt8, length: Int), _ buffer: inout ByteBuffer) throws(RESPParseError) -> RESPValue {
        let bytes = buffer.readBytes(length: body.length) ?? []
        guard buffer.readInteger(as: UInt16.self) == 0x0D0A else {
            throw RESPParseError(reason: "a bulk string of \(body.length) bytes is not followed by CR LF")
        }
        self.bytesExamined += body.length + 2
        self.pendingBody = nil
        return body.type == UInt8(ascii: "!") ? .error(String(decoding: bytes, as: UTF8.self)) : .bulkString(bytes)
    }

    /// Adds a whole element to the aggregate it is in, closing every aggregate it completes; the top-level reply once
    /// it is whole.
    private mutating func complete(_ element: RESPValue) -> RESPValue? {
        var element = element
        while let last = self.stack.indices.last {
            self.stack[last].elements.append(element)
            self.stack[last].missing -= 1
            guard self.stack[last].missing == 0 else { return nil }
            element = self.stack.removeLast().value
        }
        self.replyBytes = 0
        return element
    }

    private func tooLarge(_ what: String) -> RESPParseError {
        let limit = self.maximumReplyBytes
        let mebibytes = limit >= 1 << 20 && limit % (1 << 20) == 0 ? "\(limit >> 20) MiB" : "\(limit)-byte"
        let used = self.replyBytes > 0 ? " (\(self.replyBytes) bytes of this reply already read)" : ""
        return RESPParseError(
            reason: "\(what) exceeds the \(mebibytes) reply limit\(used); RedisConfiguration.maximumReplyBytes sets it"
        )
    }
}

/// Commands as RESP.
enum RESPEncoder {
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
