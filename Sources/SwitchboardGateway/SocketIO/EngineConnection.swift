import Logging
import NIOCore
import NIOHTTP1
import SwitchboardConfiguration
import SwitchboardCore
import SwitchboardSocketIO
import SwitchboardWebSocket

/// An HTTP request waiting for its answer (a long-polling GET, a POST), answerable from any loop.
struct PollResponder: Sendable {
    /// Tells a waiting GET from the next one of the same client.
    let id: UInt64
    /// Answers; `written` runs (on the request's loop) once the answer is written.
    let answer: @Sendable (GatewayResponse, (@Sendable () -> Void)?) -> Void

    func respond(_ response: GatewayResponse, then written: (@Sendable () -> Void)? = nil) {
        self.answer(response, written)
    }
}

/// The WebSocket an Engine.IO session runs on (or probes), usable from the session's loop whatever loop the socket
/// is on: calls hop to the socket's loop, in order. The socket is on this node, or on another node that relays its
/// messages and frames (``RemoteWebSocket``).
struct EngineWire: Sendable {
    private enum Socket: Sendable {
        case local(NIOLoopBound<SocketIOWebSocketHandler>, any Channel)
        case remote(RemoteWebSocket)
    }
    private let socket: Socket

    init(handler: NIOLoopBound<SocketIOWebSocketHandler>, channel: any Channel) {
        self.socket = .local(handler, channel)
    }

    init(remote: RemoteWebSocket) {
        self.socket = .remote(remote)
    }

    /// Tells one socket from another.
    var identity: ObjectIdentifier {
        switch self.socket {
        case .local(_, let channel): ObjectIdentifier(channel)
        case .remote(let remote): ObjectIdentifier(remote)
        }
    }

    private func run(_ body: @escaping @Sendable (SocketIOWebSocketHandler) -> Void) {
        guard case .local(let handler, _) = self.socket else { return }
        if handler.eventLoop.inEventLoop {
            body(handler.value)
        } else {
            handler.eventLoop.execute { body(handler.value) }
        }
    }

    /// Once per member of every fan-out: on the socket's own loop it writes without making a closure.
    func write(_ bytes: ByteBuffer, flush: Bool) {
        switch self.socket {
        case .remote(let remote): remote.write(bytes, flush: flush)
        case .local(let handler, _) where handler.eventLoop.inEventLoop: handler.value.writeRaw(bytes, flush: flush)
        case .local: self.run { $0.writeRaw(bytes, flush: flush) }
        }
    }
    func flush() {
        switch self.socket {
        case .remote(let remote): remote.flush()
        case .local(let handler, _) where handler.eventLoop.inEventLoop: handler.value.flushRaw()
        case .local: self.run { $0.flushRaw() }
        }
    }
    func close() {
        if case .remote(let remote) = self.socket { return remote.close() }
        self.run { $0.closeNormally() }
    }
    func setReading(_ on: Bool) {
        if case .remote(let remote) = self.socket { return remote.setReading(on) }
        self.run { $0.setReading(on) }
    }
    var isWritable: Bool {
        switch self.socket {
        case .local(_, let channel): channel.isWritable
        case .remote(let remote): remote.isWritable
        }
    }
}

/// One Engine.IO session and the Socket.IO namespaces joined on it, confined to its event loop. It reports what the
/// transports bring to ``EngineSession`` and ``SocketIOSession`` and carries out what they return; each joined
/// namespace is a ``ClientConnection`` (registered, counted, `$connect`/`$disconnect`) whose transport is a
/// ``SocketIONamespace`` writing through this session.
final class EngineConnection {
    var sid: String { self.engine.sid }
    let eventLoop: any EventLoop
    private let gateway: GatewayContext
    private var engine: EngineSession
    private var socket: SocketIOSession
    private let handshake: Handshake
    private let remoteAddress: SocketAddress?
    /// The joined namespaces: a handful at most, usually one, so an array (smaller than a dictionary).
    private var namespaces: [SocketIONamespace] = []
    /// The WebSocket the session runs on.
    private var webSocket: EngineWire?
    /// `nil` for a session opened on a WebSocket.
    private let polling: Polling?
    /// Namespaces holding reads off while a backend call runs.
    private var readsHeld = 0
    private var nextHeartbeatEvent: NIODeadline?

