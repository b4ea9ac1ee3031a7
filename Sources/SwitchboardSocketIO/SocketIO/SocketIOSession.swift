import NIOCore
import SwitchboardCore

/// The Socket.IO v5 rules for one Engine.IO session: which namespaces the client joined, CONNECT and its
/// decision, events and acks in both directions, the connect timeout. A value-type state machine like
/// ``EngineSession``: it takes the session's messages and returns actions; time is passed in.
///
/// Invalid input ends the whole connection, as in the reference server: a packet that does not parse, and any
/// packet for a namespace the client has not joined (or a second CONNECT for one it has).
///
/// Connection state recovery (Socket.IO 4.6+), as the reference server and client implement it: the server's
/// CONNECT reply carries `"pid"` (a private session id) beside `"sid"`; every EVENT the server sends without an
/// ack id carries an offset string as its last argument (``emit(_:_:namespace:expectAck:offset:)``); a
/// reconnecting client puts `"pid"` and `"offset"` (the last offset it saw) into its CONNECT `auth` object, and the
/// server tries to restore the session only when both are strings (``Action/authorize(namespace:auth:recovery:)``).
public struct SocketIOSession: Sendable {
    public struct Configuration: Sendable {
        /// How long a client may take to join its first namespace (the reference server's default: 45 s).
        public var connectTimeout: TimeAmount
        /// The most attachments one binary packet may announce.
        public var maxAttachments: Int
        /// Whether CONNECT `auth` is read for `pid` and `offset`.
        public var connectionStateRecovery: Bool

        public init(connectTimeout: TimeAmount = .seconds(45), maxAttachments: Int = 10, connectionStateRecovery: Bool = false) {
            self.connectTimeout = connectTimeout
            self.maxAttachments = maxAttachments
            self.connectionStateRecovery = connectionStateRecovery
        }
    }

    /// What a reconnecting client asks to resume: its private session id and the offset of the last event it got.
    public struct Recovery: Sendable, Hashable {
        public var pid: String
        public var offset: String

        public init(pid: String, offset: String) {
            self.pid = pid
            self.offset = offset
        }
    }

    /// The caller's answer to ``Action/authorize(namespace:auth:recovery:)``.
    public enum ConnectDecision: Sendable, Hashable {
        /// Join: `sid` is the client's id in the namespace; `pid` is sent only with recovery on (for a recovered
        /// session, the same `sid` and `pid` as before).
        case accept(sid: String, pid: String?)
        /// CONNECT_ERROR `{"message":…,"data":…}` (`data` left out when `nil`).
        case refuse(message: String, data: JSONValue?)
        /// No such namespace: CONNECT_ERROR `{"message":"Invalid namespace"}`, the reference server's words.
        case unknownNamespace
    }

    public enum Action: Sendable, Hashable {
        /// Hand these messages to the Engine.IO session, in order.
        case send([EngineMessage])
        /// The client asks to join `namespace`: decide, then call ``decide(_:_:now:)``. `recovery` is set when
        /// recovery is on and `auth` holds string `pid` and `offset`; `auth` is passed on whole, as the reference
        /// server does.
        case authorize(namespace: String, auth: JSONValue?, recovery: Recovery?)
        /// An event from the client; answer with ``ack(namespace:ackID:_:)`` when `ackID` is set.
        case event(namespace: String, name: String, arguments: [SocketValue], ackID: Int?)
        /// The client's answer to an event sent with ``emit(_:_:namespace:expectAck:offset:)``.
        case ack(namespace: String, ackID: Int, arguments: [SocketValue])
        /// The client left the namespace; `reason` in the reference server's words.
        case disconnected(namespace: String, reason: String)
        /// Close the Engine.IO session: the client broke the protocol, or joined nothing in time.
        case close(SocketIOError)
    }

    private enum Membership: Sendable {
        /// CONNECT received, decision pending.
        case pending
        case joined(sid: String)
    }

    /// ``Configuration/connectionStateRecovery``: the one setting read after `init`; the session is in every
    /// Socket.IO connection, so it keeps no copy of the rest.
    private let connectionStateRecovery: Bool
    /// The namespaces asked for, in order: a handful at most (usually one), so an array, which is smaller than a
    /// dictionary and as quick to search. Read and written through ``subscript(membership:)``.
    private var namespaces: [(name: String, membership: Membership)] = []
    private var decoder: SocketPacketDecoder
    private var connectDeadline: NIODeadline?
    private var nextAckID = 0
    private var isClosed = false

    /// Starts with the Engine.IO session; the connect timeout runs from `now`.
    public init(configuration: Configuration, now: NIODeadline) {
        self.connectionStateRecovery = configuration.connectionStateRecovery
        self.decoder = SocketPacketDecoder(maxAttachments: configuration.maxAttachments)
        self.connectDeadline = now + configuration.connectTimeout
    }

    private subscript(membership namespace: String) -> Membership? {
        get { self.namespaces.first { $0.name == namespace }?.membership }
        set {
            let index = self.namespaces.firstIndex { $0.name == namespace }
            switch (index, newValue) {
            case (let index?, let membership?): self.namespaces[index].membership = membership
            case (let index?, nil): self.namespaces.remove(at: index)
            case (nil, let membership?): self.namespaces.append((namespace, membership))
            case (nil, nil): break
            }
        }
    }

    /// The client's id in `namespace`, once joined.
    public func sid(in namespace: String) -> String? {
        if case .joined(let sid)? = self[membership: namespace] { return sid }
        return nil
    }

    /// When ``tick(now:)`` next has something to do.
    public var nextDeadline: NIODeadline? { self.connectDeadline }

