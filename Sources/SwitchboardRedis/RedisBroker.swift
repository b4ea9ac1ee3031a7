import Logging
import NIOCore
import SwitchboardCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The cluster broker: many nodes share one Redis, or one Redis Cluster, for fan-out and the registry.
///
/// - Fan-out: one `PUBLISH` per message whatever the number of recipients, on a channel per room, per user, a
///   broadcast channel and a channel per node (direct sends and commands). A node subscribes to a room's or a
///   user's channel while it has local members, and delivers what it publishes to its own connections at once,
///   skipping its own messages when they come back.
/// - Registry: `conn:{id}` (a hash with a TTL the owning node refreshes), `node-conns:{node}` (what a sweeper needs
///   to clean up after a dead node), `user:{userId}`, `room:{roomId}` (connection id → user id), `conn-rooms:{id}`,
///   and the sorted sets `conns`, `rooms` and `nodes` (node → last heartbeat) for listings and liveness. The name
///   is always the last part of a key (``KeyKind``).
/// - On a Redis Cluster (``Layout/cluster``) every name is a hash tag (`room:{lobby}`, `hist:{lobby}`,
///   `ch:room:{lobby}`), so all of one room's keys and its channel live in one slot: the append script runs on the
///   shard that owns the room, and room, user, node and broadcast channels are sharded pub/sub (`SPUBLISH`,
///   `SSUBSCRIBE`), handled by that shard alone, so fan-out capacity grows with the shards. Ingress channels stay
///   classic pub/sub, which backends `PUBLISH` to on any node. `docs/cluster.md` has the layout and its costs.
/// - A node whose heartbeat is older than the TTL is dead: one survivor claims it (`SET … NX`), and for each of its
///   connections removes the memberships and hands the entry to `onSwept`, which tells the rooms and runs
///   `$disconnect` once.
public final class RedisBroker: Broker {
    /// How keys and channels are laid out: as they always were on one Redis, or hash-tagged for a Redis Cluster.
    public enum Layout: String, Sendable, CaseIterable {
        case standalone
        case cluster
    }

    public struct Options: Sendable {
        public var prefix = "switchboard:"
        public var ttl = Duration.seconds(30)
        /// Channels whose messages go to every client (seed `000_*`'s `order:notifications`).
        public var ingressBroadcast: [String] = []
        /// A channel pattern ending in `*` whose messages go to the room the `*` names (`chat:*` → `chat:lobby` → `lobby`).
        public var ingressRoomPattern: String?
        public var history = HistoryLimits()
        public var layout = Layout.standalone

        public init() {}
    }

    private struct Local {
        var connections: [ConnectionID: ConnectionInfo] = [:]
        /// Connections whose entry in `node-conns:{node}` this node wrote: only those can have been swept.
        var registered: Set<ConnectionID> = []
        /// `unregister` calls waiting for Redis to learn who runs `$disconnect`.
        var waiting = 0
        var memberships: [ConnectionID: Set<RoomID>] = [:]
        var roomMembers: [RoomID: Int] = [:]
        var userConnections: [String: Int] = [:]
    }

    public let node: String
    /// This broker's part of its publish ids: the node id alone may come back after a restart, and an id must not
    /// match an entry of the earlier run.
    private let instance = String(UInt64.random(in: 0...UInt64.max), radix: 36)
    public let layout: Layout
    private let client: any RedisCommands
    /// Room, user, node and broadcast channels: classic pub/sub on one Redis, sharded on a cluster.
    private let channels: any RedisPubSub
    /// Backends' ingress channels, always classic pub/sub (the same subscriber as ``channels`` on one Redis).
    private let ingress: RedisSubscriber
    private let local: any LocalDelivery
    public var localDelivery: any LocalDelivery { self.local }
    private let options: Options
    private let logger: Logger
    private let onSwept = Mutex<(@Sendable (ConnectionInfo, [RoomID]) async -> Void)?>(nil)
    private let onRelay = Mutex<(@Sendable (String, [UInt8]) -> Void)?>(nil)
    private let state = Mutex(Local())
    /// Publishes waiting for the publisher task, and the signal that wakes it: whatever queued up during one round
    /// trip goes out as the next pipeline.
    private let outbox = Mutex<[Outgoing]>([])
    /// Set while a publish round trip is past `localDeliveryDeadline` (changed under the outbox's lock).
    private let late = Atomic<Bool>(false)
    private let wakeup: AsyncStream<Void>.Continuation
    private let wakeups: AsyncStream<Void>

    private enum Outgoing: Sendable {
        case publish(channel: String, payload: [UInt8])
        case toConnection(ConnectionID, payload: [UInt8])
        /// `local`: already delivered to this node's members (without an offset), because Redis was late.
        case roomMessage(RoomMessage, local: Bool)
        /// Bytes for another node's gateway; `sent` learns whether a node listened (the publish's receiver count).
        case relay(channel: String, payload: [UInt8], sent: @Sendable (Bool) -> Void)
    }

    /// Whoever removes a connection from `node-conns:{node}` runs its `$disconnect`, so the node and a sweeper
    /// never both do. The sweeper records what it claimed in `swept:{node}` in the same step.
    /// A node that heartbeats again (it was cut off, not dead) is not swept any further: its `node-beat:{node}` is
    /// newer than the cutoff. That key, not the `nodes` set, is checked here because it shares the node's hash tag.
    private static let sweepClaimScript = """
        local beat = redis.call('GET', KEYS[3])
        if beat and tonumber(beat) > tonumber(ARGV[3]) then return -1 end
        if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
        redis.call('SADD', KEYS[2], ARGV[1])
        redis.call('EXPIRE', KEYS[2], 86400)
        return 1
        """