    /// What only a session opened on long-polling needs (until and after an upgrade), apart: a session opened on
    /// a WebSocket, nearly every one, never polls and would carry its ~190 bytes for nothing.
    private final class Polling {
        /// The long-polling GET waiting for packets.
        var waiting: PollResponder?
        /// A WebSocket offered for an upgrade.
        var probe: EngineWire?
        /// Bytes queued for the client: past `limits.outbound_queue_bytes` it is a slow consumer.
        var queuedBytes = 0
        /// While a POST is handled, the waiting GET's answer is held here until the POST's `ok` is written.
        var holding = false
        var heldAnswer: (PollResponder, GatewayResponse)?
        /// A POST that arrived while a namespace awaits a backend call: handled once reads resume.
        var heldPost: ([UInt8], PollResponder)?
    }

    init(
        sid: String,
        transport: EngineSession.Transport,
        head: HTTPRequestHead,
        remoteAddress: SocketAddress?,
        gateway: GatewayContext,
        eventLoop: any EventLoop,
        now: NIODeadline
    ) {
        let settings = gateway.configuration.socketIO
        let configuration = EngineSession.Configuration(
            pingInterval: TimeAmount(settings.pingInterval),
            pingTimeout: TimeAmount(settings.pingTimeout),
            maxPayload: settings.maxPayload
        )
        (self.eventLoop, self.gateway, self.remoteAddress) = (eventLoop, gateway, remoteAddress)
        self.polling = transport == .polling ? Polling() : nil
        self.handshake = Handshake(head, gateway)
        self.engine = EngineSession.open(sid: sid, transport: transport, configuration: configuration, now: now).session
        self.socket = SocketIOSession(
            configuration: .init(connectTimeout: TimeAmount(settings.connectTimeout), connectionStateRecovery: settings.recoveryWindow != nil),
            now: now
        )
        self.nextHeartbeatEvent = settings.heartbeatEventInterval.map { now + TimeAmount($0) }
    }

    /// The open packet for the handshake, as a poll answer or a WebSocket's first frame.
    var openPacket: EnginePacket {
        let configuration = self.engine.configuration
        return .open(
            EngineHandshake(
                sid: self.sid,
                upgrades: self.engine.transport == .polling ? ["websocket"] : [],
                pingIntervalMilliseconds: configuration.pingInterval.nanoseconds / 1_000_000,
                pingTimeoutMilliseconds: configuration.pingTimeout.nanoseconds / 1_000_000,
                maxPayload: configuration.maxPayload
            )
        )
    }

    var transport: EngineSession.Transport { self.engine.transport ?? .polling }

    // MARK: Transport events

    /// A session opened directly on a WebSocket.
    func attach(_ wire: EngineWire) {
        self.webSocket = wire
    }

    func poll(_ responder: PollResponder) {
        let actions = self.engine.poll()
        if actions.isEmpty {
            self.polling?.waiting = responder  // never empty for a session opened on a WebSocket
            return
        }
        self.run(actions, current: responder)
    }

    /// The waiting GET's connection closed before its answer.
    func pollAborted(_ id: UInt64) {
        guard let polling, polling.waiting?.id == id else { return }
        polling.waiting = nil
        self.run(self.engine.pollAborted(), current: nil)
    }

    /// A POST's `ok` is written before its effects answer the waiting GET: python-engineio's client stops sending
    /// once it disconnects, and if an event's ack (over the GET) overtook the POST's `ok`, its next packets (the
    /// disconnect) would never be sent.
    ///
    /// While a namespace awaits a backend call, a POST waits unanswered (held here, one at most) as a WebSocket's
    /// reads pause: the client sends its next POST only after this one's answer, so what it can queue on the node is
    /// bounded by one POST, not by how long the backend takes. A second POST meanwhile is a protocol error.
    ///
    /// A session opened on a WebSocket refuses a POST at once (``EngineSession/post(_:now:)``).
    func post(_ body: [UInt8], _ responder: PollResponder) {
        guard let polling else { return self.run(self.engine.post(body, now: .now()), current: responder) }
        if self.readsHeld > 0 {
            guard polling.heldPost == nil else {
                responder.respond(SocketIOHTTP.badRequest)
                return self.close()
            }
            polling.heldPost = (body, responder)
            return
        }
        var current: PollResponder? = responder
        polling.holding = true
        self.run(self.engine.post(body, now: .now()), current: &current)
        polling.holding = false
        guard let current else { return }
        guard let (waiting, answer) = polling.heldAnswer else { return current.respond(SocketIOHTTP.ok) }
        polling.heldAnswer = nil
        current.respond(SocketIOHTTP.ok) { waiting.respond(answer) }
    }

