import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing

@testable import SwitchboardRedis

/// A real 6-process Redis Cluster (3 primaries, 3 replicas) started with `scripts/redis-cluster` on free ports, and
/// stopped by the PIDs the script recorded.
final class RedisClusterProcesses: Sendable {
    let directory: String
    let ports: [Int]
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("scripts/redis-cluster").path

    init() throws {
        self.directory = FileManager.default.temporaryDirectory.appendingPathComponent("switchboard-cluster-\(UUID())").path
        let base = try Self.freePorts()
        self.ports = Array(base..<base + 6)
        try Self.run(["start", self.directory, String(base)])
    }

    func stop() {
        try? Self.run(["stop", self.directory])
        try? FileManager.default.removeItem(atPath: self.directory)
    }

    /// SIGKILL to the server on `port`, by the PID the script recorded.
    func kill(_ port: Int) throws {
        let pid = try String(contentsOfFile: "\(self.directory)/redis-\(port).pid", encoding: .utf8)
        guard let pid = Int32(pid.trimmingCharacters(in: .whitespacesAndNewlines)) else { throw RedisError(.configuration, "bad pidfile") }
        Foundation.kill(pid, SIGKILL)
    }

    /// Runs the script and waits for it with `waitpid` (not `Process`, whose wait on Linux does not return while the
    /// servers the script leaves running hold what it inherited).
    private static func run(_ arguments: [String]) throws {
        let argv = ([Self.script] + arguments).map { strdup($0) } + [nil]
        defer { for argument in argv { free(argument) } }
        var pid: pid_t = 0
        guard posix_spawn(&pid, Self.script, nil, nil, argv, environ) == 0 else { throw RedisError(.connection, "cannot run \(Self.script)") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1, errno == EINTR {}
        guard status == 0 else { throw RedisError(.connection, "scripts/redis-cluster \(arguments) failed") }
    }

    /// Six consecutive ports, and their cluster bus ports (+10000), that nothing listens on.
    private static func freePorts() throws -> Int {
        let group = MultiThreadedEventLoopGroup.singleton
        for _ in 0..<50 {
            let base = Int.random(in: 20000..<45000)
            var channels: [any Channel] = []
            for port in Array(base..<base + 6) + Array(base + 10000..<base + 10006) {
                guard let channel = try? ServerBootstrap(group: group).bind(host: "127.0.0.1", port: port).wait() else { break }
                channels.append(channel)
            }
            for channel in channels { try? channel.close().wait() }
            if channels.count == 12 { return base }
        }
        throw RedisError(.connection, "no free ports for a cluster")
    }
}

/// What a sharded subscriber received, and how many times it said it was back.
final class Inbox: Sendable {
    let received = Mutex<[String]>([])
    let reconnects = Mutex(0)

    func subscriber(_ cluster: RedisClusterClient, logger: Logger) -> RedisShardedSubscriber {
        RedisShardedSubscriber(
            cluster: cluster,
            group: MultiThreadedEventLoopGroup.singleton,
            logger: logger,
            onReconnect: { self.reconnects.withLock { $0 += 1 } },
            handler: { channel, payload in
                self.received.withLock { $0.append("\(channel):\(String(decoding: payload, as: UTF8.self))") }
            }
        )
    }
}

@Suite(.serialized) struct RedisClusterTests {
    let logger = Logger(label: "test")
    let group = MultiThreadedEventLoopGroup.singleton

    func node(_ port: Int) throws -> RedisClient {
        RedisClient(configuration: try RedisConfiguration(url: "redis://127.0.0.1:\(port)"), group: self.group, logger: self.logger)
    }

    func cluster(_ processes: RedisClusterProcesses) throws -> RedisClusterClient {
        RedisClusterClient(
            configuration: try RedisConfiguration(url: "redis://127.0.0.1:\(processes.ports[0])"),
            group: self.group,
            logger: self.logger
        )
    }

