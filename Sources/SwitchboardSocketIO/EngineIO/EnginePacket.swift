import SwitchboardCore

/// An Engine.IO message: the payload the layer above (Socket.IO) exchanges.
public enum EngineMessage: Sendable, Hashable {
    case text(String)
    case binary([UInt8])
}

/// One Engine.IO v4 packet.
///
/// Text packets are `<type digit><data>`. A binary message has no type byte on a WebSocket (the frame's opcode says
/// it is binary, v4 dropped the leading `4` of v3) and is `b<base64>` inside a long-polling payload.
public enum EnginePacket: Sendable, Hashable {
    /// `0`: the handshake, sent by the server only.
    case open(EngineHandshake)
    /// `1`: ends the session.
    case close
    /// `2`: the server's heartbeat, or the client's `2probe` on a WebSocket being tried for an upgrade.
    case ping(String)
    /// `3`: the client's answer to a ping, or the server's `3probe`.
    case pong(String)
    /// `4` (text) or a binary frame / `b` record.
    case message(EngineMessage)
    /// `5`: the client switches the session to the probed WebSocket.
    case upgrade
    /// `6`: answers a waiting long-polling GET so the client can finish an upgrade.
    case noop

    /// The text of a text packet (`nil` for a binary message), as one WebSocket text frame carries it.
    public var webSocketText: String? {
        switch self {
        case .open(let handshake): "0" + handshake.json.jsonString
        case .close: "1"
        case .ping(let data): "2" + data
        case .pong(let data): "3" + data
        case .message(.text(let text)): "4" + text
        case .message(.binary): nil
        case .upgrade: "5"
        case .noop: "6"
        }
    }

    /// Reads one text frame of the WebSocket transport.
    /// - Throws: ``EngineIOError/emptyPacket``, ``EngineIOError/unknownPacketType``,
    ///   ``EngineIOError/invalidHandshake``.
    public init(webSocketText text: String) throws(EngineIOError) {
        try self.init(text: Array(text.utf8)[...])
    }

    /// Reads one record of a long-polling payload (UTF-8, `b` + base64 for a binary message).
    init(pollingRecord record: ArraySlice<UInt8>) throws(EngineIOError) {
        guard record.first == UInt8(ascii: "b") else {
            try self.init(text: record)
            return
        }
        guard let bytes = Base64.decode(record.dropFirst()) else { throw .invalidBase64 }
        self = .message(.binary(bytes))
    }

    private init(text: ArraySlice<UInt8>) throws(EngineIOError) {
        guard let type = text.first else { throw .emptyPacket }
        let data = text.dropFirst()
        // The reference parser ignores data after close, upgrade and noop, and so does this one.
        switch type {
        case UInt8(ascii: "0"): self = .open(try EngineHandshake(json: data))
        case UInt8(ascii: "1"): self = .close
        case UInt8(ascii: "2"): self = .ping(String(decoding: data, as: UTF8.self))
        case UInt8(ascii: "3"): self = .pong(String(decoding: data, as: UTF8.self))
        case UInt8(ascii: "4"): self = .message(.text(String(decoding: data, as: UTF8.self)))
        case UInt8(ascii: "5"): self = .upgrade
        case UInt8(ascii: "6"): self = .noop
        default: throw .unknownPacketType(type)
        }
    }

    /// The bytes this packet takes in a long-polling payload, separator excluded.
    var pollingCount: Int {
        switch self {
        case .message(.binary(let bytes)): 1 + Base64.encodedCount(bytes.count)
        default: self.webSocketText?.utf8.count ?? 0
        }
    }

    func writePollingRecord(into output: inout [UInt8]) {
        switch self {
        case .message(.binary(let bytes)):
            output.append(UInt8(ascii: "b"))
            Base64.encode(bytes, into: &output)
        default:
            output.append(contentsOf: (self.webSocketText ?? "").utf8)
        }
    }
}

/// The record separator between the packets of a long-polling payload (v4; v3 used length prefixes).
let recordSeparator = UInt8(0x1E)

extension EnginePacket {
    /// Joins packets into one long-polling payload, the body of a GET answer.
    public static func encodePayload(_ packets: some Sequence<EnginePacket>) -> [UInt8] {
        var output: [UInt8] = []
        for packet in packets {
            if !output.isEmpty { output.append(recordSeparator) }
            packet.writePollingRecord(into: &output)
        }
        return output
    }

    /// Splits a long-polling payload (the body of a POST) into its packets.
    ///
    /// The size is checked first, so nothing is decoded from a body over the limit.
    /// - Parameters:
    ///   - body: the request body as received.
    ///   - maxPayload: the handshake's `maxPayload`: the most bytes a body may have.
    /// - Throws: ``EngineIOError/payloadTooLarge`` before reading anything, ``EngineIOError/invalidText`` for a body
    ///   that is not UTF-8, then any error of a record (an empty body is one empty record).
    public static func decodePayload(_ body: [UInt8], maxPayload: Int) throws(EngineIOError) -> [EnginePacket] {
        guard body.count <= maxPayload else { throw .payloadTooLarge(body.count, limit: maxPayload) }
        guard body.withUnsafeBytes(UTF8Validation.isValid) else { throw .invalidText }
        var packets: [EnginePacket] = []
        for record in body.split(separator: recordSeparator, omittingEmptySubsequences: false) {
            packets.append(try EnginePacket(pollingRecord: record))
        }
        return packets
    }
}
