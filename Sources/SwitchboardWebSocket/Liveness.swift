import NIOCore

/// Heartbeat and idle rules for one connection, as a state machine over injected time: the handler reports what
/// arrives and asks `tick(now:)` what to do, so tests drive it with plain numbers instead of waiting.
public struct Liveness: Sendable {
    public enum Action: Equatable, Sendable {
        case none
        case sendPing
        /// Nothing arrived, not even a pong, within the pong timeout: the peer is gone.
        case timedOut
        /// No message within the idle timeout.
        case idle
    }

    public let pingInterval: TimeAmount
    public let pongTimeout: TimeAmount
    public let idleTimeout: TimeAmount?
    private var lastHeard: NIODeadline
    private var lastMessage: NIODeadline
    private var lastPing: NIODeadline

    public init(pingInterval: TimeAmount, pongTimeout: TimeAmount, idleTimeout: TimeAmount?, now: NIODeadline) {
        self.pingInterval = pingInterval
        self.pongTimeout = pongTimeout
        self.idleTimeout = idleTimeout
        self.lastHeard = now
        self.lastMessage = now
        self.lastPing = now
    }

    /// Any frame arrived (pongs included).
    public mutating func heard(at now: NIODeadline) { self.lastHeard = now }

    /// A data message arrived: the connection is in use.
    public mutating func messageReceived(at now: NIODeadline) {
        self.lastHeard = now
        self.lastMessage = now
    }

    public var lastActiveAt: NIODeadline { self.lastMessage }

    public mutating func tick(now: NIODeadline) -> Action {
        if now - self.lastHeard >= self.pongTimeout { return .timedOut }
        if let idleTimeout = self.idleTimeout, now - self.lastMessage >= idleTimeout { return .idle }
        if now - self.lastPing >= self.pingInterval {
            self.lastPing = now
            return .sendPing
        }
        return .none
    }
}