    /// The primaries' ports, by what node 0 says.
    func owner(of slot: Int, _ processes: RedisClusterProcesses) async throws -> Int {
        let reply = try await self.node(processes.ports[0]).send("CLUSTER", "SHARDS")
        let topology = try ClusterTopology(shards: reply, tls: false, queried: ClusterNode(host: "127.0.0.1", port: processes.ports[0]))
        return try #require(topology.owner(of: slot)).port
    }

    /// A key whose slot each of the three primaries owns, in the order of the ports.
    func keysOnEveryPrimary(_ processes: RedisClusterProcesses) async throws -> [String: Int] {
        var keys: [String: Int] = [:]
        for index in 0..<100 where Set(keys.values).count < 3 {
            let owner = try await self.owner(of: HashSlot.of("key\(index)"), processes)
            if !keys.values.contains(owner) { keys["key\(index)"] = owner }
        }
        return keys
    }

    /// Moves `slot` and its keys from one primary to another as `redis-cli --cluster reshard` does; with
    /// `finish: false` it stops half-way (importing, migrating, keys moved), where the old owner answers `ASK`.
    func moveSlot(_ slot: Int, from source: Int, to target: Int, _ processes: RedisClusterProcesses, finish: Bool = true) async throws {
        let (from, to) = (try self.node(source), try self.node(target))
        let (sourceID, targetID) = (try await from.send("CLUSTER", "MYID"), try await to.send("CLUSTER", "MYID"))
        let ids = (try #require(sourceID.string), try #require(targetID.string))
        try await to.send("CLUSTER", "SETSLOT", RedisArgument(slot), "IMPORTING", .string(ids.0))
        try await from.send("CLUSTER", "SETSLOT", RedisArgument(slot), "MIGRATING", .string(ids.1))
        let keys = try await from.send("CLUSTER", "GETKEYSINSLOT", RedisArgument(slot), "1000").elements ?? []
        if !keys.isEmpty {
            _ = try await from.send(
                ["MIGRATE", "127.0.0.1", RedisArgument(target), "", "0", "5000", "KEYS"] + keys.compactMap { $0.bytes.map { .bytes($0) } }
            )
        }
        if finish {
            for port in [target, source] + processes.ports.filter({ $0 != target && $0 != source }) {
                _ = try? await self.node(port).send("CLUSTER", "SETSLOT", RedisArgument(slot), "NODE", .string(ids.1))
            }
        }
        for client in [from, to] { client.close() }
    }

    static func eventually(within seconds: Int = 10, _ condition: () async throws -> Bool) async throws {
        for _ in 0..<seconds * 10 {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw RedisError(.timeout, "condition not met within \(seconds) s")
    }

    @Test func hashSlotsMatchClusterKeyslot() async throws {
        let processes = try RedisClusterProcesses()
        defer { processes.stop() }
        let node = try self.node(processes.ports[0])
        defer { node.close() }
        let alphabet = Array("ab{}x".utf8) + [0, 255, 10]
        let keys: [[UInt8]] = (0..<400).map { _ in (0..<Int.random(in: 0..<12)).map { _ in alphabet.randomElement()! } }
        let slots = try await node.pipeline(keys.map { ["CLUSTER", "KEYSLOT", .bytes($0)] })
        for (key, slot) in zip(keys, slots) {
            #expect(slot.int.map(Int.init) == HashSlot.of(key), "\(key)")
        }
        #expect(try await RedisClusterClient.isCluster(try RedisConfiguration(url: "redis://127.0.0.1:\(processes.ports[0])"), group: self.group))
        let plain = try RedisServer()
        defer { plain.stop() }
        #expect(try await !RedisClusterClient.isCluster(try RedisConfiguration(url: "redis://127.0.0.1:\(plain.port)"), group: self.group))
    }

    @Test func routesCommandsAndPipelinesAcrossShards() async throws {
        let processes = try RedisClusterProcesses()
        defer { processes.stop() }
        let cluster = try self.cluster(processes)
        defer { cluster.close() }
        #expect(await cluster.probe() == .answered && cluster.isConnected)
        let keys = try await self.keysOnEveryPrimary(processes)
        #expect(Set(keys.values).count == 3)
        for (key, port) in keys {
            #expect(try await cluster.send("SET", .string(key), .string("on \(port)")) == .simpleString("OK"))
            #expect(try await self.node(port).send("GET", .string(key)).string == "on \(port)")  // it lives where its slot does
            #expect(try await cluster.send("GET", .string(key)).string == "on \(port)")
        }
        // One pipeline over every shard: replies in the order given, each slot's commands in order.
        let names = Array(keys.keys)
        let commands: [[RedisArgument]] = (0..<300).map { ["INCR", .string("{\(names[$0 % 3])}.n")] }
        let replies = try await cluster.pipeline(commands + [["HGET", .string(names[0]), "f"], ["PING"]])
        let counts: [RESPValue] = (0..<300).map { .integer(Int64($0 / 3 + 1)) }
        #expect(Array(replies.prefix(300)) == counts)
        guard case .error(let wrongType) = replies[300] else { throw RedisError(.server, "expected WRONGTYPE") }
        #expect(wrongType.hasPrefix("WRONGTYPE") && replies[301] == .simpleString("PONG"))
        // Keyless commands go to any primary; scripts by their first key; keys in several slots are Redis's CROSSSLOT.
        #expect(try await cluster.send("PUBLISH", "news", "x") == .integer(0))
        let script = "return redis.call('GET', KEYS[1])"
        #expect(try await cluster.send("EVAL", .string(script), "1", .string(names[1])).string == "on \(keys[names[1]]!)")
        #expect(try await cluster.send("EVAL", "return 7", "0") == .integer(7))
        await #expect {
            try await cluster.send("MSET", .string(names[0]), "1", .string(names[1]), "2")
        } throws: { ($0 as? RedisError)?.message.hasPrefix("CROSSSLOT") == true }
        #expect(await cluster.probe() == .answered && cluster.isConnected)
    }

    @Test func followsMovedAndAsk() async throws {
        let processes = try RedisClusterProcesses()
        defer { processes.stop() }
        let cluster = try self.cluster(processes)
        defer { cluster.close() }
        let keys = try await self.keysOnEveryPrimary(processes)
        let names = keys.keys.sorted()
        for name in names { try await cluster.send("SET", .string(name), .string(name)) }
        #expect(await cluster.probe() == .answered)

        // MOVED: the slot and its key now live on another primary; the client's map still says the old one.
        let (moved, source) = (names[0], keys[names[0]]!)
        let target = processes.ports.prefix(3).first { $0 != source }!
        try await self.moveSlot(HashSlot.of(moved), from: source, to: target, processes)
        #expect(try await cluster.send("GET", .string(moved)).string == moved)
        let replies = try await cluster.pipeline([["SET", .string(moved), "2"], ["GET", .string(names[1])], ["GET", .string(moved)]])
        #expect(replies == [.simpleString("OK"), .bulkString(Array(names[1].utf8)), .bulkString(Array("2".utf8))])
        #expect(await cluster.probe() == .recovered)  // the map changed: what this node wrote may need writing again
        #expect(await cluster.probe() == .answered)

        // ASK: half-way through a migration the key has moved, the slot not yet; the old owner sends the client on.
        let (asked, from) = (names[1], keys[names[1]]!)
        let to = processes.ports.prefix(3).first { $0 != from }!
        try await self.moveSlot(HashSlot.of(asked), from: from, to: to, processes, finish: false)
        await #expect {
            try await self.node(from).send("GET", .string(asked))
        } throws: { ($0 as? RedisError)?.message.hasPrefix("ASK ") == true }
        #expect(try await cluster.send("GET", .string(asked)).string == asked)
        #expect(try await cluster.pipeline([["GET", .string(asked)], ["GET", .string(names[2])]])[0].string == asked)
        #expect(try await self.owner(of: HashSlot.of(asked), processes) == from)
    }

