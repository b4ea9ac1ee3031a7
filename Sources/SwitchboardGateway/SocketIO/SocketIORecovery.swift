import Logging
import SwitchboardConfiguration
import SwitchboardCore

/// Connection state recovery (Socket.IO 4.6+) on Switchboard's rooms and their history, whatever node the client
/// comes back to.
///
/// A socket that drops (anything but a DISCONNECT from either side) leaves a ``Session`` in the broker under its
/// `pid`, a secret only its client holds, for `socketio.recovery_window`. Room messages carry `"<offset>@<room>"` as
/// their last argument, the same bytes for every member; socket.io-client keeps the last one it saw and sends it
/// with the `pid` when it reconnects. The socket then gets its old id back, rejoins its rooms, and is sent what
/// each missed: the named room after the client's offset exactly; the others from that message's timestamp on, since
/// the client saw everything written before it (see ``resumePoints(_:offset:droppedBefore:broker:)``).
enum SocketIORecovery {
    /// What a dropped socket leaves for its reconnect.
    struct Session: Sendable, Equatable {
        var sid: ConnectionID
        var userId: String
        var namespace: String
        var rooms: [RoomID]
        /// When the socket was last known to read (milliseconds since 1970): where the other rooms' replay starts
        /// when the client's offset names no message (see ``resumePoints(_:offset:droppedBefore:broker:)``).
        var heardAt: Int64

        init(sid: ConnectionID, userId: String, namespace: String, rooms: [RoomID], heardAt: Int64) {
            (self.sid, self.userId, self.namespace, self.rooms, self.heardAt) = (sid, userId, namespace, rooms, heardAt)
        }

        var encoded: [UInt8] {
            JSONValue.object(
                JSONObject([
                    .init("sid", .string(self.sid.rawValue)), .init("user", .string(self.userId)),
                    .init("ns", .string(self.namespace)), .init("rooms", .array(self.rooms.map { .string($0.rawValue) })),
                    .init("heard", .number(String(self.heardAt))),
                ])
            ).jsonBytes
        }

        /// Reads what ``encoded`` wrote, checking every field: the stash is shared state, not trusted input.
        init?(decoding bytes: [UInt8]) {
            guard let object = (try? JSONValue.parse(bytes))?.objectValue,
                let sid = object["sid"]?.stringValue.flatMap(ConnectionID.init),
                // Not a `Name`: an anonymous socket's user id is its connection id.
                let userId = object["user"]?.stringValue, (1...1024).contains(userId.utf8.count),
                let namespace = object["ns"]?.stringValue,
                case .array(let rooms)? = object["rooms"], rooms.count <= Self.maximumRooms,
                case .number(let heard)? = object["heard"], let heardAt = Int64(heard)
            else { return nil }
            let ids = rooms.compactMap { $0.stringValue.flatMap(RoomID.init) }
            guard ids.count == rooms.count else { return nil }
            self.init(sid: sid, userId: userId, namespace: namespace, rooms: ids, heardAt: heardAt)
        }

        /// More than any configured `limits.max_rooms_per_connection` allows.
        static let maximumRooms = 100_000
    }

    /// A new private session id for socket `sid`: two random connection ids' 176 bits (30 characters), a dot, the
    /// socket's id, so a reconnect names the socket it resumes and the gateway can find it while it still runs.
    static func newPID(for sid: ConnectionID) -> String {
        String(ConnectionID.random().rawValue.dropLast()) + String(ConnectionID.random().rawValue.dropLast()) + "." + sid.rawValue
    }

    /// The socket a `pid` names, or `nil` for one this gateway cannot have made (so what a client sends never
    /// makes an odd or large key).
    static func socket(named pid: String) -> ConnectionID? {
        guard let dot = pid.firstIndex(of: "."), pid.distance(from: pid.startIndex, to: dot) == 30, ConnectionID(pid[..<dot]) != nil else {
            return nil
        }
        return ConnectionID(pid[pid.index(after: dot)...])
    }

    /// The broker key a socket's session is left under.
    static func key(pid: String) -> String { "socketio:" + pid }

    /// Why a socket still running ends when its client reconnects naming it: the reconnect takes it over.
    static let takeoverReason = "recovered on a new connection"

    /// Leaves a socket that ended for its reconnect, for `socketio.recovery_window`: called once it is off the
    /// registry, by its node or by the survivor that swept its dead node.
    static func leave(_ info: ConnectionInfo, rooms: some Sequence<RoomID>, heardAt: Int64, gateway: GatewayContext) async {
        guard let recoverable = info.recoverable else { return }
        let rooms = rooms.sorted { $0.rawValue < $1.rawValue }
        let session = Session(sid: info.id, userId: info.userId, namespace: recoverable.namespace, rooms: rooms, heardAt: heardAt)
        await Self.keep(session, pid: recoverable.pid, gateway: gateway)
        gateway.logger.debug("socket.io socket left for recovery", metadata: ["connectionId": "\(info.id)", "rooms": "\(rooms.count)"])
    }

