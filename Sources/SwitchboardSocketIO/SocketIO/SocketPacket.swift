import SwitchboardCore

/// One Socket.IO v5 packet, carried in Engine.IO messages as `<type>[<attachments>-][<namespace>,][<ack id>][<JSON>]`.
///
/// BINARY_EVENT (5) and BINARY_ACK (6) are not kinds of their own here: they are how an event or an ack whose data
/// holds ``SocketValue/binary(_:)`` leaves travels, so ``encode()`` picks them and ``SocketPacketDecoder`` folds
/// them back into ``Kind/event`` and ``Kind/ack``.
public struct SocketPacket: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        /// `0`: the client asks to join a namespace (data: the optional `auth` object); the server accepts
        /// (data: `{"sid":…}`, plus `"pid"` with connection state recovery).
        case connect
        /// `1`: leaves a namespace.
        case disconnect
        /// `2` (or `5` with binary): data is `[name, arguments…]`.
        case event
        /// `3` (or `6` with binary): the answer to an event sent with an ack id; data is the arguments.
        case ack
        /// `4`: the server refuses a CONNECT; data is `{"message":…}` (optionally `"data"`).
        case connectError
    }

    /// The largest ack id accepted: JavaScript's largest exact integer, the most a JavaScript peer can count to.
    public static let maximumAckID = 9_007_199_254_740_991

    public var kind: Kind
    /// `/` unless the packet names another (the namespace is left out of the wire form when it is `/`).
    public var namespace: String
    public var ackID: Int?
    public var data: SocketValue?

    public init(_ kind: Kind, namespace: String = "/", ackID: Int? = nil, data: SocketValue? = nil) {
        self.kind = kind
        self.namespace = namespace
        self.ackID = ackID
        self.data = data
    }

    /// An EVENT: `name` then `arguments`.
    public static func event(_ name: String, _ arguments: [SocketValue], namespace: String = "/", ackID: Int? = nil) -> SocketPacket {
        SocketPacket(.event, namespace: namespace, ackID: ackID, data: .array([.string(name)] + arguments))
    }

    /// The event's name, for an EVENT.
    public var eventName: String? {
        guard self.kind == .event, case .array(let elements)? = self.data else { return nil }
        return elements.first?.stringValue
    }

    /// The arguments of an EVENT (after its name) or of an ACK.
    public var arguments: [SocketValue] {
        guard case .array(let elements)? = self.data else { return [] }
        return self.kind == .event ? Array(elements.dropFirst()) : elements
    }

    /// The Engine.IO messages that carry this packet: one text message, then one binary message per attachment.
    public func encode() -> [EngineMessage] {
        var attachments: [[UInt8]] = []
        let json = self.data?.deconstruct(into: &attachments)
        var text: String
        switch self.kind {
        case .connect: text = "0"
        case .disconnect: text = "1"
        case .event: text = attachments.isEmpty ? "2" : "5"
        case .ack: text = attachments.isEmpty ? "3" : "6"
        case .connectError: text = "4"
        }
        if !attachments.isEmpty { text += "\(attachments.count)-" }
        // The reference encoder always writes the comma after a namespace other than `/`.
        if self.namespace != "/" { text += self.namespace + "," }
        if let ackID = self.ackID { text += String(ackID) }
        if let json { text += json.jsonString }
        return [.text(text)] + attachments.map(EngineMessage.binary)
    }
}

/// Events the reference parser refuses from a client, because the server emits them itself.
private let reservedEventNames: Set<String> = ["connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"]

extension SocketPacket {
    /// A text packet read, its binary placeholders not yet replaced.
    struct Header {
        var kind: Kind
        var namespace: String
        var ackID: Int?
        var json: JSONValue?
        /// Whether the type was BINARY_EVENT or BINARY_ACK: only there are placeholders replaced.
        var isBinary: Bool
        /// How many binary messages follow (0 for a packet of type 0 to 4).
        var attachments: Int
    }