    @Test func shardedPubSubFollowsASlotMove() async throws {
        let processes = try RedisClusterProcesses()
        defer { processes.stop() }
        let cluster = try self.cluster(processes)
        defer { cluster.close() }
        let inbox = Inbox()
        let subscriber = inbox.subscriber(cluster, logger: self.logger)
        let runner = Task { await subscriber.run() }
        let channels = try await self.keysOnEveryPrimary(processes)
        for channel in channels.keys { try await subscriber.subscribe(channel) }
        try await Self.eventually { subscriber.isConnected }
        for channel in channels.keys.sorted() {
            #expect(try await cluster.send("SPUBLISH", .string(channel), "one") == .integer(1))
        }
        try await Self.eventually { inbox.received.withLock { $0.count } == 3 }
        // One message per shard, each on its own pub/sub connection: they may arrive in any order.
        #expect(inbox.received.withLock { $0 }.sorted() == channels.keys.sorted().map { "\($0):one" })

        // The slot moves: Redis unsubscribes the channel there, and the subscriber subscribes where it now lives.
        let channel = channels.keys.sorted()[0]
        let target = processes.ports.prefix(3).first { $0 != channels[channel]! }!
        try await self.moveSlot(HashSlot.of(channel), from: channels[channel]!, to: target, processes)
        try await Self.eventually { (try? await cluster.send("SPUBLISH", .string(channel), "two")) == .integer(1) }
        try await Self.eventually { inbox.received.withLock { $0.last } == "\(channel):two" }
        try await Self.eventually { subscriber.isConnected && inbox.reconnects.withLock { $0 } == 1 }

        try await subscriber.unsubscribe(channel)
        #expect(try await cluster.send("SPUBLISH", .string(channel), "three") == .integer(0))
        subscriber.stop()
        await runner.value
    }

