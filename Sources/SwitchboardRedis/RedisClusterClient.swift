import Logging
import NIOCore
import Synchronization

/// Commands on a Redis Cluster (ElastiCache cluster mode, ElastiCache Serverless, Valkey or Redis clusters): each
/// goes to the primary that owns its key's slot, over one ``RedisClient`` per primary.
///
/// The slot map comes from `CLUSTER SHARDS` (or `CLUSTER SLOTS` on servers without it), asked of any known primary,
/// then of the seed endpoint (ElastiCache's configuration endpoint). A `MOVED` reply updates the slot's owner,
/// refreshes the whole map in the background and sends the command again where it now lives; an `ASK` reply (a slot
/// that is migrating) sends it once to the importing node, behind `ASKING`; `TRYAGAIN` and `CLUSTERDOWN` (a
/// migration or a failover under way) are retried after a short pause. Each a bounded number of times.
///
/// A primary that stops answering is unreachable as ``RedisClient`` has it: the commands for its slots fail at once
/// until ``probe()`` (run every second by the broker) finds it again, or finds the replica that took its place.
public final class RedisClusterClient: RedisCommands {
    private struct State {
        var topology: ClusterTopology?
        var clients: [ClusterNode: RedisClient] = [:]
        /// The refresh under way, which every caller that wants one joins: at most one is in flight.
        var refreshing: Task<Void, Never>?
        /// The map is known to be out of date (a redirect, a lost primary, a failed refresh): the next probe refreshes.
        var stale = false
        /// The topology changed, or a primary was unreachable, since the last probe said so with `.recovered`.
        var changed = false
        /// Loading the first map failed: commands fail at once until a probe loads it.
        var unreachable = false
    }

    /// Redirects and retries followed for one command before its last error reply is returned.
    static let maximumRedirects = 5

    private let configuration: RedisConfiguration
    private let group: any EventLoopGroup
    private let logger: Logger
    private let state = Mutex(State())

    /// - Parameter configuration: the seed endpoint (any node, or a configuration endpoint); every node is reached
    ///   with its TLS, user and password.
    public init(configuration: RedisConfiguration, group: any EventLoopGroup, logger: Logger) {
        self.configuration = configuration
        self.group = group
        self.logger = logger
    }

    /// Whether the Redis at `configuration` runs in cluster mode (`INFO cluster` says `cluster_enabled:1`).
    public static func isCluster(_ configuration: RedisConfiguration, group: any EventLoopGroup) async throws(RedisError) -> Bool {
        let connection = try await RedisConnection.connect(configuration, group: group)
        defer { connection.close() }
        let info = try await connection.send(["INFO", "cluster"]).string ?? ""
        return info.split(whereSeparator: \.isNewline).contains("cluster_enabled:1")
    }

    public func send(_ command: [RedisArgument]) async throws(RedisError) -> RESPValue {
        let slot = Self.slot(of: command)
        let node = try await self.node(for: slot)
        let reply = try await self.follow(command, slot: slot, reply: self.send([command], to: node)[0], from: node)
        if case .error(let message) = reply { throw RedisError(.server, message) }
        return reply
    }

    /// Sends each primary its part at once, all parts concurrently, and returns the replies in the order of
    /// `commands`. Commands for one slot go to one node in one write, so they run in the order given; a command
    /// redirected is sent again after the parts, in that order too.
    public func pipeline(_ commands: [[RedisArgument]]) async throws(RedisError) -> [RESPValue] {
        var replies: [RESPValue] = []
        for result in await self.pipelineEach(commands) { replies.append(try result.get()) }
        return replies
    }