    /// A WebSocket with this session's `sid` opened: the client probes it for an upgrade.
    func webSocketOffered(_ wire: EngineWire) {
        let actions = self.engine.webSocketOffered(now: .now())
        if actions.contains(where: { if case .rejectRequest = $0 { true } else { false } }) {
            wire.close()
            return
        }
        self.polling?.probe = wire  // only a session opened on polling can be offered one
    }

    func received(_ message: EngineMessage, from wire: EngineWire) {
        guard self.isCurrent(wire) else { return }
        for namespace in self.namespaces { namespace.connection.heard(now: .now()) }
        switch message {
        case .text(let text): self.run(self.engine.receive(webSocketText: text, now: .now()), current: nil)
        case .binary(let bytes): self.run(self.engine.receive(webSocketBinary: bytes, now: .now()), current: nil)
        }
        if self.engine.transport == .webSocket, self.webSocket == nil, let polling, let probe = polling.probe {
            // The upgrade completed (`5`): from now on everything goes over the WebSocket.
            (self.webSocket, polling.probe) = (probe, nil)
            for namespace in self.namespaces { namespace.connection.encoding = self.gateway.socketIOEncoding(namespace.name, .webSocket) }
        }
    }

    func webSocketClosed(_ wire: EngineWire) {
        guard self.isCurrent(wire) else { return }
        if let polling, polling.probe?.identity == wire.identity { polling.probe = nil }
        self.run(self.engine.webSocketClosed(), current: nil)
    }

    func webSocketUnwritable() {
        for namespace in self.namespaces { namespace.connection.writabilityLost() }
    }

    private func isCurrent(_ wire: EngineWire) -> Bool {
        self.webSocket?.identity == wire.identity || self.polling?.probe?.identity == wire.identity
    }

    func tick(now: NIODeadline) {
        self.run(self.engine.tick(now: now), current: nil)
        self.runSocket(self.socket.tick(now: now))
        if let due = self.nextHeartbeatEvent, now >= due, let interval = self.gateway.configuration.socketIO.heartbeatEventInterval {
            self.nextHeartbeatEvent = now + TimeAmount(interval)
            let beat = SocketValue.object([.init("timestamp", .number(String(self.gateway.wallClock())))])
            for name in self.namespaces.map(\.name).sorted() { self.runSocket(self.socket.emit("heartbeat", [beat], namespace: name).actions) }
        }
    }

    /// Ends the session from the server side (a slow consumer, a dropped namespace, the drain).
    func close() {
        self.run(self.engine.close(), current: nil)
    }

    // MARK: Carrying out the Engine.IO session's actions

    private func run(_ actions: [EngineSession.Action], current: PollResponder?) {
        var current = current
        self.run(actions, current: &current)
    }

