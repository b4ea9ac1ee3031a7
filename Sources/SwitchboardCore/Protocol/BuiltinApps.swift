/// One inbound message, decoded once, as the built-in apps see it.
public struct AppRequest: Sendable {
    /// The key the route selection expression selected, `nil` when it selected nothing.
    public var selectedKey: String?
    /// The parsed body of a text frame; `nil` for binary frames and for text that is not JSON.
    public var body: JSONValue?
    public var isBinary: Bool

    public init(selectedKey: String?, body: JSONValue?, isBinary: Bool) {
        self.selectedKey = selectedKey
        self.body = body
        self.isBinary = isBinary
    }
}

/// What a built-in app asks the connection to do. Apps decide; the gateway's I/O layer carries it out, so the
/// protocol is tested without sockets and the same decisions work over any broker.
public enum AppEffect: Sendable, Hashable {
    /// A frame to the requesting connection.
    case reply(OutboundFrame)
    /// The request was wrong: the gateway answers `{"action":"error","message":…}` and counts a client error.
    case error(String)
    /// The inbound frame back to its sender, unchanged.
    case echo
    /// Join a room: the gateway answers `joinedRoom` and tells the others (`userJoined`) when presence is on. With
    /// `after`, a rejoining client also gets the messages it missed since that offset (or `historyLost`).
    case join(RoomID, after: Int64?)
    /// Leave a room: the gateway tells the others (`userLeft`) when presence is on.
    case leave(RoomID)
    case publish(OutboundFrame, to: Audience)
    /// A message to every member of its room, kept in the room's history under the next offset.
    case roomMessage(RoomMessage)
}

/// The seed protocol's decisions (DESIGN §3), as a pure function of the message and the connection's state.
public enum BuiltinApps {
    /// - Parameters:
    ///   - app: the app the route maps to.
    ///   - request: the decoded message.
    ///   - userId: the sender's user id, stamped on room messages.
    ///   - rooms: the rooms the connection is in.
    ///   - now: milliseconds since 1970, for `timestamp` fields.
    public static func handle(
        _ app: BuiltinApp,
        request: AppRequest,
        userId: String,
        rooms: Set<RoomID>,
        now: Int64
    ) -> [AppEffect] {
        func error(_ message: String) -> [AppEffect] { [.error(message)] }

        if app == .echo { return [.echo] }
        if request.isBinary { return error("Binary frames are not supported by this route") }
        guard let body = request.body?.objectValue else { return error("Invalid JSON") }

        switch app {
        case .echo:
            return [.echo]
        case .ping:
            return [.reply(ServerFrames.pong(timestamp: now))]
        case .unknownAction:
            guard let key = request.selectedKey else { return error("Missing action") }
            return error("Unknown action: \(key)")
        case .joinRoom, .leaveRoom:
            guard let name = body["roomId"]?.stringValue else { return error("roomId required") }
            guard let room = RoomID(name) else { return error(Name.problem(with: name, field: "roomId") ?? "Invalid roomId") }
            if app == .joinRoom {
                var after: Int64?
                if let value = body["lastOffset"] {
                    guard case .number(let text) = value, let offset = Int64(text), offset >= 0 else {
                        return error("lastOffset must be a non-negative integer")
                    }
                    after = offset
                }
                return [.join(room, after: after)]
            }
            guard rooms.contains(room) else { return error("Not in room") }
            return [.leave(room)]
        case .sendMessage:
            guard let name = body["roomId"]?.stringValue, let message = body["message"], message != .null else {
                return error("roomId and message required")
            }
            guard let room = RoomID(name), rooms.contains(room) else { return error("Not in room") }
            return [.roomMessage(ServerFrames.message(room, message: message, sender: userId, timestamp: now))]
        }
    }
}