    /// A message the Engine.IO session delivered.
    public mutating func receive(_ message: EngineMessage) -> [Action] {
        guard !self.isClosed else { return [] }
        let packet: SocketPacket?
        do {
            packet = try self.decoder.receive(message)
        } catch {
            return self.fail(error, reason: "parse error")
        }
        guard let packet else { return [] }
        let namespace = packet.namespace
        switch (packet.kind, self[membership: namespace]) {
        case (.connect, nil):
            self[membership: namespace] = .pending
            let auth = packet.data?.json
            var recovery: Recovery?
            if self.connectionStateRecovery, let pid = auth?.objectValue?["pid"]?.stringValue,
                let offset = auth?.objectValue?["offset"]?.stringValue
            {
                recovery = Recovery(pid: pid, offset: offset)
            }
            return [.authorize(namespace: namespace, auth: auth, recovery: recovery)]
        case (.event, .joined?):
            return [.event(namespace: namespace, name: packet.eventName ?? "", arguments: packet.arguments, ackID: packet.ackID)]
        case (.ack, .joined?):
            return [.ack(namespace: namespace, ackID: packet.ackID ?? 0, arguments: packet.arguments)]
        case (.disconnect, .joined?):
            self[membership: namespace] = nil
            return [.disconnected(namespace: namespace, reason: "client namespace disconnect")]
        default:
            return self.fail(.invalidState("\(packet.kind) for namespace \(namespace), which the client has not joined"), reason: "forced close")
        }
    }

    /// The caller's decision on a CONNECT announced by ``Action/authorize(namespace:auth:recovery:)``.
    public mutating func decide(_ namespace: String, _ decision: ConnectDecision) -> [Action] {
        guard !self.isClosed, case .pending? = self[membership: namespace] else { return [] }
        switch decision {
        case .accept(let sid, let pid):
            self[membership: namespace] = .joined(sid: sid)
            self.connectDeadline = nil
            var data: [JSONObject.Member] = [JSONObject.Member("sid", .string(sid))]
            if let pid { data.append(JSONObject.Member("pid", .string(pid))) }
            return [.send(SocketPacket(.connect, namespace: namespace, data: SocketValue(.object(JSONObject(data)))).encode())]
        case .refuse(let message, let extra):
            self[membership: namespace] = nil
            var data: [JSONObject.Member] = [JSONObject.Member("message", .string(message))]
            if let extra { data.append(JSONObject.Member("data", extra)) }
            return [.send(SocketPacket(.connectError, namespace: namespace, data: SocketValue(.object(JSONObject(data)))).encode())]
        case .unknownNamespace:
            return self.decide(namespace, .refuse(message: "Invalid namespace", data: nil))
        }
    }

    /// Sends an event to the client in a joined namespace.
    /// - Parameters:
    ///   - expectAck: give the event an ack id; the client's answer comes back as ``Action/ack(namespace:ackID:arguments:)``.
    ///   - offset: with connection state recovery, the event's offset, appended as its last argument. The
    ///     reference server stores (and so offsets) only events without an ack, so it is ignored with `expectAck`.
    /// - Returns: the ack id, and the messages to send; no messages when the namespace is not joined.
    public mutating func emit(
        _ event: String,
        _ arguments: [SocketValue],
        namespace: String = "/",
        expectAck: Bool = false,
        offset: String? = nil
    ) -> (ackID: Int?, actions: [Action]) {
        guard !self.isClosed, self.sid(in: namespace) != nil else { return (nil, []) }
        var ackID: Int?
        var arguments = arguments
        if expectAck {
            ackID = self.nextAckID
            self.nextAckID = self.nextAckID == SocketPacket.maximumAckID ? 0 : self.nextAckID + 1
        } else if let offset {
            arguments.append(.string(offset))
        }
        return (ackID, [.send(SocketPacket.event(event, arguments, namespace: namespace, ackID: ackID).encode())])
    }

    /// Answers an event the client sent with an ack id.
    public mutating func ack(namespace: String, ackID: Int, _ arguments: [SocketValue]) -> [Action] {
        guard !self.isClosed, self.sid(in: namespace) != nil else { return [] }
        return [.send(SocketPacket(.ack, namespace: namespace, ackID: ackID, data: .array(arguments)).encode())]
    }

    /// The server removes the client from a namespace; the connection stays open.
    public mutating func disconnect(namespace: String) -> [Action] {
        guard !self.isClosed, self.sid(in: namespace) != nil else { return [] }
        self[membership: namespace] = nil
        return [.send(SocketPacket(.disconnect, namespace: namespace).encode())]
    }

    /// Closes the connection when no namespace was joined within the connect timeout.
    public mutating func tick(now: NIODeadline) -> [Action] {
        guard !self.isClosed, let deadline = self.connectDeadline, now >= deadline else { return [] }
        return self.fail(.connectTimeout, reason: "forced close")
    }

    /// The Engine.IO session ended: every joined namespace is left, with the session's reason.
    public mutating func engineClosed(_ reason: EngineSession.CloseReason) -> [Action] {
        self.isClosed = true
        self.connectDeadline = nil
        return self.leaveAll(reason: reason.description)
    }

    private mutating func fail(_ error: SocketIOError, reason: String) -> [Action] {
        self.isClosed = true
        self.connectDeadline = nil
        return self.leaveAll(reason: reason) + [.close(error)]
    }

    private mutating func leaveAll(reason: String) -> [Action] {
        let joined = self.namespaces.compactMap { namespace, membership -> String? in
            if case .joined = membership { return namespace }
            return nil
        }
        self.namespaces = []
        return joined.sorted().map { .disconnected(namespace: $0, reason: reason) }
    }
}