    public func pipelineEach(_ commands: [[RedisArgument]]) async -> [Result<RESPValue, RedisError>] {
        let slots = commands.map(Self.slot(of:))
        var outcomes = [Result<RESPValue, RedisError>](
            repeating: .failure(RedisError(.connection, "not sent", mayHaveRun: false)),
            count: commands.count
        )
        var targets: [Int: ClusterNode] = [:]
        for (index, slot) in slots.enumerated() {
            do throws(RedisError) { targets[index] = try await self.node(for: slot) } catch { outcomes[index] = .failure(error) }
        }
        let parts = Dictionary(grouping: targets.keys.sorted()) { targets[$0]! }
        let results = await withTaskGroup(of: ([Int], Result<[RESPValue], RedisError>).self) { group in
            for (node, indices) in parts {
                group.addTask {
                    do throws(RedisError) {
                        return (indices, .success(try await self.send(indices.map { commands[$0] }, to: node)))
                    } catch {
                        return (indices, .failure(error))
                    }
                }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        for (indices, result) in results {
            switch result {
            case .success(let replies): for (index, reply) in zip(indices, replies) { outcomes[index] = .success(reply) }
            case .failure(let error): for index in indices { outcomes[index] = .failure(error) }
            }
        }
        for index in outcomes.indices {
            guard case .success(let reply) = outcomes[index], case .error = reply, let node = targets[index] else { continue }
            do throws(RedisError) {
                outcomes[index] = .success(try await self.follow(commands[index], slot: slots[index], reply: reply, from: node))
            } catch {
                outcomes[index] = .failure(error)
            }
        }
        return outcomes
    }

    /// Whether every slot has an owner that answered the last command or probe.
    public var isConnected: Bool {
        self.state.withLock { state in
            guard let topology = state.topology, topology.isComplete else { return false }
            return topology.primaries.allSatisfy { state.clients[$0]?.isConnected == true }
        }
    }

    /// PINGs every primary, each within a second, and refreshes the slot map when it may have changed (a redirect, a
    /// primary unreachable or back). `.recovered` when a primary was unreachable or the map changed since the last
    /// probe (what this node wrote may be lost, or be on a node that no longer serves it); `.unreachable` while some
    /// slot has no owner that answers.
    public func probe() async -> RedisClient.Probe {
        if self.state.withLock({ $0.topology == nil || $0.stale }) { await self.refresh() }
        var outcomes = await self.probe(self.primaries)
        if outcomes.values.contains(where: { $0 != .answered }) {
            await self.refresh()  // a primary failed or came back: a replica may have taken its place
            outcomes.merge(await self.probe(self.primaries.filter { outcomes[$0] == nil })) { first, _ in first }
        }
        return self.state.withLock { state in
            if outcomes.values.contains(where: { $0 != .answered }) { state.changed = true }
            guard let topology = state.topology, topology.isComplete,
                topology.primaries.allSatisfy({ outcomes[$0] != nil && outcomes[$0] != .unreachable })
            else { return .unreachable }
            defer { state.changed = false }
            return state.changed ? .recovered : .answered
        }
    }

    public func close() {
        for client in self.state.withLock({ Array($0.clients.values) }) { client.close() }
    }

    // MARK: Routing

    /// Commands without a key, which any primary serves.
    private static let keyless: Set<String> = [
        "PING", "ECHO", "PUBLISH", "PUBSUB", "CLUSTER", "SCRIPT", "FUNCTION", "INFO", "CONFIG", "CLIENT", "COMMAND", "TIME",
    ]
    /// Commands whose keys follow their number, in argument 2.
    private static let scripts: Set<String> = ["EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"]

    /// The slot of a command's first key: argument 1 but for scripts and keyless commands (`nil`). A command whose
    /// keys are in several slots goes by its first, and Redis answers `CROSSSLOT`.
    static func slot(of command: [RedisArgument]) -> Int? {
        guard command.count > 1 else { return nil }
        let name =
            switch command[0] {
            case .string(let text): text.uppercased()
            case .bytes(let bytes): String(decoding: bytes, as: UTF8.self).uppercased()
            }
        if Self.keyless.contains(name) { return nil }
        guard Self.scripts.contains(name) else { return HashSlot.of(command[1]) }
        guard command.count > 3, case .string(let count) = command[2], let keys = Int(count), keys > 0 else { return nil }
        return HashSlot.of(command[3])
    }

    /// The owner of `slot`, or for a keyless command a primary that is not known to be unreachable.
    private func node(for slot: Int?) async throws(RedisError) -> ClusterNode {
        if self.state.withLock({ $0.topology == nil }) {
            guard !self.state.withLock({ $0.unreachable }) else {
                throw RedisError(.connection, "Redis Cluster is unreachable (probed every second)", mayHaveRun: false)
            }
            await self.refresh()
        }
        return try self.state.withLock { state throws(RedisError) in
            guard let topology = state.topology else { throw RedisError(.connection, "no Redis Cluster node answered", mayHaveRun: false) }
            if let slot {
                guard let owner = topology.owner(of: slot) else {
                    throw RedisError(.connection, "no Redis Cluster primary serves slot \(slot)", mayHaveRun: false)
                }
                return owner
            }
            let primary = topology.primaries.first { state.clients[$0]?.isReachable ?? true } ?? topology.primaries.first
            guard let primary else { throw RedisError(.connection, "the Redis Cluster has no primary", mayHaveRun: false) }
            return primary
        }
    }

    /// Where a slot lives now: for the sharded subscriber, which keeps its own connections.
    func owner(of slot: Int) async throws(RedisError) -> ClusterNode {
        try await self.node(for: slot)
    }

    /// Follows redirects and retries for one command whose error `reply` came from `node`; any other reply is
    /// returned as it is.
    private func follow(_ command: [RedisArgument], slot: Int?, reply: RESPValue, from node: ClusterNode) async throws(RedisError) -> RESPValue {
        var (reply, node) = (reply, node)
        for attempt in 1...Self.maximumRedirects {
            guard case .error(let message) = reply else { return reply }
            switch ClusterRedirect(message, from: node) {
            case .moved(let slot, let target):
                node = self.moved(slot, to: target)
                reply = try await self.send([command], to: node)[0]
            case .ask(_, let target):
                node = self.state.withLock { $0.topology?.address(of: target) ?? target }
                reply = try await self.send([["ASKING"], command], to: node)[1]
            case nil:
                guard message.hasPrefix("TRYAGAIN") || message.hasPrefix("CLUSTERDOWN") else { return reply }
                try? await Task.sleep(for: .milliseconds(100 * attempt))
                node = try await self.node(for: slot)
                reply = try await self.send([command], to: node)[0]
            }
        }
        return reply
    }

    /// Records that `slot` now lives on `target` and refreshes the whole map in the background (a slot seldom moves
    /// alone); returns the address to reach `target` at.
    @discardableResult
    func moved(_ slot: Int, to target: ClusterNode) -> ClusterNode {
        let address = self.state.withLock { state in
            (state.stale, state.changed) = (true, true)
            let address = state.topology?.address(of: target) ?? target
            state.topology?.assign(slot...slot, to: address)
            return address
        }
        Task { await self.refresh() }
        return address
    }

    /// Commands to one node in one write; error replies are returned. A primary that was reachable and fails has the
    /// map refreshed at once: it may be failing over.
    private func send(_ commands: [[RedisArgument]], to node: ClusterNode) async throws(RedisError) -> [RESPValue] {
        let client = self.client(for: node)
        let wasReachable = client.isReachable
        do {
            return try await client.pipeline(commands)
        } catch {
            if wasReachable, error.code == .connection || error.code == .timeout {
                self.state.withLock { ($0.stale, $0.changed) = (true, true) }
                Task { await self.refresh() }
            }
            throw error
        }
    }

    private func client(for node: ClusterNode) -> RedisClient {
        self.state.withLock { state in
            if let client = state.clients[node] { return client }
            let client = RedisClient(configuration: self.configuration(for: node), group: self.group, logger: self.logger)
            state.clients[node] = client
            return client
        }
    }

    /// The seed's configuration (TLS, user, password, timeouts) for another node.
    func configuration(for node: ClusterNode) -> RedisConfiguration {
        var configuration = self.configuration
        (configuration.host, configuration.port) = (node.host, node.port)
        return configuration
    }

    // MARK: Topology

    private var primaries: [ClusterNode] { self.state.withLock { $0.topology?.primaries ?? [] } }

    private func probe(_ nodes: [ClusterNode]) async -> [ClusterNode: RedisClient.Probe] {
        await withTaskGroup(of: (ClusterNode, RedisClient.Probe).self) { group in
            for node in nodes {
                group.addTask { (node, await self.client(for: node).probe()) }
            }
            return await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
        }
    }

    /// Reloads the slot map, or waits for the reload under way.
    func refresh() async {
        let task = self.state.withLock { state in
            if let task = state.refreshing { return task }
            let task = Task { await self.load() }
            state.refreshing = task
            return task
        }
        await task.value
    }

    /// Asks the known primaries, those connected first, then the seed; keeps the first map that parses. Clients of
    /// nodes that are no longer primaries are closed.
    private func load() async {
        let known = self.state.withLock { state in
            (state.topology?.primaries ?? []).sorted { state.clients[$0]?.isConnected == true && state.clients[$1]?.isConnected != true }
        }
        var topology: ClusterTopology?
        for node in known where topology == nil {
            let client = self.client(for: node)
            topology = try? await self.topology(from: node) { command throws(RedisError) in try await client.send(command) }
        }
        if topology == nil {
            let seed = ClusterNode(host: self.configuration.host, port: self.configuration.port)
            do {
                let connection = try await RedisConnection.connect(self.configuration, group: self.group)
                defer { connection.close() }
                topology = try await self.topology(from: seed) { command throws(RedisError) in try await connection.send(command) }
            } catch {
                self.logger.error("Redis Cluster topology unavailable", metadata: ["error": "\(error)"])
            }
        }
        let (changed, gone) = self.state.withLock { state -> (Bool, [RedisClient]) in
            state.refreshing = nil
            guard let topology else {
                state.stale = true
                state.unreachable = state.topology == nil
                return (false, [])
            }
            let changed = state.topology.map { $0 != topology } ?? false
            (state.topology, state.stale, state.unreachable, state.changed) = (topology, false, false, state.changed || changed)
            let gone = state.clients.filter { !topology.primaries.contains($0.key) }
            for node in gone.keys { state.clients[node] = nil }
            return (changed, Array(gone.values))
        }
        for client in gone { client.close() }
        if changed, let topology {
            self.logger.info("Redis Cluster topology changed", metadata: ["primaries": "\(topology.primaries)"])
        }
    }

    private func topology(
        from node: ClusterNode,
        _ send: ([RedisArgument]) async throws(RedisError) -> RESPValue
    ) async throws(RedisError) -> ClusterTopology {
        let tls = self.configuration.tls
        do {
            return try ClusterTopology(shards: try await send(["CLUSTER", "SHARDS"]), tls: tls, queried: node)
        } catch {
            guard error.code == .server else { throw error }  // an error reply, or a reply it cannot read
            return try ClusterTopology(slots: try await send(["CLUSTER", "SLOTS"]), tls: tls, queried: node)
        }
    }
}
