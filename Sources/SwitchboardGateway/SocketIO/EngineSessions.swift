import NIOCore
import SwitchboardConfiguration
import Synchronization

/// This node's Engine.IO sessions. Each lives on the event loop of the request that opened it, for its whole life
/// (as a WebSocket connection does); later requests for its `sid` (polls, posts, the upgrade's WebSocket) arrive on
/// any loop and are handed to that one. The only lock guards the `sid` → loop index.
final class EngineSessions: Sendable {
    private let owners = Mutex<[String: ObjectIdentifier]>([:])
    private let shards: [ObjectIdentifier: NIOLoopBoundBox<[String: EngineConnection]>]
    /// A handshake needs no credentials (they come with a namespace's CONNECT), and a polling session holds no
    /// socket: without this bound a flood of handshakes would hold memory until each one's connect timeout.
    let maximum: Int
    /// Without `limits.max_connections`: a few KiB each, so at most a few hundred MiB.
    static let defaultMaximum = 65_536

    init(group: any EventLoopGroup, maximum: Int) {
        var shards: [ObjectIdentifier: NIOLoopBoundBox<[String: EngineConnection]>] = [:]
        for loop in group.makeIterator() { shards[ObjectIdentifier(loop)] = .makeBoxSendingValue([:], eventLoop: loop) }
        (self.shards, self.maximum) = (shards, maximum)
    }

    /// Takes a place for a new session, `false` when the node holds ``maximum`` already; a session made after it
    /// must be ``add(_:)``ed.
    func reserve(_ sid: String, on loop: any EventLoop) -> Bool {
        self.owners.withLock { owners in
            guard owners.count < self.maximum else { return false }
            owners[sid] = ObjectIdentifier(loop)
            return true
        }
    }

    /// Called on the session's loop, with its place reserved.
    func add(_ session: EngineConnection) {
        self.shards[ObjectIdentifier(session.eventLoop)]!.value[session.sid] = session
    }

    /// Called on the session's loop, once it closed.
    func remove(_ session: EngineConnection) {
        self.shards[ObjectIdentifier(session.eventLoop)]!.value.removeValue(forKey: session.sid)
        self.owners.withLock { _ = $0.removeValue(forKey: session.sid) }
    }

    func contains(_ sid: String) -> Bool {
        self.owners.withLock { $0[sid] != nil }
    }

    /// Runs `body` on the loop of session `sid` with the session (`nil` if it ended meanwhile).
    /// - Returns: `false` when no session has that `sid` (`body` does not run).
    @discardableResult
    func with(_ sid: String, _ body: @escaping @Sendable (EngineConnection?) -> Void) -> Bool {
        guard let key = self.owners.withLock({ $0[sid] }), let box = self.shards[key] else { return false }
        if box.eventLoop.inEventLoop {
            body(box.value[sid])
        } else {
            box.eventLoop.execute { body(box.value[sid]) }
        }
        return true
    }

    /// How often each loop sweeps its sessions: a twentieth of the shortest Socket.IO timing, between 5 ms and 1 s.
    /// Its own period, not the WebSocket heartbeat's: with that one (up to 1 s) a `ping_interval` of 300 ms pinged
    /// every second and a 200 ms `ping_timeout` fired up to a second late. The defaults (20 s, 25 s, 45 s) keep 1 s.
    static func sweepInterval(_ socketIO: GatewayConfiguration.SocketIO) -> TimeAmount {
        let shortest = [socketIO.pingInterval, socketIO.pingTimeout, socketIO.connectTimeout, socketIO.heartbeatEventInterval]
            .compactMap { $0 }.min()!
        return TimeAmount(min(max(shortest / 20, .milliseconds(5)), .seconds(1)))
    }

    /// The heartbeat sweep of one loop (``LocalHub/tick(on:now:)``'s companion): pings, timeouts, heartbeat events.
    func tick(on loop: any EventLoop, now: NIODeadline) {
        guard let box = self.shards[ObjectIdentifier(loop)] else { return }
        for session in box.value.values { session.tick(now: now) }
    }
}
