/// The frames the built-in apps send, exactly as the seed protocol (`002_*`) defines them: every frame is a JSON
/// object whose `action` says what it is, and times are milliseconds since 1970.
public enum ServerFrames {
    /// Written out rather than built as a `JSONValue`: the most frequent reply, and a third of a ping's cost in the
    /// gateway's own code.
    public static func pong(timestamp: Int64) -> OutboundFrame {
        OutboundFrame(.text, Array(#"{"action":"pong","timestamp":\#(timestamp)}"#.utf8))
    }

    /// The joiner's answer. `members` is capped (`listed` ≤ the configured limit); `memberCount` is the room's size,
    /// so a client of a huge room knows the list is a sample.
    public static func joinedRoom(_ room: RoomID, members: [String], memberCount: Int, offset: Int64) -> OutboundFrame {
        .text([
            "action": "joinedRoom", "roomId": .string(room.rawValue), "members": .array(members.map(JSONValue.string)),
            "memberCount": .number(String(memberCount)), "offset": .number(String(offset)),
        ])
    }

    public static func userJoined(_ room: RoomID, userId: String, timestamp: Int64) -> OutboundFrame {
        presence("userJoined", room, userId: userId, timestamp: timestamp)
    }

    public static func userLeft(_ room: RoomID, userId: String, timestamp: Int64) -> OutboundFrame {
        presence("userLeft", room, userId: userId, timestamp: timestamp)
    }

    /// A room message without its offset, which the broker assigns when it appends the message to the room's
    /// history; `ServerFrames.message(…).frame(offset:)` is the frame clients get.
    public static func message(_ room: RoomID, message: JSONValue, sender: String, timestamp: Int64) -> RoomMessage {
        let object: JSONValue = [
            "action": "message", "roomId": .string(room.rawValue), "message": message, "sender": .string(sender),
            "timestamp": .number(String(timestamp)),
        ]
        var prefix = object.jsonBytes
        prefix.removeLast()  // the closing brace: `"offset":N}` follows
        prefix.append(contentsOf: #","offset":"#.utf8)
        return RoomMessage(room: room, prefix: prefix)
    }

    /// Tells a rejoining client that messages after `lastOffset` are no longer kept: it should reload the room.
    public static func historyLost(_ room: RoomID, lastOffset: Int64, oldestOffset: Int64, timestamp: Int64) -> OutboundFrame {
        .text([
            "action": "historyLost", "roomId": .string(room.rawValue), "lastOffset": .number(String(lastOffset)),
            "oldestOffset": .number(String(oldestOffset)), "timestamp": .number(String(timestamp)),
        ])
    }

    public static func error(_ message: String, timestamp: Int64) -> OutboundFrame {
        .text(["action": "error", "message": .string(message), "timestamp": .number(String(timestamp))])
    }

    /// The optional welcome frame of seed `000_*`.
    public static func connected(_ connection: ConnectionInfo, timestamp: Int64) -> OutboundFrame {
        .text([
            "action": "connected", "connectionId": .string(connection.id.rawValue), "userId": .string(connection.userId),
            "timestamp": .number(String(timestamp)),
        ])
    }

    private static func presence(_ action: String, _ room: RoomID, userId: String, timestamp: Int64) -> OutboundFrame {
        .text([
            "action": .string(action), "roomId": .string(room.rawValue), "userId": .string(userId),
            "timestamp": .number(String(timestamp)),
        ])
    }
}

/// A room message waiting for its offset: the frame is `prefix` + the offset + `}`, so a broker (or a Redis script)
/// can stamp it without parsing or re-encoding the message.
public struct RoomMessage: Sendable, Hashable {
    public var room: RoomID
    public var prefix: [UInt8]

    public init(room: RoomID, prefix: [UInt8]) {
        self.room = room
        self.prefix = prefix
    }

    public func frame(offset: Int64) -> OutboundFrame {
        OutboundFrame(.text, self.prefix + Array(String(offset).utf8) + [UInt8(ascii: "}")])
    }
}