    /// Stashes a session under its `pid` for the window; also how a taken session goes back when its reconnect was
    /// refused (a bad token, another user), so whoever presented the `pid` cannot use it up.
    static func keep(_ session: Session, pid: String, gateway: GatewayContext) async {
        guard let window = gateway.configuration.socketIO.recoveryWindow else { return }
        await gateway.broker.stash(session.encoded, under: Self.key(pid: pid), for: window)
    }

    /// Takes the session `pid` left. When its socket is still registered (its node has not noticed the drop yet,
    /// or died and is not swept yet), that socket is told to end for recovery, wherever it is, and its session is
    /// awaited: as long as a dead node takes to be swept at most. Only a client holding the `pid` can cause that.
    static func take(pid: String, gateway: GatewayContext) async -> Session? {
        guard let sid = Self.socket(named: pid) else { return nil }
        let (broker, key) = (gateway.broker, Self.key(pid: pid))
        if let session = await broker.takeStashed(key) { return Session(decoding: session) }
        guard let held = await broker.connection(sid), held.info.recoverable?.pid == pid else { return nil }
        broker.send(.close(code: CloseCode.goingAway, reason: Self.takeoverReason), to: sid)
        let configuration = gateway.configuration
        let patience = configuration.redisURL == nil ? Duration.seconds(2) : min(configuration.redisTTL * 2, .seconds(120))
        let deadline = ContinuousClock.now + patience
        while ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(100))
            if let session = await broker.takeStashed(key) { return Session(decoding: session) }
        }
        return nil
    }

    /// The last argument of a room message's event.
    static func offset(_ offset: Int64, in room: String) -> String { String(offset) + "@" + room }

    /// The room and offset in a client's `offset`, if it is one ``offset(_:in:)`` made.
    static func parseOffset(_ text: String) -> (room: RoomID, offset: Int64)? {
        guard let at = text.firstIndex(of: "@"), let offset = Int64(text[..<at]), offset >= 0,
            let room = RoomID(String(text[text.index(after: at)...]))
        else { return nil }
        return (room, offset)
    }

    /// Where each of the session's rooms is replayed from (the offset after which its messages are sent again).
    ///
    /// The named room resumes exactly after the client's offset. For every other room, what the client saw cannot be
    /// known message by message (one offset string is all the client keeps), but messages reach a socket in the order
    /// it was written to, so it saw everything written before the message its offset names: the other rooms are
    /// replayed from that message's timestamp on, or, when the offset names none, from `droppedBefore` (when the
    /// socket was last heard). Messages of other rooms published within a few milliseconds of that message may
    /// come twice; none is lost.
    static func resumePoints(
        _ session: Session,
        offset: String,
        droppedBefore heardAt: Int64,
        broker: any Broker
    ) async -> [(room: RoomID, after: Int64)] {
        var named = Self.parseOffset(offset)
        if let room = named?.room, !session.rooms.contains(room) { named = nil }
        var since = heardAt
        if let (room, offset) = named, offset >= 1, case .messages(let entries) = await broker.history(of: room, after: offset - 1, limit: 1),
            let entry = entries.first, entry.offset == offset, let timestamp = Self.timestamp(of: entry)
        {
            since = timestamp
        }
        var points: [(room: RoomID, after: Int64)] = []
        for room in session.rooms {
            if let named, named.room == room {
                points.append((room, named.offset))
            } else {
                points.append((room, await Self.lastBefore(since, in: room, broker: broker)))
            }
        }
        return points
    }

    /// The offset of `room`'s last kept message older than `since` (by its `timestamp`): the replay starts after
    /// it. Steps back from the newest message, four times further each time, then reads forward: O(log n) reads to
    /// find the start, then the pages up to it, all within what the room keeps. Offsets come from Redis: each is
    /// checked before arithmetic, and a page that does not move forward ends the search.
    static func lastBefore(_ since: Int64, in room: RoomID, broker: any Broker) async -> Int64 {
        let last = await broker.lastOffset(of: room)
        guard last > 0 else { return 0 }
        var (back, start): (Int64, Int64) = (16, max(0, last - 16))
        search: while start > 0 {
            switch await broker.history(of: room, after: start, limit: 1) {
            case .messages(let entries):
                guard let entry = entries.first, let timestamp = Self.timestamp(of: entry), timestamp >= since else { break search }
            case .lost(let oldest):
                start = min(start, max(oldest, 1) - 1)
                break search
            case .unavailable:
                return last
            }
            back = back > last / 4 ? last : back * 4
            start = max(0, last - back)
        }
        var after = start
        while after < last {
            guard case .messages(let entries) = await broker.history(of: room, after: after, limit: 100), let newest = entries.last,
                newest.offset > after
            else { return after }
            if let first = entries.first(where: { (Self.timestamp(of: $0) ?? .max) >= since }) { return max(first.offset, 1) - 1 }
            after = newest.offset
        }
        return last
    }

    /// A room message's `timestamp` field.
    static func timestamp(of entry: HistoryEntry) -> Int64? {
        guard case .number(let text)? = (try? JSONValue.parse(entry.frame.bytes))?.objectValue?["timestamp"] else { return nil }
        return Int64(text)
    }
}
