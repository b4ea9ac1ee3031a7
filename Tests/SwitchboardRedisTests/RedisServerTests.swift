import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing

@testable import SwitchboardRedis

/// A real `redis-server` on a free port, stopped by PID when the test ends.
final class RedisServer: Sendable {
    let port: Int
    private let process: Process

    init(password: String? = nil, port: Int? = nil) throws {
        self.port = try port ?? Self.freePort()
        self.process = Process()
        self.process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        var arguments = ["--port", String(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        if let password { arguments += ["--requirepass", password] }
        self.process.arguments = arguments
        self.process.standardOutput = FileHandle.nullDevice
        try self.process.run()
        for _ in 0..<100 {
            if (try? Self.canConnect(self.port)) == true { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw RedisError(.connection, "redis-server did not start")
    }

    /// SIGSTOP freezes it (the connection stays open, nothing is answered), SIGCONT wakes it.
    func signal(_ signal: Int32) {
        kill(self.process.processIdentifier, signal)
    }

    func stop() {
        kill(self.process.processIdentifier, SIGKILL)
        self.process.waitUntilExit()
    }

    static func freePort() throws -> Int {
        let channel = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).wait()
        defer { try? channel.close().wait() }
        return channel.localAddress!.port!
    }

    static func canConnect(_ port: Int) throws -> Bool {
        let channel = try ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port).wait()
        try channel.close().wait()
        return true
    }
}

/// Holds its event loop for 600 ms after the first flush once armed, as a node whose loop is saturated does.
final class LoopBlocker: ChannelOutboundHandler, @unchecked Sendable {
    typealias OutboundIn = NIOAny
    var armed = false

    func flush(context: ChannelHandlerContext) {
        context.flush()
        guard self.armed else { return }
        self.armed = false
        Thread.sleep(forTimeInterval: 0.6)
    }
}

@Suite(.serialized) struct RedisServerTests {
    let logger = Logger(label: "test")

    @Test func commandsPipeliningAndErrors() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let client = RedisClient(
            configuration: try RedisConfiguration(url: "redis://127.0.0.1:\(server.port)/3"),
            group: MultiThreadedEventLoopGroup.singleton,
            logger: self.logger
        )
        defer { client.close() }
        #expect(try await client.send("SET", "k", .bytes([0, 1, 255])) == .simpleString("OK"))
        #expect(try await client.send("GET", "k").bytes == [0, 1, 255])
        let replies = try await client.pipeline((0..<500).map { ["INCR", "n\($0 % 5)"] })
        #expect(replies.count == 500 && replies.last == .integer(100))
        await #expect(throws: RedisError.self) { try await client.send("NOSUCHCOMMAND") }
        let mixed = try await client.pipeline([["PING"], ["NOSUCHCOMMAND"], ["PING"]])
        #expect(mixed[0] == .simpleString("PONG") && mixed[2] == .simpleString("PONG"))
        guard case .error = mixed[1] else { throw RedisError(.server, "expected an error reply") }
        // SELECT 3 took effect: database 0 does not have the key.
        let zero = RedisClient(
            configuration: try RedisConfiguration(url: "redis://127.0.0.1:\(server.port)"),
            group: MultiThreadedEventLoopGroup.singleton,
            logger: self.logger
        )
        #expect(try await zero.send("EXISTS", "k") == .integer(0))
        zero.close()
    }

    @Test func authenticatesWithPasswordAndACLUser() async throws {
        let server = try RedisServer(password: "secret")
        defer { server.stop() }
        let group = MultiThreadedEventLoopGroup.singleton
        let good = RedisClient(
            configuration: try RedisConfiguration(url: "redis://:secret@127.0.0.1:\(server.port)"),
            group: group,
            logger: self.logger
        )
        #expect(try await good.send("PING") == .simpleString("PONG"))
        _ = try await good.send("ACL", "SETUSER", "app", "on", ">apppass", "~*", "+@all")
        let acl = RedisClient(
            configuration: try RedisConfiguration(url: "redis://app:apppass@127.0.0.1:\(server.port)"),
            group: group,
            logger: self.logger
        )
        #expect(try await acl.send("PING") == .simpleString("PONG"))
        let bad = RedisClient(
            configuration: try RedisConfiguration(url: "redis://:wrong@127.0.0.1:\(server.port)"),
            group: group,
            logger: self.logger
        )
        await #expect(throws: RedisError.self) { try await bad.send("PING") }
        for client in [good, acl, bad] { client.close() }
    }

    @Test func pubSubAndReconnectAfterARestart() async throws {
        var server = try RedisServer()
        let port = server.port
        let group = MultiThreadedEventLoopGroup.singleton
        let configuration = try RedisConfiguration(url: "redis://127.0.0.1:\(port)")
        let received = Mutex<[String]>([])
        let subscriber = RedisSubscriber(configuration: configuration, group: group, logger: self.logger) { channel, payload in
            received.withLock { $0.append("\(channel):\(String(decoding: payload, as: UTF8.self))") }
        }
        let runner = Task { await subscriber.run() }
        try await subscriber.subscribe("news")
        try await subscriber.psubscribe("room:*")
        let publisher = RedisClient(configuration: configuration, group: group, logger: self.logger)
        try await Self.eventually { subscriber.isConnected }
        _ = try await publisher.send("PUBLISH", "news", "one")
        _ = try await publisher.send("PUBLISH", "room:a", "two")
        try await Self.eventually { received.withLock { $0 } == ["news:one", "room:a:two"] }

        server.stop()
        server = try RedisServer(port: port)
        defer { server.stop() }
        try await Self.eventually { subscriber.isConnected }
        try await Self.eventually { (try? await publisher.send("PUBLISH", "news", "three")) == .integer(1) }
        try await Self.eventually { received.withLock { $0.last } == "news:three" }
        subscriber.stop()
        await runner.value
        publisher.close()
    }

    /// A node whose event loop was busy for longer than the timeout read Redis's prompt reply too late, called
    /// Redis unreachable, and closed a connection that was working (failing commands Redis had run). The timeout now
    /// counts Redis's silence, checked after the loop has read its sockets.
    @Test func aBusyEventLoopIsNotATimeout() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        var configuration = try RedisConfiguration(url: "redis://127.0.0.1:\(server.port)")
        configuration.commandTimeout = .milliseconds(300)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let connection = try await RedisConnection.connect(configuration, group: group)
        defer { connection.close() }
        let blocker = LoopBlocker()
        try await connection.channel.pipeline.addHandler(blocker)
        try await connection.channel.eventLoop.submit { blocker.armed = true }.get()
        // The next flush holds the loop for 600 ms after writing; Redis answers at once.
        #expect(try await connection.send(["INCR", "n"]) == .integer(1))
        #expect(connection.isActive)
        #expect(try await connection.send(["INCR", "n"]) == .integer(2))
    }