    /// Reads and validates the text of a packet.
    static func parse(_ text: String, maxAttachments: Int) throws(SocketIOError) -> Header {
        var bytes = Array(text.utf8)[...]
        guard let type = bytes.popFirst() else { throw .emptyPacket }
        let kind: Kind
        let binary: Bool
        switch type {
        case UInt8(ascii: "0"): (kind, binary) = (.connect, false)
        case UInt8(ascii: "1"): (kind, binary) = (.disconnect, false)
        case UInt8(ascii: "2"): (kind, binary) = (.event, false)
        case UInt8(ascii: "3"): (kind, binary) = (.ack, false)
        case UInt8(ascii: "4"): (kind, binary) = (.connectError, false)
        case UInt8(ascii: "5"): (kind, binary) = (.event, true)
        case UInt8(ascii: "6"): (kind, binary) = (.ack, true)
        default: throw .unknownPacketType
        }

        var attachments = 0
        if binary {
            let digits = bytes.prefix { isDigit($0) }
            // Nine digits cannot overflow; the limit is checked before anything is allocated for them.
            guard !digits.isEmpty, digits.count <= 9, bytes.dropFirst(digits.count).first == UInt8(ascii: "-") else {
                throw .invalidAttachments
            }
            attachments = digits.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
            guard attachments <= maxAttachments else { throw .tooManyAttachments(limit: maxAttachments) }
            bytes = bytes.dropFirst(digits.count + 1)
        }

        var namespace = "/"
        if bytes.first == UInt8(ascii: "/") {
            let name = bytes.prefix { $0 != UInt8(ascii: ",") }
            namespace = String(decoding: name, as: UTF8.self)
            bytes = bytes.dropFirst(name.count + 1)
        }

        var ackID: Int?
        let digits = bytes.prefix { isDigit($0) }
        if !digits.isEmpty {
            // Sixteen digits fit in an Int with room to spare; the range is checked after.
            guard digits.count <= 16 else { throw .invalidAckID("more than 16 digits") }
            let value = digits.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
            guard value <= maximumAckID else { throw .invalidAckID("\(value) exceeds \(maximumAckID)") }
            ackID = value
            bytes = bytes.dropFirst(digits.count)
        }

        var json: JSONValue?
        if !bytes.isEmpty {
            do { json = try JSONValue.parse(Array(bytes)) } catch { throw .invalidJSON(error.description) }
        }
        try validate(kind, ackID: ackID, json: json)
        return Header(kind: kind, namespace: namespace, ackID: ackID, json: json, isBinary: binary, attachments: attachments)
    }

    /// The reference parser's rules for each type's data (socket.io-parser `isPacketValid`).
    private static func validate(_ kind: Kind, ackID: Int?, json: JSONValue?) throws(SocketIOError) {
        switch kind {
        case .connect:
            guard json == nil || json?.objectValue != nil else { throw .invalidData("CONNECT data must be an object") }
        case .disconnect:
            guard json == nil else { throw .invalidData("DISCONNECT carries no data") }
        case .connectError:
            guard json?.stringValue != nil || json?.objectValue != nil else {
                throw .invalidData("CONNECT_ERROR data must be an object or a string")
            }
        case .event:
            guard case .array(let elements)? = json, let name = elements.first?.stringValue else {
                throw .invalidData("EVENT data must be an array starting with the event name")
            }
            guard !reservedEventNames.contains(name) else { throw .invalidData("\"\(name)\" is a reserved event name") }
        case .ack:
            guard ackID != nil else { throw .invalidAckID("an ACK must carry the id it answers") }
            guard case .array? = json else { throw .invalidData("ACK data must be an array") }
        }
        if ackID != nil, kind != .event, kind != .ack { throw .invalidAckID("only EVENT and ACK carry an ack id") }
    }
}

private func isDigit(_ byte: UInt8) -> Bool { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) }

/// Reassembles packets from the Engine.IO messages of one connection, in order: a BINARY_EVENT or BINARY_ACK is
/// held until its attachments arrived, then given out with the binary in place of its placeholders.
public struct SocketPacketDecoder: Sendable {
    /// The most attachments one packet may announce: each is buffered until the last arrives.
    public let maxAttachments: Int
    private var pending = Pending.none

    /// A binary packet waiting for its attachments. Indirect, so a decoder (one per session, idle nearly always)
    /// holds one pointer instead of the ~80 bytes of a packet header.
    private indirect enum Pending {
        case none
        case waiting(SocketPacket.Header, attachments: [[UInt8]])
    }

    public init(maxAttachments: Int) {
        self.maxAttachments = maxAttachments
    }

    /// Takes the next Engine.IO message.
    /// - Returns: a complete packet, or `nil` while a binary packet waits for more attachments.
    /// - Throws: any parse or validation error; a text packet while attachments are expected, a binary message
    ///   while none is, a placeholder that names no attachment. After an error the connection cannot be read on.
    public mutating func receive(_ message: EngineMessage) throws(SocketIOError) -> SocketPacket? {
        switch message {
        case .text(let text):
            guard case .none = self.pending else { throw .unexpectedText }
            let header = try SocketPacket.parse(text, maxAttachments: self.maxAttachments)
            guard header.attachments == 0 else {
                var attachments: [[UInt8]] = []
                attachments.reserveCapacity(header.attachments)
                self.pending = .waiting(header, attachments: attachments)
                return nil
            }
            return try Self.complete(header, attachments: [])
        case .binary(let bytes):
            guard case .waiting(let header, var attachments) = self.pending else { throw .unexpectedBinary }
            self.pending = .none  // the one reference left, so the append does not copy
            attachments.append(bytes)
            guard attachments.count == header.attachments else {
                self.pending = .waiting(header, attachments: attachments)
                return nil
            }
            return try Self.complete(header, attachments: attachments)
        }
    }

    private static func complete(_ header: SocketPacket.Header, attachments: [[UInt8]]) throws(SocketIOError) -> SocketPacket {
        // Placeholders only mean something in a binary packet; in a plain one they are ordinary objects.
        var data: SocketValue?
        if let json = header.json {
            data = header.isBinary ? try SocketValue(reconstructing: json, attachments: attachments) : SocketValue(json)
        }
        return SocketPacket(header.kind, namespace: header.namespace, ackID: header.ackID, data: data)
    }
}
