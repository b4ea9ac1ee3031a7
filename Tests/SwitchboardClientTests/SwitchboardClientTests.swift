import Foundation
import NIOCore
import NIOPosix
import Synchronization
import Testing

@testable import SwitchboardClient

@Suite struct ReconnectPolicyTests {
    @Test func exponentialWithFullJitterAndACap() {
        let policy = ReconnectPolicy(base: .milliseconds(500), cap: .seconds(4), maxAttempts: 6)
        let upper = (1...6).map { policy.delay(attempt: $0, random: { $0.upperBound })! }
        #expect(upper == [.milliseconds(500), .seconds(1), .seconds(2), .seconds(4), .seconds(4), .seconds(4)])
        #expect(policy.delay(attempt: 3, random: { $0.lowerBound }) == .zero)
        #expect(policy.delay(attempt: 7, random: { $0.upperBound }) == nil)
        #expect(ReconnectPolicy().delay(attempt: 1_000, random: { $0.upperBound }) == .seconds(30))
    }

    @Test func runWaitsByThePolicyThenGivesUp() async throws {
        let port = try freePort()  // nothing listens there
        let sleeps = Mutex<[Duration]>([])
        var configuration = SwitchboardClient.Configuration(url: "ws://127.0.0.1:\(port)/ws")
        configuration.reconnect = ReconnectPolicy(base: .milliseconds(100), cap: .seconds(1), maxAttempts: 4)
        let client = SwitchboardClient(
            configuration: configuration,
            sleep: { delay in sleeps.withLock { $0.append(delay) } },
            random: { $0.upperBound }
        )
        client.joinRoom("buffered")
        client.sendMessage("kept while away", to: "buffered")
        await client.run()
        #expect(sleeps.withLock { $0 } == [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800)])
        var states: [SwitchboardClient.State] = []
        for await event in client.events { if case .state(let state) = event { states.append(state) } }
        #expect(states.last == .closed)
        #expect(states.contains(.reconnecting(attempt: 4)) && !states.contains(.reconnecting(attempt: 5)))
    }
}

/// Real processes: a redis-server and two gateway nodes sharing it, stopped by PID.
final class Cluster: Sendable {
    let redisPort: Int
    let ports: [Int]
    private let processes = Mutex<[Int: Process]>([:])
    private let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    init() throws {
        self.redisPort = try freePort()
        self.ports = [try freePort(), try freePort()]
        try self.launch(key: 0, "/usr/bin/redis-server", ["--port", "\(self.redisPort)", "--save", "", "--appendonly", "no"], port: self.redisPort)
        for index in self.ports.indices { try self.startNode(index) }
    }

    func startNode(_ index: Int) throws {
        let binary = self.root.appendingPathComponent(".build/debug/switchboard").path
        try self.launch(
            key: index + 1,
            binary,
            [
                "serve", "--host", "127.0.0.1", "--port", "\(self.ports[index])", "--redis-url", "redis://127.0.0.1:\(self.redisPort)",
                "--node-id", "node\(index)", "--log-level", "info",
            ],
            port: self.ports[index]
        )
    }

    func kill(node index: Int) {
        guard let process = self.processes.withLock({ $0.removeValue(forKey: index + 1) }) else { return }
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    func stop() {
        for process in self.processes.withLock({ Array($0.values) }) {
            Foundation.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        for key in 0...self.ports.count { try? FileManager.default.removeItem(atPath: self.logPath(key)) }
    }

    private func logPath(_ key: Int) -> String { NSTemporaryDirectory() + "switchboard-client-test-\(self.ports[0])-\(key).log" }

    /// What node `index` has logged so far.
    func log(node index: Int) -> String {
        (try? String(contentsOfFile: self.logPath(index + 1), encoding: .utf8)) ?? ""
    }

    private func launch(key: Int, _ executable: String, _ arguments: [String], port: Int) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        _ = FileManager.default.createFile(atPath: self.logPath(key), contents: nil)
        let log = FileHandle(forWritingAtPath: self.logPath(key))
        (process.standardOutput, process.standardError) = (log, log)
        process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("SWITCHBOARD_") }
        try process.run()
        self.processes.withLock { $0[key] = process }
        for _ in 0..<200 {
            if (try? ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port).wait().close().wait())
                != nil
            {
                return
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw CancellationError()
    }
}

@Suite(.serialized) struct LiveClientTests {
    func client(_ port: Int, user: String, compression: Bool = true) -> SwitchboardClient {
        var configuration = SwitchboardClient.Configuration(url: "ws://127.0.0.1:\(port)/prod", query: ["userId": user])
        configuration.compression = compression
        configuration.reconnect = ReconnectPolicy(base: .milliseconds(100), cap: .milliseconds(500))
        configuration.heartbeat = .seconds(2)
        return SwitchboardClient(configuration: configuration)
    }