    /// A frozen Redis sends nothing: its callers fail after the timeout, and the client counts it unreachable, so
    /// later commands fail at once, unwritten (safe to send again). What was written before the freeze runs once it
    /// wakes.
    @Test func aFrozenRedisTimesOutAndLaterCommandsAreNotWritten() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        var configuration = try RedisConfiguration(url: "redis://127.0.0.1:\(server.port)")
        configuration.commandTimeout = .milliseconds(300)
        let client = RedisClient(configuration: configuration, group: MultiThreadedEventLoopGroup.singleton, logger: self.logger)
        defer { client.close() }
        #expect(try await client.send("INCR", "ran") == .integer(1))
        server.signal(SIGSTOP)
        defer { server.signal(SIGCONT) }
        let frozen = await #expect(throws: RedisError.self) { try await client.send("INCR", "ran") }
        #expect(frozen?.code == .timeout && frozen?.mayHaveRun == true)
        let refused = await #expect(throws: RedisError.self) { try await client.send("INCR", "ran") }
        #expect(refused?.mayHaveRun == false)
        server.signal(SIGCONT)
        try await Self.eventually { await client.probe() != .unreachable }
        #expect(try await client.send("GET", "ran").string == "2")
    }

    /// A room append sent again after a send whose fate is unknown finds its publish id and returns the offset it
    /// already has; a new publish id appends.
    @Test func aRoomAppendSentAgainRunsOnce() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let client = RedisClient(
            configuration: try RedisConfiguration(url: "redis://127.0.0.1:\(server.port)"),
            group: MultiThreadedEventLoopGroup.singleton,
            logger: self.logger
        )
        defer { client.close() }
        func command(_ id: String, again: Bool) -> [RedisArgument] {
            [
                "EVAL", .string(RedisBroker.appendScript), "3", "offset", "hist", "channel", .string("{\"m\":\"\(id)\",\"offset\":"), "1000",
                RedisArgument(1_700_000_000_000), "60000", "", "PUBLISH", .string(id), again ? "1" : "0",
            ]
        }
        func append(_ id: String, again: Bool) async throws -> RESPValue { try await client.send(command(id, again: again)) }
        #expect(try await append("a:1", again: false) == .integer(1))
        #expect(try await append("a:2", again: false) == .integer(2))
        #expect(try await append("a:1", again: true) == .integer(1))
        #expect(try await append("a:3", again: true) == .integer(3))
        #expect(try await append("a:3", again: true) == .integer(3))
        #expect(try await client.send("XLEN", "hist") == .integer(3))
        // The search pages through the stream, 100 entries at a time.
        _ = try await client.pipeline((1...250).map { command("b:\($0)", again: false) })
        #expect(try await append("b:7", again: true) == .integer(10))
        #expect(try await client.send("GET", "offset").string == "253")
    }

    static func eventually(_ condition: () async throws -> Bool) async throws {
        for _ in 0..<200 {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw RedisError(.timeout, "condition not met within 10 s")
    }
}
