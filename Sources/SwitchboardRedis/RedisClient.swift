import Logging
import NIOCore
import Synchronization

/// Commands over one pipelined connection, re-established whenever it is lost.
///
/// Deliberately small: `send` and `pipeline` are the whole interface, so a maintained Redis client can replace this
/// one behind the broker without touching it.
///
/// Callers never wait on a Redis that is away: once a command times out or the connection fails, Redis counts as
/// unreachable and every call fails at once until ``probe()`` (run every second by the broker) gets an answer
/// again. A frozen Redis (SIGSTOP, a partition) then costs a caller at most one probe period, not a timeout each.
public final class RedisClient: Sendable {
    private struct State {
        var connection: RedisConnection?
        var reachable = true
        /// A lost connection was replaced since the last probe: Redis may have restarted, empty.
        var reconnected = false
    }

    private let configuration: RedisConfiguration
    private let group: any EventLoopGroup
    private let logger: Logger
    private let state = Mutex(State())

    public init(configuration: RedisConfiguration, group: any EventLoopGroup, logger: Logger) {
        self.configuration = configuration
        self.group = group
        self.logger = logger
    }

    /// Sends a command and returns its reply; error replies throw `.server`.
    @discardableResult
    public func send(_ command: RedisArgument...) async throws(RedisError) -> RESPValue {
        try await self.send(command)
    }

    public func send(_ command: [RedisArgument]) async throws(RedisError) -> RESPValue {
        let connection = try await self.connection()
        do {
            return try await connection.send(command)
        } catch {
            self.failed(error, connection)
            throw error
        }
    }

    /// Sends all commands at once and returns their replies in order; an error reply is returned, not thrown.
    public func pipeline(_ commands: [[RedisArgument]]) async throws(RedisError) -> [RESPValue] {
        guard !commands.isEmpty else { return [] }
        let connection = try await self.connection()
        do {
            return try await connection.pipeline(commands)
        } catch {
            self.failed(error, connection)
            throw error
        }
    }

    /// Whether Redis answered the last command or probe.
    public var isConnected: Bool { self.state.withLock { $0.reachable && $0.connection?.isActive == true } }

    /// Whether Redis counts as reachable: no command failed since the last probe that answered (a cluster picks a
    /// primary for keyless commands by it).
    var isReachable: Bool { self.state.withLock { $0.reachable } }

    /// What a probe found.
    public enum Probe: Sendable {
        case answered
        /// Answered after a failure or a lost connection: whatever was written while Redis was away, or lost with
        /// a restarted Redis, must be written again.
        case recovered
        case unreachable
    }

    /// Connects if needed and sends `PING`, each within a second (AUTH at the usual timeout); marks Redis reachable
    /// or not by the outcome.
    public func probe() async -> Probe {
        var quick = self.configuration
        quick.connectTimeout = min(quick.connectTimeout, .seconds(1))
        do {
            let connection = try await self.connection(configuration: quick, evenIfUnreachable: true)
            _ = try await connection.send(["PING"], timeout: .seconds(1))
            let recovered = self.state.withLock { state in
                defer { (state.reachable, state.reconnected) = (true, false) }
                return !state.reachable || state.reconnected
            }
            if recovered { self.logger.info("Redis reachable again") }
            return recovered ? .recovered : .answered
        } catch {
            self.failed(error, nil)
            return .unreachable
        }
    }

    /// A failed call: Redis is unreachable until a probe answers, and the connection is closed so that every
    /// command still waiting on it fails now rather than at its timeout. Error replies change nothing.
    private func failed(_ error: RedisError, _ connection: RedisConnection?) {
        guard error.code == .connection || error.code == .timeout else { return }
        let (wasReachable, current) = self.state.withLock { state -> (Bool, RedisConnection?) in
            // A connection already replaced says nothing about Redis now.
            if let connection, state.connection !== connection { return (false, nil) }
            defer { state.reachable = false }
            return (state.reachable, state.connection)
        }
        current?.close()
        if wasReachable { self.logger.error("Redis unreachable", metadata: ["error": "\(error)"]) }
    }

    private func connection(
        configuration: RedisConfiguration? = nil,
        evenIfUnreachable: Bool = false
    ) async throws(RedisError) -> RedisConnection {
        let (current, reachable) = self.state.withLock { ($0.connection, $0.reachable) }
        guard reachable || evenIfUnreachable else { throw RedisError(.connection, "Redis is unreachable (probed every second)", mayHaveRun: false) }
        if let current, current.isActive { return current }
        let connection = try await RedisConnection.connect(configuration ?? self.configuration, group: self.group)
        // Callers that found no connection connect at the same time: the first one up is kept, so no command is
        // left on a connection closed under it.
        let chosen = self.state.withLock { state -> RedisConnection in
            if let existing = state.connection, existing.isActive { return existing }
            if state.connection != nil { state.reconnected = true }
            state.connection = connection
            return connection
        }
        if chosen !== connection { connection.close() }
        return chosen
    }