    /// `current` is the request being handled; it is set to `nil` once answered.
    private func run(_ actions: [EngineSession.Action], current: inout PollResponder?) {
        for action in actions {
            switch action {
            case .answerPoll(let body):
                var response = GatewayResponse(.ok, body: body)
                response.headers = [("Content-Type", "text/plain; charset=UTF-8")]
                self.polling?.queuedBytes = 0
                if let polling, let waiting = polling.waiting {
                    polling.waiting = nil
                    if polling.holding, current != nil { polling.heldAnswer = (waiting, response) } else { waiting.respond(response) }
                } else {
                    current?.respond(response)
                    current = nil
                }
            case .rejectRequest(let error):
                current?.respond(SocketIOHTTP.error(error))
                current = nil
            case .send(let packets):
                guard let wire = self.webSocket ?? self.polling?.probe else { continue }
                for packet in packets {
                    let allocator = ByteBufferAllocator()
                    let frame =
                        if let text = packet.webSocketText {
                            WireFrame.encode(
                                .text,
                                allocator.buffer(string: text),
                                maxFrame: self.gateway.configuration.maxFrameBytes,
                                allocator: allocator
                            )
                        } else if case .message(.binary(let bytes)) = packet {
                            WireFrame.encode(
                                .binary,
                                allocator.buffer(bytes: bytes),
                                maxFrame: self.gateway.configuration.maxFrameBytes,
                                allocator: allocator
                            )
                        } else {
                            ByteBuffer()
                        }
                    wire.write(frame, flush: false)
                }
                wire.flush()
            case .closeProbe:
                self.polling?.probe?.close()
                self.polling?.probe = nil
            case .deliver(let message):
                self.runSocket(self.socket.receive(message))
            case .close(let reason):
                self.gateway.engines.remove(self)
                if let polling, let (_, held) = polling.heldPost {
                    polling.heldPost = nil
                    held.respond(SocketIOHTTP.unknownSession)
                }
                self.runSocket(self.socket.engineClosed(reason))
                self.webSocket?.close()
                self.polling?.probe?.close()
                self.webSocket = nil
                self.polling?.probe = nil
            }
        }
    }

    // MARK: Carrying out the Socket.IO session's actions

    private func runSocket(_ actions: [SocketIOSession.Action]) {
        for action in actions {
            switch action {
            case .send(let messages):
                for message in messages { self.run(self.engine.send(message), current: nil) }
            case .authorize(let namespace, let auth, let recovery):
                self.admit(namespace, auth: auth?.objectValue, recovery: recovery)
            case .event(let namespace, let name, let arguments, let ackID):
                self.namespaces.first(where: { $0.name == namespace })?.received(name, arguments, ackID: ackID)
            case .ack:
                break  // the gateway emits nothing that asks for an ack
            case .disconnected(let namespace, let reason):
                guard let index = self.namespaces.firstIndex(where: { $0.name == namespace }) else { continue }
                let joined = self.namespaces.remove(at: index)
                let clean = reason == "client namespace disconnect" || reason == "transport close"
                // As in the reference server, only the client's own DISCONNECT ends a socket for good.
                joined.recoverable = reason != "client namespace disconnect"
                joined.connection.protocolEnded(.init(code: clean ? CloseCode.normal : CloseCode.abnormal, reason: reason))
                joined.connection.closed()
            case .close(let error):
                self.gateway.logger.debug("socket.io session closed", metadata: ["sid": "\(self.sid)", "error": "\(error)"])
                self.close()
            }
        }
    }

    // MARK: Namespaces

    /// What the namespaces' admissions read of the handshake request. The request itself is kept only for a
    /// `$connect` integration (its event carries every header and the query): its headers hold the parser's spare
    /// capacity and strings, most of a KiB per session.
    private struct Handshake {
        let userAgent: String
        let host: String
        /// What most handshakes lack: boxed, and only made when one is there (56 bytes a session otherwise).
        private let rare: Rare?

        private final class Rare {
            /// The `userId` query parameter.
            let userId: String?
            let token: Result<String?, Admission.TokenProblem>
            let head: HTTPRequestHead?

            init(userId: String?, token: Result<String?, Admission.TokenProblem>, head: HTTPRequestHead?) {
                (self.userId, self.token, self.head) = (userId, token, head)
            }
        }

        init(_ head: HTTPRequestHead, _ gateway: GatewayContext) {
            self.userAgent = head.headers.first(name: "user-agent") ?? ""
            self.host = head.headers.first(name: "host") ?? "localhost"
            let userId = RequestTarget(head.uri).query["userId"]
            let integration = gateway.configuration.routes.integration(for: RouteTable.connectKey) != nil
            switch (userId, Admission.token(head), integration) {
            case (nil, .success(nil), false): self.rare = nil
            case (_, let token, _): self.rare = Rare(userId: userId, token: token, head: integration ? head : nil)
            }
        }

        var userId: String? { self.rare?.userId }
        var token: Result<String?, Admission.TokenProblem> { self.rare?.token ?? .success(nil) }
        /// The request when a `$connect` integration reads it; otherwise one shared empty head, which nothing reads.
        var head: HTTPRequestHead { self.rare?.head ?? Self.unread }
        private static let unread = HTTPRequestHead(version: .http1_1, method: .GET, uri: "")
    }