    /// The next event matching `predicate` within 10 s.
    func next<T>(_ iterator: inout AsyncStream<SwitchboardClient.Event>.Iterator, _ pick: (SwitchboardClient.Event) -> T?) async throws -> T {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            guard let event = await iterator.next() else { break }
            if let value = pick(event) { return value }
        }
        throw CancellationError()
    }

    @Test func serverKilledAndRestartedWhileConnected() async throws {
        let cluster = try Cluster()
        defer { cluster.stop() }
        let reader = self.client(cluster.ports[0], user: "reader")
        let writer = self.client(cluster.ports[1], user: "writer")
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await reader.run() }
            group.addTask { await writer.run() }
            var events = reader.events.makeAsyncIterator()
            var writerEvents = writer.events.makeAsyncIterator()
            reader.joinRoom("news")
            writer.joinRoom("news")
            _ = try await self.next(&events) { if case .joinedRoom = $0 { true } else { nil } }
            _ = try await self.next(&writerEvents) { if case .joinedRoom = $0 { true } else { nil } }
            func message(_ event: SwitchboardClient.Event) -> String? {
                if case .message(_, .string(let text), _, _, _) = event { text } else { nil }
            }
            writer.sendMessage("one", to: "news")
            #expect(try await self.next(&events, message) == "one")

            cluster.kill(node: 0)  // the reader's node dies without a close frame
            _ = try await self.next(&events) { if case .state(.reconnecting) = $0 { true } else { nil } }
            writer.sendMessage("two", to: "news")
            writer.sendMessage("three", to: "news")
            _ = try await self.next(&writerEvents) { message($0) == "three" ? true : nil }
            try cluster.startNode(0)
            _ = try await self.next(&events) { $0 == .state(.connected) ? true : nil }
            // Recovered from the room's history in Redis, each once, then live again.
            #expect(try await self.next(&events, message) == "two")
            #expect(try await self.next(&events, message) == "three")
            writer.sendMessage("four", to: "news")
            #expect(try await self.next(&events, message) == "four")

            reader.close()  // a normal close: no reconnect
            _ = try await self.next(&events) { $0 == .state(.closed) ? true : nil }
            writer.close()
            try await group.waitForAll()
        }
    }

    /// A compressing writer and a plain reader on different nodes: the same messages, whatever each negotiated.
    @Test func compressedAndPlainClientsShareARoom() async throws {
        let cluster = try Cluster()
        defer { cluster.stop() }
        let reader = self.client(cluster.ports[0], user: "plain", compression: false)
        let writer = self.client(cluster.ports[1], user: "deflating")
        let long = String(repeating: "all work and no play makes a dull chat message ", count: 60)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await reader.run() }
            group.addTask { await writer.run() }
            var events = reader.events.makeAsyncIterator()
            var writerEvents = writer.events.makeAsyncIterator()
            reader.joinRoom("mixed")
            writer.joinRoom("mixed")
            _ = try await self.next(&events) { if case .joinedRoom = $0 { true } else { nil } }
            _ = try await self.next(&writerEvents) { if case .joinedRoom = $0 { true } else { nil } }
            func message(_ event: SwitchboardClient.Event) -> String? {
                if case .message(_, .string(let text), _, _, _) = event { text } else { nil }
            }
            for text in [long, "short", long + "!"] { writer.sendMessage(.string(text), to: "mixed") }
            for text in [long, "short", long + "!"] {
                #expect(try await self.next(&events, message) == text)
                #expect(try await self.next(&writerEvents, message) == text)
            }
            reader.close()
            writer.close()
            try await group.waitForAll()
        }
        #expect(cluster.log(node: 1).contains(#""compression":"permessage-deflate""#))
        #expect(!cluster.log(node: 0).contains(#""compression""#))
    }
}

func freePort() throws -> Int {
    let channel = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).wait()
    defer { try? channel.close().wait() }
    return channel.localAddress!.port!
}