    public func close() {
        self.state.withLock { $0.connection }?.close()
    }
}

/// A dedicated pub/sub connection that keeps its subscriptions across reconnects.
public final class RedisSubscriber: Sendable {
    public typealias Handler = @Sendable (_ channel: String, _ payload: [UInt8]) -> Void

    private struct State {
        var connection: RedisConnection?
        var channels: Set<String> = []
        var patterns: Set<String> = []
        var stopped = false
    }

    private let configuration: RedisConfiguration
    private let group: any EventLoopGroup
    private let logger: Logger
    private let handler: Handler
    private let onReconnect: @Sendable () -> Void
    private let state = Mutex(State())

    /// - Parameters:
    ///   - handler: called for every message, on a NIO thread; it must not block.
    ///   - onReconnect: called after a lost connection is back and resubscribed (to re-sync anything missed).
    public init(
        configuration: RedisConfiguration,
        group: any EventLoopGroup,
        logger: Logger,
        onReconnect: @escaping @Sendable () -> Void = {},
        handler: @escaping Handler
    ) {
        self.configuration = configuration
        self.group = group
        self.logger = logger
        self.handler = handler
        self.onReconnect = onReconnect
    }

    public var isConnected: Bool { self.state.withLock { $0.connection?.isActive ?? false } }

    /// Keeps the connection up until `stop()`: reconnects with backoff and subscribes again to everything.
    public func run() async {
        var failures = 0
        var everConnected = false
        while !self.state.withLock({ $0.stopped }) {
            do {
                let connection = try await RedisConnection.connect(self.configuration, group: self.group) { [handler] value in
                    guard let parts = value.elements, let kind = parts.first?.string else { return }
                    if kind == "message", parts.count == 3, let channel = parts[1].string, let payload = parts[2].bytes {
                        handler(channel, payload)
                    } else if kind == "pmessage", parts.count == 4, let channel = parts[2].string, let payload = parts[3].bytes {
                        handler(channel, payload)
                    }
                }
                // Subscribed to everything before it is published: until then `subscribe` only remembers (and
                // never waits on a Redis that may be frozen), and this loop picks up what was remembered meanwhile.
                var (channels, patterns) = (Set<String>(), Set<String>())
                while true {
                    let (moreChannels, morePatterns) = self.state.withLock { state -> (Set<String>, Set<String>) in
                        let missing = (state.channels.subtracting(channels), state.patterns.subtracting(patterns))
                        if missing.0.isEmpty, missing.1.isEmpty { state.connection = connection }
                        return missing
                    }
                    if moreChannels.isEmpty, morePatterns.isEmpty { break }
                    for channel in moreChannels { _ = try await connection.send(["SUBSCRIBE", .string(channel)]) }
                    for pattern in morePatterns { _ = try await connection.send(["PSUBSCRIBE", .string(pattern)]) }
                    channels.formUnion(moreChannels)
                    patterns.formUnion(morePatterns)
                }
                if everConnected {
                    self.logger.info("pub/sub reconnected", metadata: ["channels": "\(channels.count)"])
                    self.onReconnect()
                }
                everConnected = true
                failures = 0
                try? await connection.channel.closeFuture.get()
                self.state.withLock { $0.connection = nil }
            } catch {
                if failures == 0 { self.logger.error("Redis pub/sub unavailable", metadata: ["error": "\(error)"]) }
                failures += 1
            }
            if self.state.withLock({ $0.stopped }) { return }
            try? await Task.sleep(for: .milliseconds(min(100 * (1 << min(failures, 6)), 5000)))
        }
    }

    /// Drops the connection (Redis stopped answering): commands waiting on it fail now, and the next connection
    /// subscribes again to everything.
    public func reset() {
        self.state.withLock { $0.connection }?.close()
    }

    public func stop() {
        let connection = self.state.withLock { state in
            state.stopped = true
            return state.connection
        }
        connection?.close()
    }

    /// Subscribes (remembered for reconnects); returns once Redis confirmed, when connected.
    public func subscribe(_ channel: String) async throws(RedisError) {
        let connection = self.state.withLock { $0.channels.insert(channel).inserted ? $0.connection : nil }
        _ = try await connection?.send(["SUBSCRIBE", .string(channel)])
    }

    public func unsubscribe(_ channel: String) async throws(RedisError) {
        let connection = self.state.withLock { $0.channels.remove(channel) != nil ? $0.connection : nil }
        _ = try await connection?.send(["UNSUBSCRIBE", .string(channel)])
    }

    public func psubscribe(_ pattern: String) async throws(RedisError) {
        let connection = self.state.withLock { $0.patterns.insert(pattern).inserted ? $0.connection : nil }
        _ = try await connection?.send(["PSUBSCRIBE", .string(pattern)])
    }
}
