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

    static func eventually(_ condition: () async throws -> Bool) async throws {
        for _ in 0..<200 {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw RedisError(.timeout, "condition not met within 10 s")
    }
}