    @Test func recoversFromAFailover() async throws {
        let processes = try RedisClusterProcesses()
        defer { processes.stop() }
        let cluster = try self.cluster(processes)
        defer { cluster.close() }
        let inbox = Inbox()
        let subscriber = inbox.subscriber(cluster, logger: self.logger)
        let runner = Task { await subscriber.run() }
        let keys = try await self.keysOnEveryPrimary(processes)
        for key in keys.keys {
            try await cluster.send("SET", .string(key), "v")
            try await subscriber.subscribe(key)
        }
        try await Self.eventually { subscriber.isConnected }
        #expect(await cluster.probe() == .answered && cluster.isConnected)
        try await Task.sleep(for: .milliseconds(200))  // the replicas have the keys

        let (victim, port) = keys.min { $0.key < $1.key }!
        try processes.kill(port)
        await #expect(throws: RedisError.self) { try await cluster.send("GET", .string(victim)) }
        let clock = ContinuousClock()
        let started = clock.now
        await #expect(throws: RedisError.self) { try await cluster.send("GET", .string(victim)) }
        #expect(clock.now - started < .milliseconds(100))  // unreachable: fails at once, no timeout
        #expect(await cluster.probe() == .unreachable && !cluster.isConnected)

        // The replica takes over (cluster-node-timeout 1000 ms); the broker's probe loop finds it.
        try await Self.eventually(within: 15) {
            let probe = await cluster.probe()
            #expect(probe != .answered)  // never .answered before a .recovered
            return probe == .recovered
        }
        #expect(cluster.isConnected)
        #expect(try await cluster.send("GET", .string(victim)).string == "v")
        for key in keys.keys { #expect(try await cluster.send("GET", .string(key)).string == "v") }
        try await Self.eventually { subscriber.isConnected }
        try await Self.eventually { (try? await cluster.send("SPUBLISH", .string(victim), "after")) == .integer(1) }
        try await Self.eventually { inbox.received.withLock { $0.last } == "\(victim):after" }
        try await Self.eventually { inbox.reconnects.withLock { $0 } == 1 }
        subscriber.stop()
        await runner.value
    }
}