    /// What a reconnecting socket resumes: the session its `pid` left, and the client's last offset.
    private struct Restoring {
        var session: SocketIORecovery.Session
        var pid: String
        var offset: String
    }

    /// A namespace CONNECT. One naming a `pid` (connection state recovery) first takes the session that `pid` left,
    /// which is then admitted like any CONNECT and gets its id and rooms back.
    private func admit(_ namespace: String, auth: JSONObject?, recovery: SocketIOSession.Recovery?) {
        guard let recovery, SocketIORecovery.socket(named: recovery.pid) != nil else { return self.admit(namespace, auth: auth, restoring: nil) }
        let gateway = self.gateway
        self.eventLoop.makeFutureWithTask { await SocketIORecovery.take(pid: recovery.pid, gateway: gateway) }.assumeIsolated().whenSuccess {
            session in
            guard let session, session.namespace == namespace else { return self.admit(namespace, auth: auth, restoring: nil) }
            self.admit(namespace, auth: auth, restoring: Restoring(session: session, pid: recovery.pid, offset: recovery.offset))
        }
    }

    /// The same admission as a WebSocket's `$connect` (drain, the connection limits, JWT from `auth.token` or the
    /// handshake, per-user limit, the `$connect` integration, registration), answered with CONNECT or CONNECT_ERROR.
    /// The Engine.IO session stays open either way. A restored socket must be its session's user.
    private func admit(_ namespace: String, auth: JSONObject?, restoring: Restoring?) {
        let gateway = self.gateway
        guard gateway.configuration.socketIO.namespaces.contains(namespace) else {
            self.runSocket(self.socket.decide(namespace, .unknownNamespace))
            return
        }
        func refuse(_ message: String) {
            self.runSocket(self.socket.decide(namespace, .refuse(message: message, data: nil)))
        }
        guard !gateway.isDraining else { return refuse("Server is draining; reconnect to another node") }
        let id = restoring?.session.sid ?? ConnectionID.random()
        // The reply repeats a restored socket's `pid`: that is what tells socket.io-client it recovered.
        let pid = restoring?.pid ?? (gateway.configuration.socketIO.recoveryWindow == nil ? nil : SocketIORecovery.newPID(for: id))
        var userId = restoring?.session.userId ?? id.rawValue
        if let requested = auth?["userId"]?.stringValue ?? self.handshake.userId {
            if let problem = Name.problem(with: requested, field: "userId") { return refuse(problem) }
            userId = requested
        }
        let token: String?
        if let given = auth?["token"] {
            guard let string = given.stringValue else { return refuse("Unauthorized: auth.token must be a string") }
            token = string
        } else {
            switch self.handshake.token {
            case .success(let found): token = found
            case .failure(let problem): return refuse(problem.message)
            }
        }
        guard let lease = ConnectionLease.take(gateway) else {
            return refuse("Too many connections on this node (at most \(gateway.configuration.maxConnections ?? 0))")
        }
        let info = ConnectionInfo(
            id: id,
            userId: userId,
            connectedAt: gateway.wallClock(),
            sourceIp: self.remoteAddress?.ipAddress ?? "",
            userAgent: self.handshake.userAgent,
            stage: nil,
            domainName: self.handshake.host,
            recoverable: pid.map { ConnectionInfo.Recoverable(pid: $0, namespace: namespace) }
        )
        let candidate = Admission.Candidate(info: info, token: token, subprotocol: nil, lease: lease)
        /// A refused reconnect leaves the session it took for the next try.
        func putBack() {
            guard let restoring else { return }
            Task { await SocketIORecovery.keep(restoring.session, pid: restoring.pid, gateway: gateway) }
        }
        let finish: (Result<(ConnectionInfo, VerifiedClaims?), any Error>) -> Void = { result in
            switch result {
            case .success(let (info, _)) where restoring != nil && info.userId != restoring?.session.userId:
                lease.end(nil)
                putBack()
                refuse("Unauthorized: the session to recover belongs to another user")
            case .success(let (info, claims)) where !self.engine.isClosed:
                self.join(namespace, info: info, claims: claims, lease: lease, restoring: restoring)
            case .success:
                lease.end(nil)  // the session ended during the checks
                putBack()
            case .failure(let error):
                lease.end(nil)
                putBack()
                let refusal = error as? GatewayResponseError
                gateway.metrics.rejected(refusal?.reason ?? "internal")
                refuse(refusal.map { SocketIOHTTP.message(of: $0.response) } ?? "Internal server error")
            }
        }
        do {
            if let admitted = try Admission.authorizeNow(candidate, gateway: gateway) { return finish(.success(admitted)) }
        } catch {
            return finish(.failure(error))
        }
        let head = self.handshake.head
        self.eventLoop.makeFutureWithTask { try await Admission.authorize(candidate, head: head, gateway: gateway) }.assumeIsolated()
            .whenComplete(finish)
    }

