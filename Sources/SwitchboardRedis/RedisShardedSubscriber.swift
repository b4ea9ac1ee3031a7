import Logging
import NIOCore
import Synchronization

/// Sharded pub/sub on a Redis Cluster: each channel is subscribed (`SSUBSCRIBE`) on the primary that owns its slot,
/// over one connection per primary, and `SPUBLISH` reaches only that shard. The set of channels is kept across lost
/// connections, failovers and slot moves: whatever is lost is subscribed again where its slot now lives.
///
/// Replies and messages share a RESP2 connection, so the unsolicited `sunsubscribe` Redis sends when a slot moves
/// away can arrive while a command waits for its reply. Every reply is checked against the channel it confirms, and
/// a connection whose replies are out of step is closed and subscribed again from scratch.
public final class RedisShardedSubscriber: RedisPubSub {
    private struct State {
        var channels: Set<String> = []
        /// The node each channel is subscribed on, once it confirmed.
        var subscribed: [String: ClusterNode] = [:]
        var connections: [ClusterNode: RedisConnection] = [:]
        /// Subscriptions lost so far (a connection, a slot move), and those resubscribed and reported: while they
        /// differ, the slot map is refreshed before subscribing, and `onReconnect` is called once all are back.
        var losses = 0
        var reported = 0
        var stopped = false
    }

    private let cluster: RedisClusterClient
    private let group: any EventLoopGroup
    private let logger: Logger
    private let handler: RedisSubscriber.Handler
    private let onReconnect: @Sendable () -> Void
    private let state = Mutex(State())
    /// Wakes `run()`: something is to be subscribed.
    private let events: AsyncStream<Void>
    private let wake: AsyncStream<Void>.Continuation

    /// - Parameters:
    ///   - cluster: where slots live, and how to reach and log in to each node.
    ///   - handler: called for every message, on a NIO thread; it must not block.
    ///   - onReconnect: called once lost subscriptions are back (to re-sync anything missed meanwhile).
    public init(
        cluster: RedisClusterClient,
        group: any EventLoopGroup,
        logger: Logger,
        onReconnect: @escaping @Sendable () -> Void = {},
        handler: @escaping RedisSubscriber.Handler
    ) {
        self.cluster = cluster
        self.group = group
        self.logger = logger
        self.handler = handler
        self.onReconnect = onReconnect
        (self.events, self.wake) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// Whether every channel is subscribed where its slot lives.
    public var isConnected: Bool { self.state.withLock { $0.subscribed.count == $0.channels.count } }

    /// Subscribes whatever is not, whenever something is lost or added, until `stop()`; retries with backoff.
    public func run() async {
        var failures = 0
        self.wake.yield()
        for await _ in self.events {
            if self.state.withLock({ $0.stopped }) { return }
            do {
                try await self.resubscribe(refresh: failures > 0)
                failures = 0
            } catch {
                if failures == 0 { self.logger.error("Redis sharded pub/sub unavailable", metadata: ["error": "\(error)"]) }
                failures += 1
                try? await Task.sleep(for: .milliseconds(min(100 << min(failures, 4), 1000)))
                self.wake.yield()
            }
        }
    }

    /// Subscribes every channel that is not, each on its slot's owner (connecting to it if need be), and calls
    /// `onReconnect` once all that was lost is back. The slot map is refreshed first after a loss or a failure.
    private func resubscribe(refresh: Bool) async throws {
        let (missing, losses, reported) = self.state.withLock { ($0.channels.subtracting($0.subscribed.keys), $0.losses, $0.reported) }
        if refresh || losses != reported { await self.cluster.refresh() }
        var owners: [ClusterNode: [String]] = [:]
        for channel in missing { owners[try await self.cluster.owner(of: HashSlot.of(channel)), default: []].append(channel) }
        // Every node in turn, so that one that is down does not hold up the others; the first error is thrown after.
        var failure: (any Error)?
        for (node, channels) in owners {
            do {
                let connection = try await self.connection(to: node)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for channel in channels { group.addTask { try await self.subscribe(channel, on: connection, at: node) } }
                    try await group.waitForAll()
                }
            } catch {
                failure = failure ?? error
            }
        }
        if let failure { throw failure }
        let back = self.state.withLock { state in
            guard state.reported != losses, state.subscribed.count == state.channels.count else { return false }
            state.reported = losses
            return true
        }
        if back {
            self.logger.info("sharded pub/sub resubscribed", metadata: ["channels": "\(missing.count)"])
            self.onReconnect()
        }
    }

    /// Subscribes (remembered across reconnects); returns once Redis confirmed, when the owner of the channel's slot
    /// is connected. Otherwise, or when the slot moved, `run()` subscribes it.
    public func subscribe(_ channel: String) async throws(RedisError) {
        guard self.state.withLock({ $0.channels.insert(channel).inserted }) else { return }
        guard let node = try? await self.cluster.owner(of: HashSlot.of(channel)),
            let connection = self.state.withLock({ $0.connections[node] }), connection.isActive
        else {
            self.wake.yield()
            return
        }
        do {
            try await self.subscribe(channel, on: connection, at: node)
        } catch {
            guard error.code == .server, Self.isClusterError(error.message) else { throw error }
            self.wake.yield()
        }
    }