    /// The node's own claim when a connection closes: 1 when it runs `$disconnect` (its entry was there, or is gone
    /// because Redis lost its data), 0 when a sweeper claimed it first.
    private static let ownerClaimScript = """
        if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then return 1 end
        if redis.call('SREM', KEYS[2], ARGV[1]) == 1 then return 0 end
        return 1
        """

    /// At most this many closed connections wait for Redis to say who runs their `$disconnect`; past it they run
    /// it at once (at least once rather than memory without bound during a long outage).
    static let maximumWaitingDisconnects = 10_000

    /// Assigns a room message its offset, appends it to the room's stream (bounded by length, expiring with age)
    /// and publishes it (`PUBLISH`, or `SPUBLISH` on a cluster), atomically, so offsets follow publish order across
    /// nodes.
    ///
    /// Each message carries a publish id (`p`). A publish sent again after a send whose fate is unknown (written, then
    /// the connection or the reply lost) sets ARGV[8] and first looks for its id among the room's recent entries, so
    /// it returns the offset it already has instead of appending twice. Entries older than its own timestamp by
    /// a minute (clock skew between nodes) end the search.
    static let appendScript = """
        if ARGV[8] == '1' and tonumber(ARGV[2]) > 0 then
          local oldest, before, searching = tonumber(ARGV[3]) - 60000, '+', true
          while searching do
            local entries = redis.call('XREVRANGE', KEYS[2], before, '-', 'COUNT', 100)
            for _, entry in ipairs(entries) do
              local fields = entry[2]
              if fields[6] == ARGV[7] then return tonumber(string.match(entry[1], '^%d+')) end
              if tonumber(fields[2]) < oldest then searching = false break end
            end
            if #entries < 100 then searching = false else before = '(' .. entries[#entries][1] end
          end
        end
        local offset = redis.call('INCR', KEYS[1])
        local frame = ARGV[1] .. offset .. '}'
        if tonumber(ARGV[2]) > 0 then
          redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], offset .. '-0', 'ts', ARGV[3], 'f', frame, 'p', ARGV[7])
          redis.call('PEXPIRE', KEYS[2], ARGV[4])
        end
        redis.call(ARGV[6], KEYS[3], ARGV[5] .. frame)
        return offset
        """

    public init(
        configuration: RedisConfiguration,
        node: String,
        options: Options,
        group: any EventLoopGroup,
        local: any LocalDelivery,
        logger: Logger
    ) {
        self.node = node
        self.options = options
        self.layout = options.layout
        self.local = local
        self.logger = logger
        (self.wakeups, self.wakeup) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let box = Box()
        let handler: RedisSubscriber.Handler = { channel, payload in box.broker?.received(channel: channel, payload: payload) }
        // Classic pub/sub reaches every node of a cluster, so the ingress subscriber may use any one (the seed).
        self.ingress = RedisSubscriber(configuration: configuration, group: group, logger: logger, handler: handler)
        switch options.layout {
        case .standalone:
            self.client = RedisClient(configuration: configuration, group: group, logger: logger)
            self.channels = self.ingress
        case .cluster:
            let cluster = RedisClusterClient(configuration: configuration, group: group, logger: logger)
            self.client = cluster
            self.channels = RedisShardedSubscriber(cluster: cluster, group: group, logger: logger, handler: handler)
        }
        box.broker = self
    }

    /// Lets the subscriber's closures reach the broker that owns it without a retain cycle at init time.
    private final class Box: @unchecked Sendable {
        // Written once in `init`, before the subscriber runs; read only afterwards.
        weak var broker: RedisBroker?
    }

    /// What a key holds. A key is the prefix, the kind (never a `:`), `:`, then at most one name chosen by a client
    /// (a room, user, connection or node id), always last: two keys are equal only when kind and name are, whatever
    /// characters names may hold, so room `r:offset` can never share a key with room `r`'s counter.
    enum KeyKind: String {
        case connection = "conn"
        case connectionRooms = "conn-rooms"
        case nodeConnections = "node-conns"
        case user
        case roomMembers = "room"
        case roomOffset = "room-offset"
        case history = "hist"
        case sweep
        /// When a node last heartbeat, beside its connections' keys (same hash tag), for the sweep's atomic check.
        case nodeBeat = "node-beat"
        /// The connections a survivor swept for a node, kept a day so the node, if it was only cut off, closes them
        /// without a second `$disconnect` when it is back.
        case swept
        /// Values a dropped Socket.IO socket leaves for its reconnect (``stash(_:under:for:)``).
        case stash
        /// The sorted sets behind listings and liveness: one key each, no name.
        case connections = "conns"
        case rooms, nodes
    }

    func key(_ kind: KeyKind, _ name: String? = nil) -> String {
        name.map { self.options.prefix + kind.rawValue + ":" + self.tagged($0) } ?? self.options.prefix + kind.rawValue
    }
    /// Channels follow the same rule: `ch:`, a kind, `:`, the name last.
    private func channel(_ kind: String, _ name: String) -> String { self.options.prefix + "ch:" + kind + ":" + self.tagged(name) }

    /// On a cluster the name is the key's hash tag, so every key and the channel of one room (or user, connection,
    /// node) share a slot. Names never hold braces (``Name``), so the tag is exactly the name.
    private func tagged(_ name: String) -> String { self.layout == .cluster ? "{" + name + "}" : name }

    /// How room, user, node and broadcast channels are published.
    private var publishCommand: RedisArgument { self.layout == .cluster ? "SPUBLISH" : "PUBLISH" }

    public var isConnected: Bool { self.client.isConnected && self.channels.isConnected && self.ingress.isConnected }

    public var localRoomCount: Int { self.state.withLock { $0.roomMembers.count } }

