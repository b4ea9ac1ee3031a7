import NIOCore
import NIOHTTP1
import SwitchboardConfiguration
import SwitchboardCore
import SwitchboardSocketIO
import Synchronization

/// Engine.IO without sticky sessions: a polling request for a session another node owns is relayed to that node
/// over the broker's node channels, and its answer comes back on this node's channel.
///
/// - A `sid` names its owner: `{nodeId}~{random}`. No lookup: the requesting node reads the owner from the `sid`
///   (a `sid` whose prefix is not a valid node id is simply unknown; a forged one reaches a node that does not know
///   it, or none).
/// - Requester side (``forward(isGet:sid:to:body:responder:)``): at most ``maximum`` relays wait per node; each
///   ends with the owner's answer, with 400 "Session ID unknown" when no node listens on the owner's channel (the
///   publish reached no subscriber), or at ``timeout`` (a little over a ping interval and a ping timeout: a live
///   session answers a GET at least once per ping interval). A client that leaves while its GET waits is told to
///   the owner (``abort(_:)``).
/// - Owner side (``received(from:_:gateway:)``): the request is served as a local one whose answer is published
///   back; at most ``maximum`` relayed GETs wait here.
///
/// Messages (inside the broker's envelope, whose header names the sending node): a tab-separated header line, a
/// newline, then the body bytes untouched:
/// `Q id GET|POST sid` (a request), `A id sid status [name value]…` (its answer), `X id` (the client left); for a
/// WebSocket held by another node (the upgrade's): `WO id sid` (opened), `WM id sid T|B` (a client message), `WC id sid`
/// (closed), `WU id sid` (unwritable), and back `WF id` (frames to write), `WX id` (close), `WP id 1|0` (reads). An answer
/// completes a request only if its `sid` matches too: a node restarted under the same id counts its requests from 1
/// again, and must not take an answer meant for its previous run.
final class SocketIORelay: Sendable {
    let node: String
    private let broker: any Broker
    private let metrics: GatewayMetrics
    /// Relays waiting on each side of this node.
    let maximum: Int
    let timeout: TimeAmount

    private struct Waiting: Sendable {
        let responder: PollResponder
        let owner: String
        let sid: String
        let isGet: Bool
        var timer: Scheduled<Void>?
    }
    /// Requests of this node's clients waiting for another node's answer, by request id.
    private let waiting = Mutex<[UInt64: Waiting]>([:])
    /// GETs other nodes relayed here and not answered yet: "node\tid" → the session and the local request id.
    private let served = Mutex<[String: (sid: String, id: UInt64)]>([:])
    /// Requester side: WebSockets of this node for sessions of other nodes, by relay id.
    private let sockets = Mutex<[UInt64: NIOLoopBound<SocketIOWebSocketHandler>]>([:])
    /// Owner side: WebSockets other nodes hold for this node's sessions: "node\tid" → the socket.
    private let remotes = Mutex<[String: RemoteWebSocket]>([:])

    init(node: String, broker: any Broker, metrics: GatewayMetrics, maximum: Int, pingInterval: TimeAmount, pingTimeout: TimeAmount) {
        (self.node, self.broker, self.metrics, self.maximum) = (node, broker, metrics, maximum)
        self.timeout = pingInterval + pingTimeout + .seconds(5)
    }

    var isEnabled: Bool { self.broker.relaysToNodes }
    var waitingCount: Int { self.waiting.withLock { $0.count } }
    var socketCount: Int { self.sockets.withLock { $0.count } + self.remotes.withLock { $0.count } }

    // MARK: Session ids

    static let separator = UInt8(ascii: "~")

    /// A new session's id: this node's id, `~`, and a random connection id (16 characters).
    static func makeSid(node: String) -> String {
        node + "~" + ConnectionID.random().rawValue
    }

    /// The node a `sid` names, when it is well formed: a valid node id (``Name``), `~`, a valid connection id.
    static func owner(of sid: String) -> String? {
        guard sid.utf8.count <= Name.maximumLength + 1 + 128, let cut = sid.utf8.lastIndex(of: Self.separator) else { return nil }
        let node = String(sid[..<cut])
        guard Name.problem(with: node, field: "node") == nil, ConnectionID(sid[sid.utf8.index(after: cut)...]) != nil else { return nil }
        return node
    }