    private func join(_ namespace: String, info: ConnectionInfo, claims: VerifiedClaims?, lease: ConnectionLease, restoring: Restoring?) {
        lease.open()
        let connection = ClientConnection(
            info: info,
            claims: claims,
            lease: lease,
            gateway: self.gateway,
            // Engine.IO's own heartbeat keeps the session alive; only the idle timeout applies per namespace.
            liveness: Liveness(self.gateway.socketIOLiveness, now: .now()),
            eventLoop: self.eventLoop,
            encoding: self.gateway.socketIOEncoding(namespace, self.transport)
        )
        let joined = SocketIONamespace(namespace, engine: self, connection: connection)
        self.namespaces.append(joined)
        self.runSocket(self.socket.decide(namespace, .accept(sid: info.id.rawValue, pid: info.recoverable?.pid)))
        connection.start(joined, active: true, metadata: ["transport": "socket.io", "namespace": "\(namespace)"])
        if let restoring {
            let broker = self.gateway.broker
            connection.recover {
                await SocketIORecovery.resumePoints(
                    restoring.session,
                    offset: restoring.offset,
                    droppedBefore: restoring.session.heardAt,
                    broker: broker
                )
            }
        }
    }

    /// The server ends a namespace's connection (`DELETE @connections`, token expiry, idle): DISCONNECT, then
    /// `$disconnect`.
    func disconnect(_ namespace: SocketIONamespace, _ status: ConnectionStateMachine.CloseStatus) {
        guard let index = self.namespaces.firstIndex(where: { $0 === namespace }) else { return }
        self.namespaces.remove(at: index)
        // The node going away (the drain) or a reconnect taking the socket over: the client may recover it elsewhere.
        namespace.recoverable = status.code == CloseCode.goingAway
        self.runSocket(self.socket.disconnect(namespace: namespace.name))
        namespace.connection.protocolEnded(status)
        namespace.connection.closed()
    }

    // MARK: Writing for the namespaces

    func write(_ encoded: ByteBuffer, promise: EventLoopPromise<Void>?) {
        if let webSocket {
            webSocket.write(encoded, flush: false)
            promise?.succeed()
            return
        }
        // Polling: the encoding made payload records; they queue in the session (or answer the waiting GET).
        self.polling?.queuedBytes += encoded.readableBytes
        if let packets = try? EnginePacket.decodePayload(Array(encoded.readableBytesView), maxPayload: .max) {
            for case .message(let message) in packets { self.run(self.engine.send(message), current: nil) }
        }
        promise?.succeed()
        if self.queuedBytes > self.gateway.configuration.outboundQueueBytes { self.webSocketUnwritable() }
    }

    func flush() {
        self.webSocket?.flush()
    }

    var queuedBytes: Int { self.webSocket == nil ? self.polling?.queuedBytes ?? 0 : 0 }
    var isWritable: Bool { self.webSocket?.isWritable ?? (self.queuedBytes <= self.gateway.configuration.outboundQueueBytes) }

    func setReading(_ on: Bool) {
        self.readsHeld = max(0, self.readsHeld + (on ? -1 : 1))
        if (on && self.readsHeld == 0) || (!on && self.readsHeld == 1) { self.webSocket?.setReading(on) }
        if on, self.readsHeld == 0, let polling, let (body, responder) = polling.heldPost {
            polling.heldPost = nil
            self.post(body, responder)
        }
    }
}