    public func unsubscribe(_ channel: String) async throws(RedisError) {
        let connection = self.state.withLock { state -> RedisConnection? in
            guard state.channels.remove(channel) != nil, let node = state.subscribed.removeValue(forKey: channel) else { return nil }
            return state.connections[node]
        }
        guard let connection else { return }
        let reply = try await connection.send(["SUNSUBSCRIBE", .string(channel)])
        if !Self.confirms(reply, "sunsubscribe", channel) { connection.close() }  // out of step; closing unsubscribes too
    }

    /// Drops every connection (Redis stopped answering); the next ones subscribe again to everything.
    public func reset() {
        for connection in self.state.withLock({ Array($0.connections.values) }) { connection.close() }
    }

    public func stop() {
        let connections = self.state.withLock { state in
            state.stopped = true
            return Array(state.connections.values)
        }
        for connection in connections { connection.close() }
        self.wake.finish()
    }

    /// `SSUBSCRIBE` on `connection`, recorded once confirmed if the channel is still wanted there (else undone). A
    /// `MOVED` tells the cluster client, so the next attempt goes where the slot now lives.
    private func subscribe(_ channel: String, on connection: RedisConnection, at node: ClusterNode) async throws(RedisError) {
        let reply: RESPValue
        do {
            reply = try await connection.send(["SSUBSCRIBE", .string(channel)])
        } catch {
            if error.code == .server, case .moved(let slot, let target)? = ClusterRedirect(error.message, from: node) {
                self.cluster.moved(slot, to: target)
            }
            throw error
        }
        guard Self.confirms(reply, "ssubscribe", channel) else {
            connection.close()
            throw RedisError(.connection, "sharded pub/sub replies out of step on \(node)")
        }
        let wanted = self.state.withLock { state in
            guard state.channels.contains(channel), state.connections[node] === connection else { return false }
            state.subscribed[channel] = node
            return true
        }
        if !wanted { _ = try? await connection.send(["SUNSUBSCRIBE", .string(channel)]) }
    }

    /// The connection to `node`, opened if need be; its loss unsubscribes what it carried, and wakes `run()`.
    private func connection(to node: ClusterNode) async throws(RedisError) -> RedisConnection {
        if let connection = self.state.withLock({ $0.connections[node] }), connection.isActive { return connection }
        let connection = try await RedisConnection.connect(self.cluster.configuration(for: node), group: self.group) { [weak self] value in
            self?.received(value, from: node)
        }
        let stopped = self.state.withLock { state in
            if !state.stopped { state.connections[node] = connection }
            return state.stopped
        }
        guard !stopped else {
            connection.close()
            throw RedisError(.connection, "stopped")
        }
        connection.channel.closeFuture.whenComplete { [weak self] _ in self?.lost(connection, at: node) }
        return connection
    }

    private func lost(_ connection: RedisConnection, at node: ClusterNode) {
        let stopped = self.state.withLock { state in
            guard state.connections[node] === connection else { return state.stopped }
            state.connections[node] = nil
            let carried = state.subscribed.count
            state.subscribed = state.subscribed.filter { $0.value != node }
            if state.subscribed.count < carried { state.losses += 1 }
            return state.stopped
        }
        if !stopped {
            self.logger.warning("sharded pub/sub connection lost", metadata: ["node": "\(node)"])
            self.wake.yield()
        }
    }

    /// A message, or the `sunsubscribe` Redis sends for each channel of a slot that moved away from `node`.
    private func received(_ value: RESPValue, from node: ClusterNode) {
        guard let parts = value.elements, parts.count == 3, let kind = parts[0].string, let channel = parts[1].string else { return }
        if kind == "smessage", let payload = parts[2].bytes {
            self.handler(channel, payload)
        } else if kind == "sunsubscribe" {
            let moved = self.state.withLock { state in
                guard state.subscribed[channel] == node else { return false }
                state.subscribed[channel] = nil
                state.losses += 1
                return true
            }
            if moved { self.wake.yield() }
        }
    }

    /// Whether `reply` is Redis's `[kind, channel, count]` for `channel`.
    private static func confirms(_ reply: RESPValue, _ kind: String, _ channel: String) -> Bool {
        guard let parts = reply.elements, parts.count == 3 else { return false }
        return parts[0].string == kind && parts[1].string == channel
    }

    /// An error that says where the slot lives, or that the cluster is changing.
    private static func isClusterError(_ message: String) -> Bool {
        ["MOVED ", "ASK ", "TRYAGAIN", "CLUSTERDOWN"].contains { message.hasPrefix($0) }
    }
}