    /// The node to relay a request for `sid` to, or `nil` when it is this node's (or unknown anywhere).
    func remoteOwner(of sid: String) -> String? {
        guard self.isEnabled, let owner = Self.owner(of: sid), owner != self.node else { return nil }
        return owner
    }

    // MARK: Requester side

    /// Relays a client's polling request to the session's owner; `responder` gets the owner's answer.
    func forward(isGet: Bool, sid: String, to owner: String, body: [UInt8], responder: PollResponder, loop: any EventLoop) {
        let id = responder.id
        let admitted = self.waiting.withLock { waiting -> Bool in
            guard waiting.count < self.maximum else { return false }
            waiting[id] = Waiting(responder: responder, owner: owner, sid: sid, isGet: isGet, timer: nil)
            return true
        }
        guard admitted else {
            self.metrics.socketIORelay("full")
            return responder.respond(SocketIOHTTP.refusal(.serviceUnavailable, code: 3, "Too many relayed requests on this node; retry later"))
        }
        self.metrics.socketIORelay("forwarded")
        let timer = loop.scheduleTask(in: self.timeout) { self.expire(id) }
        let armed = self.waiting.withLock { waiting -> Bool in
            guard waiting[id] != nil else { return false }
            waiting[id]!.timer = timer
            return true
        }
        if !armed { timer.cancel() }
        let header = Array("Q\t\(id)\t\(isGet ? "GET" : "POST")\t\(sid)\n".utf8)
        self.broker.relay(header + body, to: owner) { listened in
            // No node listens on the owner's channel: it is gone, and so is the session.
            if !listened, self.complete(id, sid: sid, SocketIOHTTP.unknownSession) { self.metrics.socketIORelay("owner_gone") }
        }
    }

    /// The client's connection closed while its request waited: the owner forgets the GET.
    /// - Returns: whether `id` was a relayed request.
    @discardableResult
    func abort(_ id: UInt64) -> Bool {
        guard let entry = self.waiting.withLock({ $0.removeValue(forKey: id) }) else { return false }
        entry.timer?.cancel()
        if entry.isGet { self.broker.relay(Array("X\t\(id)\n".utf8), to: entry.owner) { _ in } }
        return true
    }

    /// - Returns: whether `id` was still waiting.
    @discardableResult
    private func complete(_ id: UInt64, sid: String, _ response: GatewayResponse) -> Bool {
        let found = self.waiting.withLock { waiting -> Waiting? in
            guard waiting[id]?.sid == sid else { return nil }
            return waiting.removeValue(forKey: id)
        }
        guard let entry = found else { return false }
        entry.timer?.cancel()
        entry.responder.respond(response)
        return true
    }

    /// No answer in time: the owner is gone (or cut off); the client starts a new session.
    private func expire(_ id: UInt64) {
        guard let entry = self.waiting.withLock({ $0.removeValue(forKey: id) }) else { return }
        self.metrics.socketIORelay("timeout")
        if entry.isGet { self.broker.relay(Array("X\t\(id)\n".utf8), to: entry.owner) { _ in } }
        entry.responder.respond(SocketIOHTTP.unknownSession)
    }

    // MARK: Both sides

