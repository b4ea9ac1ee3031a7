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

    /// The intervals, fixed for a node: one instance shared by all its connections (8 bytes each, not 32).
    public final class Timing: Sendable {
        public let pingInterval: TimeAmount
        public let pongTimeout: TimeAmount
        public let idleTimeout: TimeAmount?

        public init(pingInterval: TimeAmount, pongTimeout: TimeAmount, idleTimeout: TimeAmount?) {
            (self.pingInterval, self.pongTimeout, self.idleTimeout) = (pingInterval, pongTimeout, idleTimeout)
        }
    }

    public let timing: Timing
    private var lastHeard: NIODeadline
    private var lastMessage: NIODeadline
    private var lastPing: NIODeadline

    public init(_ timing: Timing, now: NIODeadline) {
        self.timing = timing
        self.lastHeard = now
        self.lastMessage = now
        self.lastPing = now
    }

    public init(pingInterval: TimeAmount, pongTimeout: TimeAmount, idleTimeout: TimeAmount?, now: NIODeadline) {
        self.init(Timing(pingInterval: pingInterval, pongTimeout: pongTimeout, idleTimeout: idleTimeout), now: now)
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
        if now - self.lastHeard >= self.timing.pongTimeout { return .timedOut }
        if let idleTimeout = self.timing.idleTimeout, now - self.lastMessage >= idleTimeout { return .idle }
        if now - self.lastPing >= self.timing.pingInterval {
            self.lastPing = now
            return .sendPing
        }
        return .none
    }
}