/// A Socket.IO namespace joined on an Engine.IO session: the ``ClientTransport`` of its ``ClientConnection``.
/// Events become routed messages (the event name is the route key); answers to an event sent with an ack id go
/// back as its ACK.
final class SocketIONamespace: ClientTransport {
    let name: String
    let connection: ClientConnection
    /// Unowned: the session owns its namespaces and outlives them.
    private unowned let engine: EngineConnection
    /// The route key and ack id of each message handed to the connection and not routed yet, in order.
    private var pending: [(routeKey: String, ackID: Int?)] = []
    /// The ack id of the event being routed, until its answer (or an empty ACK) goes out.
    private var currentAck: Int?

    /// Set when the socket ends other than by a DISCONNECT: it is left for its reconnect (with recovery on).
    var recoverable = false

    init(_ name: String, engine: EngineConnection, connection: ClientConnection) {
        (self.name, self.engine, self.connection) = (name, engine, connection)
    }

    func afterUnregistered(rooms: Set<RoomID>) -> (@Sendable () async -> Void)? {
        guard self.recoverable, self.connection.info.recoverable != nil else { return nil }
        let (info, gateway) = (self.connection.info, self.connection.gateway)
        // Everything written before the last ping the client answered was read; that is within this long.
        let settings = gateway.configuration.socketIO
        let heardAt = gateway.wallClock() - Int64((settings.pingInterval + settings.pingTimeout).components.seconds) * 1000
        return { await SocketIORecovery.leave(info, rooms: rooms, heardAt: heardAt, gateway: gateway) }
    }

    /// An EVENT: the message the route sees is `arg0` when it is an object (with `"action": name` added if it has
    /// none), `{"action": name, "data": arg0}` otherwise (later arguments are ignored), or `arg0`'s bytes as a
    /// binary message when it is binary.
    func received(_ name: String, _ arguments: [SocketValue], ackID: Int?) {
        let buffer: ByteBuffer
        var isText = true
        switch arguments.first {
        case .binary(let bytes):
            (buffer, isText) = (ByteBuffer(bytes: bytes), false)
        case .some(let argument) where argument.json?.objectValue != nil:
            var object = argument.json!.objectValue!
            if object["action"] == nil { object = JSONObject([.init("action", .string(name))] + object.members) }
            buffer = ByteBuffer(bytes: JSONValue.object(object).jsonBytes)
        case let argument:
            let data = argument?.json ?? .null
            buffer = ByteBuffer(bytes: JSONValue.object(JSONObject([.init("action", .string(name)), .init("data", data)])).jsonBytes)
        }
        self.pending.append((name, ackID))
        self.connection.received(buffer, isText: isText, now: .now())
    }

    func write(_ encoded: ByteBuffer, promise: EventLoopPromise<Void>?) { self.engine.write(encoded, promise: promise) }
    func flush() { self.engine.flush() }
    var queuedBytes: Int { self.engine.queuedBytes }
    var isWritable: Bool { self.engine.isWritable }
    func setReading(_ on: Bool) { self.engine.setReading(on) }
    func sendPing() {}  // Engine.IO pings the session
    func close(_ status: ConnectionStateMachine.CloseStatus) { self.engine.disconnect(self, status) }
    func closeNow(_ status: ConnectionStateMachine.CloseStatus) { self.engine.eventLoop.assumeIsolated().execute { self.engine.close() } }
    func drop(reason: String) { self.engine.close() }

    func selectRoute(_ body: JSONValue?) -> String? {
        guard !self.pending.isEmpty else { return nil }
        let (routeKey, ackID) = self.pending.removeFirst()
        self.currentAck = ackID
        return routeKey
    }

    func encodeReply(_ kind: OutboundFrame.Kind, _ payload: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        guard let ackID = self.currentAck, let encoding = self.connection.encoding as? SocketIOEncoding else {
            return self.connection.encoding.encode(kind, payload, allocator: allocator)
        }
        self.currentAck = nil
        return encoding.encodeAck(ackID, kind, payload, allocator: allocator)
    }

    /// An event with an ack id that got no answer (a `sendMessage`) is acknowledged empty, so the client's callback runs.
    func messageDone() {
        guard let ackID = self.currentAck, let encoding = self.connection.encoding as? SocketIOEncoding else { return }
        self.currentAck = nil
        self.engine.write(encoding.encodeEmptyAck(ackID, allocator: ByteBufferAllocator()), promise: nil)
        self.engine.flush()
    }
}