    /// Bytes another node relayed here: a request for one of this node's sessions, an answer to one of this node's
    /// requests, or a client gone. Anything malformed is dropped.
    func received(from node: String, _ payload: [UInt8], gateway: GatewayContext) {
        guard let newline = payload.prefix(1024).firstIndex(of: 0x0A) else { return }
        let fields = String(decoding: payload[..<newline], as: UTF8.self).split(separator: "\t", omittingEmptySubsequences: false)
        guard fields.count >= 2, let id = UInt64(fields[1]) else { return }
        let body = Array(payload[(newline + 1)...])
        switch fields[0] {
        case "Q":
            guard fields.count == 4, fields[2] == "GET" || fields[2] == "POST" else { return }
            self.serve(from: node, id: id, isGet: fields[2] == "GET", sid: String(fields[3]), body: body, gateway: gateway)
        case "A":
            guard fields.count >= 4, fields.count % 2 == 0, let code = Int(fields[3]), (100...599).contains(code) else { return }
            var response = GatewayResponse(HTTPResponseStatus(statusCode: code), body: body)
            response.headers = stride(from: 4, to: fields.count, by: 2).map { (String(fields[$0]), String(fields[$0 + 1])) }
            self.complete(id, sid: String(fields[2]), response)
        case "X":
            guard let (sid, local) = self.served.withLock({ $0.removeValue(forKey: "\(node)\t\(id)") }) else { return }
            gateway.engines.with(sid) { $0?.pollAborted(local) }
        case "WO" where fields.count == 3:
            self.remoteOpened(from: node, id: id, sid: String(fields[2]), gateway: gateway)
        case "WM" where fields.count == 4 && (fields[3] == "T" || fields[3] == "B"):
            guard let remote = self.remote(node, id, sid: fields[2]) else { return }
            let message: EngineMessage = fields[3] == "T" ? .text(String(decoding: body, as: UTF8.self)) : .binary(body)
            gateway.engines.with(remote.sid) { $0?.received(message, from: EngineWire(remote: remote)) }
        case "WC" where fields.count == 3:
            guard let remote = self.remote(node, id, sid: fields[2]) else { return }
            self.remotes.withLock { _ = $0.removeValue(forKey: "\(node)\t\(id)") }
            gateway.engines.with(remote.sid) { $0?.webSocketClosed(EngineWire(remote: remote)) }
        case "WU" where fields.count == 3:
            guard let remote = self.remote(node, id, sid: fields[2]) else { return }
            remote.writable.store(false, ordering: .relaxed)
            gateway.engines.with(remote.sid) { $0?.webSocketUnwritable() }
        case "WF":
            self.socket(id) { $0.remoteFrames(ByteBuffer(bytes: body)) }
        case "WX":
            guard let handler = self.sockets.withLock({ $0.removeValue(forKey: id) }) else { return }
            handler.eventLoop.execute { handler.value.closeNormally() }
        case "WP" where fields.count == 3:
            self.socket(id) { $0.setReading(fields[2] == "1") }
        default:
            return
        }
    }

    // MARK: WebSockets, requester side

    /// A WebSocket for a session of `owner` (the upgrade's, after polling) reached this node: its messages are
    /// relayed to the owner, which sends back the frames to write.
    /// - Returns: its relay id, `nil` when too many wait already.
    func openRemote(_ handler: NIOLoopBound<SocketIOWebSocketHandler>, sid: String, owner: String) -> UInt64? {
        let id = SocketIOHTTP.nextRequestID()
        let admitted = self.sockets.withLock { sockets -> Bool in
            guard sockets.count < self.maximum else { return false }
            sockets[id] = handler
            return true
        }
        guard admitted else {
            self.metrics.socketIORelay("full")
            return nil
        }
        self.metrics.socketIORelay("websocket")
        self.broker.relay(Array("WO\t\(id)\t\(sid)\n".utf8), to: owner) { listened in
            guard !listened, let handler = self.sockets.withLock({ $0.removeValue(forKey: id) }) else { return }
            self.metrics.socketIORelay("owner_gone")
            handler.eventLoop.execute { handler.value.closeNormally() }
        }
        return id
    }

    /// A whole message from the client of a relayed WebSocket.
    func remoteMessage(_ id: UInt64, sid: String, owner: String, _ message: EngineMessage) {
        let (kind, bytes): (String, [UInt8]) =
            switch message {
            case .text(let text): ("T", Array(text.utf8))
            case .binary(let bytes): ("B", bytes)
            }
        self.broker.relay(Array("WM\t\(id)\t\(sid)\t\(kind)\n".utf8) + bytes, to: owner) { _ in }
    }

    /// The client's socket closed, or can take no more.
    func remoteSocketEnded(_ id: UInt64, sid: String, owner: String, closed: Bool) {
        if closed { self.sockets.withLock { _ = $0.removeValue(forKey: id) } }
        self.broker.relay(Array("\(closed ? "WC" : "WU")\t\(id)\t\(sid)\n".utf8), to: owner) { _ in }
    }

    private func socket(_ id: UInt64, _ body: @escaping @Sendable (SocketIOWebSocketHandler) -> Void) {
        guard let handler = self.sockets.withLock({ $0[id] }) else { return }
        handler.eventLoop.execute { body(handler.value) }
    }

    // MARK: WebSockets, owner side

