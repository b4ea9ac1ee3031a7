import Logging
import NIOCore
import Synchronization

/// Commands over one pipelined connection that is re-established, with backoff, whenever it is lost.
///
/// Deliberately small: `send` and `pipeline` are the whole interface, so a maintained Redis client can replace this
/// one behind the broker without touching it.
public final class RedisClient: Sendable {
    private let configuration: RedisConfiguration
    private let group: any EventLoopGroup
    private let logger: Logger
    private let state = Mutex<(connection: RedisConnection?, failures: Int)>((nil, 0))

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
        return try await connection.send(command)
    }

    /// Sends all commands at once and returns their replies in order; an error reply is returned, not thrown.
    public func pipeline(_ commands: [[RedisArgument]]) async throws(RedisError) -> [RESPValue] {
        guard !commands.isEmpty else { return [] }
        let connection = try await self.connection()
        return try await connection.pipeline(commands)
    }

    /// Whether the last attempt to talk to Redis succeeded.
    public var isConnected: Bool { self.state.withLock { $0.connection?.isActive ?? false } }

    private func connection() async throws(RedisError) -> RedisConnection {
        let (current, failures) = self.state.withLock { ($0.connection, $0.failures) }
        if let current, current.isActive { return current }
        if failures > 0 {
            // Backoff between attempts while Redis is away: 100 ms doubling to 5 s.
            let delay = min(100 * (1 << min(failures - 1, 6)), 5000)
            try? await Task.sleep(for: .milliseconds(delay))
        }
        do {
            let connection = try await RedisConnection.connect(self.configuration, group: self.group)
            let replaced = self.state.withLock { state -> RedisConnection? in
                let old = state.connection
                state = (connection, 0)
                return old
            }
            replaced?.close()
            if failures > 0 { self.logger.info("reconnected to Redis") }
            return connection
        } catch {
            let count = self.state.withLock { state -> Int in
                state.failures += 1
                return state.failures
            }
            if count == 1 { self.logger.error("Redis unavailable", metadata: ["error": "\(error)"]) }
            throw error
        }
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
                let (channels, patterns) = self.state.withLock { state in
                    state.connection = connection
                    return (state.channels, state.patterns)
                }
                for channel in channels { _ = try await connection.send(["SUBSCRIBE", .string(channel)]) }
                for pattern in patterns { _ = try await connection.send(["PSUBSCRIBE", .string(pattern)]) }
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