    /// What to do for each connection of a dead node once its registry entries are gone: tell its rooms and run
    /// its `$disconnect` (status 1006). Set once, before `run()`.
    public func whenSwept(_ handler: @escaping @Sendable (ConnectionInfo, [RoomID]) async -> Void) {
        self.onSwept.withLock { $0 = handler }
    }

    /// What to do with bytes another node relayed to this one (``relay(_:to:sent:)``): the sending node and the
    /// bytes. Set once, before `run()`.
    public func whenRelayed(_ handler: @escaping @Sendable (_ from: String, _ payload: [UInt8]) -> Void) {
        self.onRelay.withLock { $0 = handler }
    }

    public var relaysToNodes: Bool { true }

    public func relay(_ payload: [UInt8], to node: String, sent: @escaping @Sendable (Bool) -> Void) {
        let envelope = Envelope(origin: self.node, relay: payload).encoded
        self.enqueue(.relay(channel: self.channel("node", node), payload: envelope, sent: sent))
    }

    // MARK: Lifecycle

    /// Runs the pub/sub connection, the ordered publisher, the heartbeat and the sweeper until cancelled.
    public func run() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.ingress.run() }
            if self.layout == .cluster { group.addTask { await self.channels.run() } }
            group.addTask { await self.publishLoop() }
            group.addTask { await self.heartbeatLoop() }
            group.addTask { await self.probeLoop() }
            group.addTask {
                try? await self.channels.subscribe(self.channel("all", "all"))
                try? await self.channels.subscribe(self.channel("node", self.node))
                for channel in self.options.ingressBroadcast { try? await self.ingress.subscribe(channel) }
                if let pattern = self.options.ingressRoomPattern { try? await self.ingress.psubscribe(pattern) }
            }
            await withTaskCancellationHandler {
                while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
            } onCancel: {
                self.channels.stop()
                self.ingress.stop()
                self.wakeup.finish()
            }
            group.cancelAll()
        }
        self.client.close()
    }

    private func enqueue(_ item: Outgoing) {
        self.outbox.withLock { $0.append(item) }
        self.wakeup.yield()
    }

    /// Publishes in order, pipelining whatever has queued up since the last round trip.
    private func publishLoop() async {
        var publishes: UInt64 = 0
        for await _ in self.wakeups {
            let batch = self.outbox.withLock { queued in
                defer { queued.removeAll(keepingCapacity: true) }
                return queued
            }
            guard !batch.isEmpty else { continue }
            // Members here wait for their messages' offsets at most `localDeliveryDeadline`, lookups included.
            let pending = Unanswered(batch.compactMap { if case .roomMessage(let message, local: false) = $0 { message } else { nil } })
            let watchdog = Task {
                try await Task.sleep(for: Self.localDeliveryDeadline)
                self.deliverLate(pending)
            }
            var commands: [[RedisArgument]] = []
            var appended: [(index: Int, message: RoomMessage)] = []
            var appends: Set<Int> = []
            var relays: [(index: Int, sent: @Sendable (Bool) -> Void)] = []
            for item in batch {
                switch item {
                case .roomMessage(let message, let local):
                    let room = message.room.rawValue
                    let header = Envelope(origin: self.node, audience: .room(message.room), frame: OutboundFrame(.text, [])).encoded
                    if !local { appended.append((commands.count, message)) }
                    appends.insert(commands.count)
                    publishes &+= 1
                    commands.append([
                        "EVAL", .string(Self.appendScript), "3", .string(self.key(.roomOffset, room)), .string(self.key(.history, room)),
                        .string(self.channel("room", room)), .bytes(message.prefix), RedisArgument(self.options.history.messages),
                        RedisArgument(Self.now()), RedisArgument(Self.milliseconds(self.options.history.age)), .bytes(header),
                        self.publishCommand, .string("\(self.instance):\(publishes)"), "0",
                    ])
                case .publish(let channel, let payload):
                    commands.append([self.publishCommand, .string(channel), .bytes(payload)])
                case .toConnection(let id, let payload):
                    guard let node = (try? await self.client.send("HGET", .string(self.key(.connection, id.rawValue)), "node"))?.string else {
                        continue
                    }
                    commands.append([self.publishCommand, .string(self.channel("node", node)), .bytes(payload)])
                case .relay(let channel, let payload, let sent):
                    relays.append((commands.count, sent))
                    commands.append([self.publishCommand, .string(channel), .bytes(payload)])
                }
            }
            let replies = await self.sendRetryingFailover(commands, checkable: self.options.history.messages > 0 ? appends : [])
            watchdog.cancel()
            // A publish answers how many subscribers got it: none means no node listens on that channel (it is gone).
            for (index, sent) in relays { sent((replies[index]?.int ?? 0) > 0) }
            let answered = self.outbox.withLock { _ in
                self.late.store(false, ordering: .relaxed)
                return pending.take() != nil
            }
            guard answered else { continue }
            // Room messages reach this node's members once their offset is known, in offset order; without Redis
            // there is no offset to assign, and members here still get the message, with offset 0.
            if let failed = appended.first(where: { replies[$0.index]?.int == nil }) {
                let reason = replies[failed.index].map { "\($0)" } ?? "no answer"
                self.logger.warning("cluster publish failed; delivered locally only", metadata: ["reply": "\(reason)"])
            }
            for (index, message) in appended {
                self.local.deliver(message.frame(offset: replies[index]?.int ?? 0), to: .room(message.room))
            }
        }
    }

    /// Sends one publish batch, and sends again every 250 ms, for up to ``failoverWindow``, what did not run: a
    /// primary failing over, a restart. A command is sent again only when that cannot run it twice: it was never
    /// written, or Redis refused it before running it; or it is a room append (`checkable`), whose send again first
    /// looks for its publish id in the room's history. Any other command whose fate is unknown (written, then the
    /// connection or the reply lost) is not sent again: at most once. Meanwhile later publishes wait, and members here
    /// get them at once (``deliverLate(_:)``). `nil` for a command that never got an answer.
    private func sendRetryingFailover(_ commands: [[RedisArgument]], checkable: Set<Int>) async -> [RESPValue?] {
        var commands = commands
        var outcomes = await self.client.pipelineEach(commands)
        let started = ContinuousClock.now
        while !Task.isCancelled, ContinuousClock.now - started < Self.failoverWindow {
            var again: [Int] = []
            for index in outcomes.indices {
                switch outcomes[index] {
                case .failure(let error) where error.mayHaveRun:
                    guard checkable.contains(index) else { continue }
                    commands[index][commands[index].count - 1] = "1"
                    again.append(index)
                case let outcome where Self.notRun(outcome): again.append(index)
                default: continue
                }
            }
            guard !again.isEmpty else { break }
            try? await Task.sleep(for: .milliseconds(250))
            for (index, outcome) in zip(again, await self.client.pipelineEach(again.map { commands[$0] })) { outcomes[index] = outcome }
        }
        return outcomes.map { try? $0.get() }
    }

    /// Whether a command certainly did not run: never written, or refused before running (a cluster without an owner
    /// for the slot, a slot on the move, a replica that was a primary, a Redis still loading its data).
    private static func notRun(_ outcome: Result<RESPValue, RedisError>) -> Bool {
        switch outcome {
        case .failure(let error): !error.mayHaveRun
        case .success(.error(let message)):
            ["CLUSTERDOWN", "TRYAGAIN", "MOVED", "ASK", "LOADING", "MASTERDOWN", "READONLY"].contains { message.hasPrefix($0) }
        case .success: false
        }
    }

    /// How long a publish is retried while Redis does not answer: an ElastiCache or Redis Cluster failover (the
    /// replica is promoted after `cluster-node-timeout`) or a quick restart. Past it, cross-node delivery of what was
    /// published is given up, as before.
    static let failoverWindow = Duration.seconds(10)

    /// Asks Redis every second whether it answers, so `isConnected` (and `/health`) tells the truth within two
    /// seconds of Redis freezing or dropping off the network, and callers stop waiting on it. When it stops
    /// answering, the pub/sub connection is dropped too: it subscribes again to everything once Redis is back.
    private func probeLoop() async {
        while !Task.isCancelled {
            switch await self.client.probe() {
            case .answered: break
            case .recovered: await self.resync()
            case .unreachable:
                self.channels.reset()
                self.ingress.reset()
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }

    /// How long room messages wait for their offset before this node's members get them without one. Redis that
    /// stopped answering is found by the probe within two seconds; local delivery must not wait that long.
    static let localDeliveryDeadline = Duration.milliseconds(500)

    /// A publish round trip passed the deadline: its room messages and those queued behind it go to this node's
    /// members now (offset 0, in order), and later ones at once until the round trip ends.
    private func deliverLate(_ pending: Unanswered) {
        self.outbox.withLock { queued in
            guard let late = pending.take() else { return }
            self.late.store(true, ordering: .relaxed)
            for message in late { self.local.deliver(message.frame(offset: 0), to: .room(message.room)) }
            for index in queued.indices {
                guard case .roomMessage(let message, local: false) = queued[index] else { continue }
                self.local.deliver(message.frame(offset: 0), to: .room(message.room))
                queued[index] = .roomMessage(message, local: true)
            }
        }
    }

    /// One publish round trip's room messages until either its answer or its deadline takes them, never both.
    private final class Unanswered: Sendable {
        private let messages: Mutex<[RoomMessage]?>
        init(_ messages: [RoomMessage]) { self.messages = Mutex(messages) }
        func take() -> [RoomMessage]? { self.messages.withLock { $0.take() } }
    }

    private func heartbeatLoop() async {
        let period = self.options.ttl / 3
        while !Task.isCancelled {
            await self.heartbeat()
            await self.sweep()
            try? await Task.sleep(for: period)
        }
    }

    private var ttlSeconds: Int { Int(clamping: self.options.ttl.components.seconds) }

    private func heartbeat() async {
        let ids = self.state.withLock { Array($0.connections.keys) }
        let now = Self.now()
        var commands: [[RedisArgument]] = [
            ["ZADD", .string(self.key(.nodes)), RedisArgument(now), .string(self.node)],
            ["SET", .string(self.key(.nodeBeat, self.node)), RedisArgument(now), "PX", RedisArgument(Self.milliseconds(self.options.ttl * 3))],
        ]
        for id in ids { commands.append(["EXPIRE", .string(self.key(.connection, id.rawValue)), RedisArgument(self.ttlSeconds)]) }
        _ = try? await self.client.pipeline(commands)
    }

    /// Cleans up after nodes whose heartbeat stopped: each dead node is claimed by one survivor.
    private func sweep() async {
        let cutoff = Self.now() - Self.milliseconds(self.options.ttl)
        guard let dead = (try? await self.client.send("ZRANGEBYSCORE", .string(self.key(.nodes)), "-inf", RedisArgument(cutoff)))?.elements else {
            return
        }
        for name in dead.compactMap(\.string) where name != self.node {
            let claim = try? await self.client.send(
                "SET",
                .string(self.key(.sweep, name)),
                .string(self.node),
                "NX",
                "EX",
                RedisArgument(self.ttlSeconds * 2)
            )
            guard claim == .simpleString("OK") else { continue }
            self.logger.warning("sweeping a dead node", metadata: ["node": "\(name)"])
            // Read a page at a time (`HSCAN`): a node's registry can be larger than one reply may be.
            var cursor = "0"
            sweeping: repeat {
                let reply = try? await self.client.send("HSCAN", .string(self.key(.nodeConnections, name)), .string(cursor), "COUNT", "500")
                guard let parts = reply?.elements, parts.count == 2, let next = parts[0].string, let entries = parts[1].elements else { break }
                cursor = next
                for index in stride(from: 0, to: entries.count - 1, by: 2) {
                    guard let bytes = entries[index + 1].bytes, let info = Self.decode(bytes) else { continue }
                    let claim = try? await self.client.send(
                        "EVAL",
                        .string(Self.sweepClaimScript),
                        "3",
                        .string(self.key(.nodeConnections, name)),
                        .string(self.key(.swept, name)),
                        .string(self.key(.nodeBeat, name)),
                        .string(info.id.rawValue),
                        .string(name),
                        RedisArgument(cutoff)
                    )
                    if claim?.int == -1 { break sweeping }  // it heartbeats again: cut off, not dead
                    guard claim?.int == 1 else { continue }  // its node claimed it first
                    let reply = try? await self.client.send("SMEMBERS", .string(self.key(.connectionRooms, info.id.rawValue)))
                    let rooms = (reply?.elements ?? []).compactMap { $0.string.flatMap(RoomID.init) }
                    await self.forget(info, rooms: rooms, node: name)
                    await self.onSwept.withLock { $0 }?(info, rooms)
                }
            } while cursor != "0"
            _ = try? await self.client.send(
                "EVAL",
                .string(Self.forgetNodeScript),
                "1",
                .string(self.key(.nodes)),
                .string(name),
                RedisArgument(cutoff)
            )
        }
    }

    /// Drops a swept node from `nodes` unless it heartbeat since the sweep began.
    private static let forgetNodeScript = """
        local beat = redis.call('ZSCORE', KEYS[1], ARGV[1])
        if beat and tonumber(beat) <= tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) end
        return 0
        """

    /// After Redis answered again (perhaps restarted empty): a heartbeat first, so that no survivor sweeps this
    /// node from now on; then the connections a survivor swept meanwhile (this node was cut off for longer than the
    /// TTL) are closed (1012, reconnect) without their `userLeft` and `$disconnect` running twice; then every other
    /// live connection and membership is registered again.
    func resync() async {
        await self.heartbeat()
        let (connections, memberships) = self.state.withLock { ($0.connections, $0.memberships) }
        // Unreadable: Redis went away again, and the next recovery starts over.
        guard let reply = try? await self.client.send("SMEMBERS", .string(self.key(.swept, self.node))) else { return }
        let swept = Set((reply.elements ?? []).compactMap { $0.string.flatMap(ConnectionID.init) }).intersection(connections.keys)
        if !swept.isEmpty {
            // Each leaves the set when it closes (`unregister`'s claim); the rest expire.
            for id in swept { self.local.perform(.close(code: CloseCode.serviceRestart, reason: "lost by the cluster; reconnect"), on: id) }
            self.logger.warning("closing connections swept while cut off from Redis", metadata: ["connections": "\(swept.count)"])
        }
        for info in connections.values where !swept.contains(info.id) { try? await self.writeRegistration(info) }
        for (id, rooms) in memberships where !swept.contains(id) {
            guard let userId = connections[id]?.userId else { continue }
            for room in rooms { _ = try? await self.writeMembership(room, RoomMember(connection: id, userId: userId)) }
        }
        self.logger.info("re-registered after Redis came back", metadata: ["connections": "\(connections.count - swept.count)"])
    }

    // MARK: Registry

    public func register(_ connection: ConnectionInfo) async throws {
        let firstOfUser = self.state.withLock { state -> Bool in
            state.connections[connection.id] = connection
            state.userConnections[connection.userId, default: 0] += 1
            return state.userConnections[connection.userId] == 1
        }
        if firstOfUser { try? await self.channels.subscribe(self.channel("user", connection.userId)) }
        do {
            try await self.writeRegistration(connection)
        } catch {
            // Redis is away: the connection still works on this node, and `resync` registers it later.
            self.logger.warning("registering in Redis failed", metadata: ["connectionId": "\(connection.id)", "error": "\(error)"])
        }
    }

    private func writeRegistration(_ info: ConnectionInfo) async throws {
        // Marked before the write: if Redis applies it but the answer is lost, `unregister` still claims.
        guard self.state.withLock({ $0.connections[info.id] != nil ? $0.registered.insert(info.id) : nil }) != nil else { return }
        let id = info.id.rawValue
        var fields: [RedisArgument] = ["HSET", .string(self.key(.connection, id)), "node", .string(self.node)]
        fields += ["info", .bytes(Self.encode(info))]
        _ = try await self.client.pipeline([
            fields,
            ["EXPIRE", .string(self.key(.connection, id)), RedisArgument(self.ttlSeconds)],
            ["HSET", .string(self.key(.nodeConnections, self.node)), .string(id), .bytes(Self.encode(info))],
            ["SADD", .string(self.key(.user, info.userId)), .string(id)],
            ["ZADD", .string(self.key(.connections)), "0", .string(id)],
            ["ZADD", .string(self.key(.nodes)), RedisArgument(Self.now()), .string(self.node)],
        ])
        // Closed while this was written (a long resync): its `unregister` ran first, so undo what came after it.
        if self.state.withLock({ $0.connections[info.id] == nil }) { await self.forget(info, rooms: [], node: self.node) }
    }

    public func unregister(_ connection: ConnectionID) async -> Bool {
        let (info, lastOfUser, registered) = self.state.withLock { state -> (ConnectionInfo?, Bool, Bool) in
            guard let info = state.connections.removeValue(forKey: connection) else { return (nil, false, false) }
            state.memberships.removeValue(forKey: connection)
            state.userConnections[info.userId, default: 1] -= 1
            let last = state.userConnections[info.userId] == 0
            if last { state.userConnections.removeValue(forKey: info.userId) }
            return (info, last, state.registered.remove(connection) != nil)
        }
        guard let info else { return true }
        if lastOfUser { try? await self.channels.unsubscribe(self.channel("user", info.userId)) }
        let owned = registered ? await self.claim(connection) : true
        await self.forget(info, rooms: [], node: self.node)
        return owned
    }

    /// Whether this node runs `$disconnect` for a registered connection that closed: it asks Redis who removes the
    /// connection from `node-conns:{node}` first, itself or a sweeper, waiting while Redis is unreachable (a
    /// sweeper may be claiming it meanwhile) unless too many already wait.
    private func claim(_ connection: ConnectionID) async -> Bool {
        let keys: [RedisArgument] = ["2", .string(self.key(.nodeConnections, self.node)), .string(self.key(.swept, self.node))]
        var waiting = false
        defer { if waiting { self.state.withLock { $0.waiting -= 1 } } }
        while !Task.isCancelled {
            if let reply = try? await self.client.send(["EVAL", .string(Self.ownerClaimScript)] + keys + [.string(connection.rawValue)]) {
                return reply.int != 0
            }
            if !waiting {
                waiting = self.state.withLock { state in
                    guard state.waiting < Self.maximumWaitingDisconnects else { return false }
                    state.waiting += 1
                    return true
                }
                guard waiting else { return true }
            }
            try? await Task.sleep(for: .seconds(1))
        }
        return true
    }

    /// Removes a connection's registry entries (and, for a swept one, its room memberships).
    private func forget(_ info: ConnectionInfo, rooms: [RoomID], node: String) async {
        let id = info.id.rawValue
        var commands: [[RedisArgument]] = [
            ["DEL", .string(self.key(.connection, id))], ["DEL", .string(self.key(.connectionRooms, id))],
            ["HDEL", .string(self.key(.nodeConnections, node)), .string(id)], ["SREM", .string(self.key(.user, info.userId)), .string(id)],
            ["ZREM", .string(self.key(.connections)), .string(id)],
        ]
        for room in rooms { commands.append(["HDEL", .string(self.key(.roomMembers, room.rawValue)), .string(id)]) }
        _ = try? await self.client.pipeline(commands)
    }

    public func join(_ room: RoomID, member: RoomMember, listing limit: Int) async throws -> RoomRoster {
        let firstLocal = self.state.withLock { state -> Bool in
            guard state.memberships[member.connection, default: []].insert(room).inserted else { return false }
            state.roomMembers[room, default: 0] += 1
            return state.roomMembers[room] == 1
        }
        // Subscribed before the joiner hears `joinedRoom`, so it misses nothing sent after (when Redis is away the
        // channel is remembered and subscribed on reconnect).
        if firstLocal { try? await self.channels.subscribe(self.channel("room", room.rawValue)) }
        do {
            return try await self.writeMembership(room, member, listing: limit)
        } catch {
            // Redis is away: the room works on this node, and `resync` writes the membership once it is back.
            let local = self.state.withLock { $0.roomMembers[room] ?? 1 }
            return RoomRoster(userIds: limit > 0 ? [member.userId] : [], count: local)
        }
    }

    @discardableResult
    private func writeMembership(_ room: RoomID, _ member: RoomMember, listing limit: Int = 0) async throws -> RoomRoster {
        let roomKey = self.key(.roomMembers, room.rawValue)
        let replies = try await self.client.pipeline([
            ["HSET", .string(roomKey), .string(member.connection.rawValue), .string(member.userId)],
            ["SADD", .string(self.key(.connectionRooms, member.connection.rawValue)), .string(room.rawValue)],
            ["ZADD", .string(self.key(.rooms)), "0", .string(room.rawValue)],
            ["HLEN", .string(roomKey)],
            ["HRANDFIELD", .string(roomKey), RedisArgument(max(limit, 1)), "WITHVALUES"],
        ])
        // Left while this was written (a long resync): its `leave` ran first, so undo what came after it.
        if self.state.withLock({ $0.memberships[member.connection]?.contains(room) != true }) {
            _ = try? await self.client.pipeline([
                ["HDEL", .string(roomKey), .string(member.connection.rawValue)],
                ["SREM", .string(self.key(.connectionRooms, member.connection.rawValue)), .string(room.rawValue)],
            ])
        }
        let sample = replies[4].elements ?? []
        let userIds = stride(from: 1, to: sample.count, by: 2).compactMap { sample[$0].string }
        return RoomRoster(userIds: Array(userIds.prefix(limit)), count: Int(replies[3].int ?? 0))
    }

    public func leave(_ room: RoomID, member: RoomMember) async {
        let lastLocal = self.state.withLock { state -> Bool in
            guard state.memberships[member.connection]?.remove(room) != nil else { return false }
            state.roomMembers[room, default: 1] -= 1
            let last = state.roomMembers[room] == 0
            if last { state.roomMembers.removeValue(forKey: room) }
            return last
        }
        let roomKey = self.key(.roomMembers, room.rawValue)
        let replies = try? await self.client.pipeline([
            ["HDEL", .string(roomKey), .string(member.connection.rawValue)],
            ["SREM", .string(self.key(.connectionRooms, member.connection.rawValue)), .string(room.rawValue)],
            ["HLEN", .string(roomKey)],
        ])
        if replies?[2].int == 0 { _ = try? await self.client.send("ZREM", .string(self.key(.rooms)), .string(room.rawValue)) }
        if lastLocal { try? await self.channels.unsubscribe(self.channel("room", room.rawValue)) }
    }

    // MARK: Delivery

    public func publish(_ frame: OutboundFrame, to audience: Audience) {
        let payload = Envelope(origin: self.node, audience: audience, frame: frame).encoded
        switch audience {
        case .connection(let id):
            if self.isLocal(id) { self.local.deliver(frame, to: audience) } else { self.enqueue(.toConnection(id, payload: payload)) }
        case .room(let room, _):
            self.local.deliver(frame, to: audience)
            self.enqueue(.publish(channel: self.channel("room", room.rawValue), payload: payload))
        case .user(let userId):
            self.local.deliver(frame, to: audience)
            self.enqueue(.publish(channel: self.channel("user", userId), payload: payload))
        case .everyone:
            self.local.deliver(frame, to: audience)
            self.enqueue(.publish(channel: self.channel("all", "all"), payload: payload))
        }
    }

    public func publish(_ message: RoomMessage) {
        // While a publish is past its deadline, members here get new messages at once, after the late ones.
        let late = self.outbox.withLock { queued in
            guard self.late.load(ordering: .relaxed) else { return false }
            self.local.deliver(message.frame(offset: 0), to: .room(message.room))
            queued.append(.roomMessage(message, local: true))
            return true
        }
        if late { self.wakeup.yield() } else { self.enqueue(.roomMessage(message, local: false)) }
    }

    public func history(of room: RoomID, after offset: Int64, limit: Int) async -> RoomHistory {
        let limit = min(max(limit, 1), Self.maximumPage)
        // Past `Int64.max` nothing can follow: only the counter is read, and the offset is from before a reset.
        let (first, overflow) = offset.addingReportingOverflow(1)
        var commands: [[RedisArgument]] = [["GET", .string(self.key(.roomOffset, room.rawValue))]]
        if !overflow {
            commands.append(["XRANGE", .string(self.key(.history, room.rawValue)), .string("\(first)-0"), "+", "COUNT", RedisArgument(limit)])
        }
        guard let replies = try? await self.client.pipeline(commands), let last = replies[0].isNull ? 0 : replies[0].int else {
            return .unavailable
        }
        let cutoff = Self.now() - Self.milliseconds(self.options.history.age)
        var kept: [HistoryEntry] = []
        for entry in replies.count > 1 ? replies[1].elements ?? [] : [] {
            guard let parts = entry.elements, parts.count == 2, let id = parts[0].string, let fields = parts[1].elements else { continue }
            var values: [String: RESPValue] = [:]
            for index in stride(from: 0, to: fields.count - 1, by: 2) { values[fields[index].string ?? ""] = fields[index + 1] }
            guard let at = values["ts"]?.int, at >= cutoff, let frame = values["f"]?.bytes,
                let entryOffset = id.split(separator: "-").first.flatMap({ Int64($0) })
            else { continue }
            kept.append(HistoryEntry(offset: entryOffset, frame: OutboundFrame(.text, frame)))
        }
        let next = last == .max ? last : last + 1
        guard !overflow, offset <= last else { return .lost(oldest: kept.first?.offset ?? next) }
        guard offset < last else { return .messages([]) }
        guard kept.first?.offset == first else { return .lost(oldest: kept.first?.offset ?? next) }
        return .messages(kept)
    }

    /// The most items one listing or history page asks Redis for, whatever a caller passes.
    static let maximumPage = 10_000

    /// A configured duration in milliseconds, saturating rather than trapping on absurd values.
    static func milliseconds(_ duration: Duration) -> Int64 {
        let (ms, overflow) = duration.components.seconds.multipliedReportingOverflow(by: 1000)
        return overflow ? .max : ms
    }

    public func lastOffset(of room: RoomID) async -> Int64 {
        (try? await self.client.send("GET", .string(self.key(.roomOffset, room.rawValue))))?.int ?? 0
    }

    /// `SET … PX`: Redis expires it. Lost, as the protocol allows, when Redis cannot be reached.
    public func stash(_ value: [UInt8], under key: String, for ttl: Duration) async {
        let milliseconds = max(1, Self.milliseconds(ttl))
        _ = try? await self.client.send("SET", .string(self.key(.stash, key)), .bytes(value), "PX", RedisArgument(milliseconds))
    }

    /// `GETDEL` (Redis 6.2+), so two reconnects naming one session cannot both take it.
    public func takeStashed(_ key: String) async -> [UInt8]? {
        (try? await self.client.send("GETDEL", .string(self.key(.stash, key))))?.bytes
    }

    public func send(_ command: ConnectionCommand, to connection: ConnectionID) {
        if self.isLocal(connection) {
            self.local.perform(command, on: connection)
        } else {
            self.enqueue(.toConnection(connection, payload: Envelope(origin: self.node, command: command, connection: connection).encoded))
        }
    }

    private func isLocal(_ id: ConnectionID) -> Bool { self.state.withLock { $0.connections[id] != nil } }

    /// A message from Redis: another node's fan-out, a command for one of ours, or ingress from a backend.
    private func received(channel: String, payload: [UInt8]) {
        if channel.hasPrefix(self.options.prefix + "ch:") {
            guard let envelope = Envelope(decoding: payload), envelope.origin != self.node else { return }
            switch envelope.body {
            case .frame(let frame, let audience): self.local.deliver(frame, to: audience)
            case .command(let command, let id): self.local.perform(command, on: id)
            case .relay(let bytes): self.onRelay.withLock { $0 }?(envelope.origin, bytes)
            }
            return
        }
        let frame = OutboundFrame(UTF8Validation.isValid(payload) ? .text : .binary, payload)
        if self.options.ingressBroadcast.contains(channel) {
            self.local.deliver(frame, to: .everyone)
        } else if let pattern = self.options.ingressRoomPattern, channel.hasPrefix(String(pattern.dropLast())),
            let room = RoomID(String(channel.dropFirst(pattern.count - 1)))
        {
            self.local.deliver(frame, to: .room(room))
        }
    }

    // MARK: Queries

    public func connection(_ id: ConnectionID) async -> RegisteredConnection? {
        if let info = self.state.withLock({ $0.connections[id] }) {
            let rooms = self.state.withLock { $0.memberships[id] ?? [] }
            return RegisteredConnection(info: info, rooms: rooms.sorted { $0.rawValue < $1.rawValue })
        }
        guard
            let replies = try? await self.client.pipeline([
                ["HGET", .string(self.key(.connection, id.rawValue)), "info"], ["SMEMBERS", .string(self.key(.connectionRooms, id.rawValue))],
            ]), let bytes = replies[0].bytes, let info = Self.decode(bytes)
        else { return nil }
        let rooms = (replies[1].elements ?? []).compactMap { $0.string.flatMap(RoomID.init) }.sorted { $0.rawValue < $1.rawValue }
        return RegisteredConnection(info: info, rooms: rooms)
    }

    public func connections(after cursor: String?, limit: Int) async -> Page<RegisteredConnection> {
        let ids = await self.lexPage(self.key(.connections), after: cursor, limit: limit)
        var items: [RegisteredConnection] = []
        for id in ids.items.compactMap(ConnectionID.init) {
            if let entry = await self.connection(id) { items.append(entry) }
        }
        return Page(items: items, next: ids.next)
    }

    public func rooms(after cursor: String?, limit: Int) async -> Page<(room: RoomID, members: Int)> {
        let names = await self.lexPage(self.key(.rooms), after: cursor, limit: limit)
        let rooms = names.items.compactMap(RoomID.init)
        let counts = (try? await self.client.pipeline(rooms.map { ["HLEN", .string(self.key(.roomMembers, $0.rawValue))] })) ?? []
        let items = zip(rooms, counts).compactMap { room, count -> (room: RoomID, members: Int)? in
            guard let members = count.int, members > 0 else { return nil }
            return (room, Int(members))
        }
        return Page(items: items, next: names.next)
    }

    public func members(of room: RoomID, after cursor: String?, limit: Int) async -> Page<RoomMember> {
        let limit = min(max(limit, 1), Self.maximumPage)
        let all = (try? await self.client.send("HGETALL", .string(self.key(.roomMembers, room.rawValue))))?.elements ?? []
        var members: [RoomMember] = []
        for index in stride(from: 0, to: all.count - 1, by: 2) {
            guard let id = all[index].string.flatMap(ConnectionID.init), let userId = all[index + 1].string else { continue }
            if cursor == nil || id.rawValue > cursor! { members.append(RoomMember(connection: id, userId: userId)) }
        }
        members.sort { $0.connection.rawValue < $1.connection.rawValue }
        let page = Array(members.prefix(limit))
        return Page(items: page, next: members.count > limit ? page.last?.connection.rawValue : nil)
    }

    private func lexPage(_ key: String, after cursor: String?, limit: Int) async -> Page<String> {
        let limit = min(max(limit, 1), Self.maximumPage)
        let start: RedisArgument = cursor.map { .string("(" + $0) } ?? "-"
        let values = (try? await self.client.send("ZRANGEBYLEX", .string(key), start, "+", "LIMIT", "0", RedisArgument(limit + 1)))?.elements ?? []
        let names = values.compactMap(\.string)
        let page = Array(names.prefix(limit))
        return Page(items: page, next: names.count > limit ? page.last : nil)
    }

    // MARK: Encoding

    /// Wall-clock milliseconds: heartbeats are compared across nodes.
    static func now() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000
    }

    static func encode(_ info: ConnectionInfo) -> [UInt8] {
        let authorizer = info.authorizer.sorted { $0.key < $1.key }.map { JSONObject.Member($0.key, .string($0.value)) }
        var value: JSONValue = [
            "id": .string(info.id.rawValue), "userId": .string(info.userId), "connectedAt": .number(String(info.connectedAt)),
            "sourceIp": .string(info.sourceIp), "userAgent": .string(info.userAgent), "stage": info.stage.map(JSONValue.string) ?? .null,
            "domainName": .string(info.domainName), "authorizer": .object(JSONObject(authorizer)),
        ]
        if let recoverable = info.recoverable, case .object(var object) = value {
            object.members.append(.init("recoverable", ["pid": .string(recoverable.pid), "ns": .string(recoverable.namespace)]))
            value = .object(object)
        }
        return value.jsonBytes
    }

    static func decode(_ bytes: [UInt8]) -> ConnectionInfo? {
        guard let object = (try? JSONValue.parse(bytes))?.objectValue, let id = object["id"]?.stringValue.flatMap(ConnectionID.init),
            let userId = object["userId"]?.stringValue, case .number(let connectedAt) = object["connectedAt"]
        else { return nil }
        var authorizer: [String: String] = [:]
        for member in object["authorizer"]?.objectValue?.members ?? [] { authorizer[member.key] = member.value.stringValue }
        let recoverable = object["recoverable"]?.objectValue.flatMap { recoverable -> ConnectionInfo.Recoverable? in
            guard let pid = recoverable["pid"]?.stringValue, let namespace = recoverable["ns"]?.stringValue else { return nil }
            return ConnectionInfo.Recoverable(pid: pid, namespace: namespace)
        }
        return ConnectionInfo(
            id: id,
            userId: userId,
            connectedAt: Int64(connectedAt) ?? 0,
            sourceIp: object["sourceIp"]?.stringValue ?? "",
            userAgent: object["userAgent"]?.stringValue ?? "",
            stage: object["stage"]?.stringValue,
            domainName: object["domainName"]?.stringValue ?? "",
            authorizer: authorizer,
            recoverable: recoverable
        )
    }
}