    private func remoteOpened(from node: String, id: UInt64, sid: String, gateway: GatewayContext) {
        let remote = RemoteWebSocket(node: node, id: id, sid: sid, relay: self)
        let admitted = self.remotes.withLock { remotes -> Bool in
            guard remotes.count < self.maximum else { return false }
            remotes["\(node)\t\(id)"] = remote
            return true
        }
        guard admitted else { return remote.close() }
        let found = gateway.engines.with(sid) { session in
            guard let session else { return remote.close() }
            session.webSocketOffered(EngineWire(remote: remote))
        }
        if !found { remote.close() }
    }

    private func remote(_ node: String, _ id: UInt64, sid: Substring) -> RemoteWebSocket? {
        guard let remote = self.remotes.withLock({ $0["\(node)\t\(id)"] }), remote.sid == sid else { return nil }
        return remote
    }

    /// Frames, a close or a change of reading for a relayed WebSocket, to the node that holds it.
    fileprivate func toSocket(_ remote: RemoteWebSocket, _ kind: String, field: String? = nil, _ bytes: [UInt8] = []) {
        if kind == "WX" { self.remotes.withLock { _ = $0.removeValue(forKey: "\(remote.node)\t\(remote.id)") } }
        let header = "\(kind)\t\(remote.id)" + (field.map { "\t" + $0 } ?? "") + "\n"
        self.broker.relay(Array(header.utf8) + bytes, to: remote.node) { _ in }
    }

    // MARK: Owner side

    private func serve(from node: String, id: UInt64, isGet: Bool, sid: String, body: [UInt8], gateway: GatewayContext) {
        let answer: @Sendable (GatewayResponse) -> Void = { response in
            var header = "A\t\(id)\t\(sid)\t\(response.status.code)"
            for (name, value) in response.headers where !(name + value).utf8.contains(where: { $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }) {
                header += "\t\(name)\t\(value)"
            }
            self.broker.relay(Array((header + "\n").utf8) + response.body, to: node) { _ in }
        }
        guard body.count <= gateway.configuration.socketIO.maxPayload else {
            return answer(SocketIOHTTP.error(.payloadTooLarge))
        }
        let key = "\(node)\t\(id)"
        let local = SocketIOHTTP.nextRequestID()
        if isGet {
            let admitted = self.served.withLock { served -> Bool in
                guard served.count < self.maximum else { return false }
                served[key] = (sid, local)
                return true
            }
            guard admitted else {
                self.metrics.socketIORelay("full")
                return answer(SocketIOHTTP.refusal(.serviceUnavailable, code: 3, "Too many relayed requests on this node; retry later"))
            }
        }
        self.metrics.socketIORelay("served")
        let responder = PollResponder(id: local) { response, written in
            if isGet {
                // Only this request's entry: a later one under the same key (its node restarted) stays.
                self.served.withLock { served in if served[key]?.id == local { served.removeValue(forKey: key) } }
            }
            answer(response)
            written?()
        }
        SocketIOHTTP.serve(isGet: isGet, sid: sid, body: body, responder: responder, gateway: gateway)
    }
}

/// On the owner: a WebSocket of one of its sessions that another node holds. The client's messages arrive relayed;
/// the frames the session writes are published back, a flush at a time, and that node writes them as they are.
final class RemoteWebSocket: Sendable {
    let node: String
    let id: UInt64
    let sid: String
    private let relay: SocketIORelay
    private let pending = Mutex<[UInt8]>([])
    /// Cleared when the holding node reports its socket unwritable (a slow client).
    let writable = Atomic<Bool>(true)
    /// Past this many unflushed bytes they go out at once.
    private static let flushBytes = 64 << 10

    fileprivate init(node: String, id: UInt64, sid: String, relay: SocketIORelay) {
        (self.node, self.id, self.sid, self.relay) = (node, id, sid, relay)
    }

    func write(_ bytes: ByteBuffer, flush: Bool) {
        let full = self.pending.withLock { pending in
            pending.append(contentsOf: bytes.readableBytesView)
            return pending.count >= Self.flushBytes
        }
        if flush || full { self.flush() }
    }

    func flush() {
        let bytes = self.pending.withLock { pending in
            defer { pending = [] }
            return pending
        }
        if !bytes.isEmpty { self.relay.toSocket(self, "WF", bytes) }
    }

    func close() {
        self.flush()
        self.relay.toSocket(self, "WX")
    }

    func setReading(_ on: Bool) { self.relay.toSocket(self, "WP", field: on ? "1" : "0") }
    var isWritable: Bool { self.writable.load(ordering: .relaxed) }
}
