import SwitchboardCore

/// What travels on the cluster's pub/sub channels: the publishing node, then either a frame with its audience or a
/// command for one connection. A tab-separated header line, then the payload bytes untouched, so a frame is never
/// re-encoded between nodes. Room and user names cannot contain tabs or newlines (``Name``).
struct Envelope {
    enum Body {
        case frame(OutboundFrame, Audience)
        case command(ConnectionCommand, ConnectionID)
        /// Opaque bytes for the gateway of the node whose channel carries them (Engine.IO relays).
        case relay([UInt8])
    }

    let origin: String
    let body: Body

    init(origin: String, audience: Audience, frame: OutboundFrame) {
        self.origin = origin
        self.body = .frame(frame, audience)
    }

    init(origin: String, command: ConnectionCommand, connection: ConnectionID) {
        self.origin = origin
        self.body = .command(command, connection)
    }

    init(origin: String, relay payload: [UInt8]) {
        self.origin = origin
        self.body = .relay(payload)
    }

    var encoded: [UInt8] {
        let header: [String]
        let payload: [UInt8]
        switch self.body {
        case .frame(let frame, let audience):
            let target: String
            switch audience {
            case .connection(let id): target = "c\t" + id.rawValue
            case .room(let room, let excluded): target = "r\t" + room.rawValue + "\t" + (excluded?.rawValue ?? "")
            case .user(let userId): target = "u\t" + userId
            case .everyone: target = "a"
            }
            header = [self.origin, frame.kind == .text ? "T" : "B", target]
            payload = frame.bytes
        case .command(let command, let id):
            switch command {
            case .close(let code, let reason):
                header = [self.origin, "C", id.rawValue, "close", String(code)]
                payload = Array(reason.utf8)
            case .join(let room): (header, payload) = ([self.origin, "C", id.rawValue, "join", room.rawValue], [])
            case .leave(let room): (header, payload) = ([self.origin, "C", id.rawValue, "leave", room.rawValue], [])
            }
        case .relay(let bytes):
            (header, payload) = ([self.origin, "R", "-"], bytes)
        }
        return Array(header.joined(separator: "\t").utf8) + [0x0A] + payload
    }

    init?(decoding bytes: [UInt8]) {
        guard let newline = bytes.firstIndex(of: 0x0A) else { return nil }
        let fields = String(decoding: bytes[..<newline], as: UTF8.self).split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
        let payload = Array(bytes[(newline + 1)...])
        guard fields.count >= 3 else { return nil }
        self.origin = fields[0]
        switch fields[1] {
        case "R":
            self.body = .relay(payload)
        case "T", "B":
            let frame = OutboundFrame(fields[1] == "T" ? .text : .binary, payload)
            let audience: Audience
            switch fields[2] {
            case "c":
                guard fields.count == 4, let id = ConnectionID(fields[3]) else { return nil }
                audience = .connection(id)
            case "r":
                guard fields.count == 5, let room = RoomID(fields[3]) else { return nil }
                audience = .room(room, excluding: ConnectionID(fields[4]))
            case "u":
                guard fields.count == 4 else { return nil }
                audience = .user(fields[3])
            case "a": audience = .everyone
            default: return nil
            }
            self.body = .frame(frame, audience)
        case "C":
            guard fields.count == 5, let id = ConnectionID(fields[2]) else { return nil }
            switch fields[3] {
            case "close": self.body = .command(.close(code: UInt16(fields[4]) ?? 1000, reason: String(decoding: payload, as: UTF8.self)), id)
            case "join":
                guard let room = RoomID(fields[4]) else { return nil }
                self.body = .command(.join(room), id)
            case "leave":
                guard let room = RoomID(fields[4]) else { return nil }
                self.body = .command(.leave(room), id)
            default: return nil
            }
        default:
            return nil
        }
    }
}
