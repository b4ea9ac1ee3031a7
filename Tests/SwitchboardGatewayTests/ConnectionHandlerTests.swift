import NIOCore
import NIOEmbedded
import NIOWebSocket
import SwitchboardConfiguration
import SwitchboardCore
import Synchronization
import Testing

@testable import SwitchboardGateway

/// The WebSocket handler on a testing channel: every way a connection ends runs `$disconnect` once and gives back
/// what it held, and time-driven rules (heartbeats, close timeouts) run from the sweep.
@Suite struct ConnectionHandlerTests {
    /// Counts unregistrations and can hold joins, around the real in-memory broker.
    final class RecordingBroker: ForwardingBroker {
        let inner: InMemoryBroker
        let unregistered = Mutex<[ConnectionID]>([])
        /// While set, joins wait until it is cleared.
        let holdJoins = Atomic<Bool>(false)

        init(_ local: any LocalDelivery) { self.inner = InMemoryBroker(delivering: local) }

        /// Registration always goes the asynchronous way, as on a cluster.
        func registerNow(_ connection: ConnectionInfo) -> Bool { false }
        func unregister(_ connection: ConnectionID) async -> Bool {
            self.unregistered.withLock { $0.append(connection) }
            return await self.inner.unregister(connection)
        }
        func join(_ room: RoomID, member: RoomMember, listing limit: Int) async throws -> RoomRoster {
            while self.holdJoins.load(ordering: .relaxed) { try await Task.sleep(for: .milliseconds(5)) }
            return try await self.inner.join(room, member: member, listing: limit)
        }
    }

    func node(_ configure: (inout GatewayConfiguration) -> Void = { _ in }) -> TestNode {
        TestNode(configure) { RecordingBroker($0) }
    }

    func recording(_ node: TestNode) -> RecordingBroker { node.gateway.broker as! RecordingBroker }

    /// Waits until the connection's end has run, then checks it ran once and everything came back.
    func expectEndedOnce(_ client: TestClient, on node: TestNode) async throws {
        try await node.settle { node.counts == (0, 0) }
        #expect(!client.isActive)
        #expect(self.recording(node).unregistered.withLock { $0 } == [client.info.id])
        #expect(await node.gateway.broker.connection(client.info.id) == nil)
    }

    // MARK: Every way a connection ends

    @Test func aClientCloseIsAnsweredAndEndsOnce() async throws {
        let node = self.node()
        let client = try await node.connect()
        try await client.send(.connectionClose, ByteBuffer(bytes: [0x03, 0xE8]))
        #expect(try await client.frames().map(\.closeCode) == [1000])
        try await self.expectEndedOnce(client, on: node)
    }

    @Test func aLostTCPConnectionEndsOnce() async throws {
        let node = self.node()
        let client = try await node.connect()
        try await client.channel.close()
        try await self.expectEndedOnce(client, on: node)
    }

    @Test func aProtocolErrorClosesAndTheCloseTimeoutDropsASilentPeer() async throws {
        let node = self.node { $0.closeTimeout = .seconds(5) }
        let client = try await node.connect()
        try await client.send(.text, ByteBuffer(bytes: [0xC3, 0x28]))  // invalid UTF-8
        #expect(try await client.frames().map(\.closeCode) == [1007])
        await node.loop.advanceTime(by: .seconds(4))
        #expect(client.isActive)
        await node.loop.advanceTime(by: .seconds(1))
        try await self.expectEndedOnce(client, on: node)
    }

    @Test func heartbeatsPingThenDropASilentPeer() async throws {
        let node = self.node {
            $0.pingInterval = .seconds(10)
            $0.pongTimeout = .seconds(30)
        }
        let client = try await node.connect()
        try await node.tick(after: .seconds(11))
        #expect(try await client.frames().map(\.opcode) == [.ping])
        try await node.tick(after: .seconds(31))
        #expect(try await client.frames().isEmpty)  // no one to tell
        try await self.expectEndedOnce(client, on: node)
    }

    @Test func aSlowConsumerIsClosedWithItsCode() async throws {
        let node = self.node()
        let client = try await node.connect()
        client.channel.isWritable = false
        client.channel.pipeline.fireChannelWritabilityChanged()
        #expect(try await client.frames().map(\.closeCode) == [1008])
        try await self.expectEndedOnce(client, on: node)
    }

    @Test func theDrainClosesEveryConnectionWith1001() async throws {
        let node = self.node()
        let (alice, bob) = (try await node.connect("alice"), try await node.connect("bob"))
        node.gateway.hub.closeAll(code: CloseCode.goingAway, reason: "server draining")
        for client in [alice, bob] {
            #expect(try await client.frames().map(\.closeCode) == [1001])
            try await client.send(.connectionClose, ByteBuffer(bytes: [0x03, 0xE9]))
        }
        try await node.settle { node.counts == (0, 0) }
        #expect(Set(self.recording(node).unregistered.withLock { $0 }) == [alice.info.id, bob.info.id])
    }

    @Test func aConnectionAdmittedWhileDrainingGetsItsWelcomeThenA1001() async throws {
        let node = self.node { $0.welcomeFrame = true }
        node.gateway.draining.store(true, ordering: .relaxed)
        let client = try await node.connect()
        let frames = try await client.frames()
        #expect(frames.map(\.opcode) == [.text, .connectionClose])
        #expect(frames.last?.closeCode == 1001)
    }

    @Test func aBackendCloseCommandClosesWithItsCode() async throws {
        let node = self.node()
        let client = try await node.connect()
        node.gateway.broker.send(.close(code: 4000, reason: "kicked"), to: client.info.id)
        #expect(try await client.frames().map(\.closeCode) == [4000])
        try await client.send(.connectionClose, ByteBuffer(bytes: [0x0F, 0xA0]))
        try await self.expectEndedOnce(client, on: node)
    }

    // MARK: Order and rooms

    @Test func messagesWaitBehindASlowRegistryCallInOrder() async throws {
        let node = self.node()
        let (alice, bob) = (try await node.connect("alice"), try await node.connect("bob"))
        try await bob.send(#"{"action":"joinRoom","roomId":"lobby"}"#)
        try await node.settle { try await !bob.texts().isEmpty }
        self.recording(node).holdJoins.store(true, ordering: .relaxed)
        try await alice.send(#"{"action":"joinRoom","roomId":"lobby"}"#)
        try await alice.send(#"{"action":"sendMessage","roomId":"lobby","message":"first"}"#)
        try await node.settle()
        // The message waits behind the join: nobody has it yet.
        #expect(try await bob.texts().filter { $0.contains("first") }.isEmpty)
        self.recording(node).holdJoins.store(false, ordering: .relaxed)
        var seen: [String] = []
        try await node.settle {
            seen += try await alice.texts()
            return seen.contains { $0.contains("first") }
        }
        #expect(seen.firstIndex { $0.contains("joinedRoom") }! < seen.firstIndex { $0.contains("first") }!)
        #expect(try await bob.texts().contains { $0.contains("first") })
    }

    @Test func leavingTellsTheRoomAndTheEndLeavesEveryRoom() async throws {
        let node = self.node { $0.presence = true }
        let (alice, bob) = (try await node.connect("alice"), try await node.connect("bob"))
        for client in [alice, bob] {
            try await client.send(#"{"action":"joinRoom","roomId":"lobby"}"#)
            try await client.send(#"{"action":"joinRoom","roomId":"other"}"#)
        }
        try await node.settle { node.gateway.broker.localRoomCount == 2 }
        try await alice.channel.close()
        try await self.settleMembers(node, room: "lobby", count: 1)
        try await self.settleMembers(node, room: "other", count: 1)
        // `userLeft` goes out after the registry forgets the connection, off the loop: wait for it, then check it
        // came once per room.
        var left: [String] = []
        try await node.settle {
            left += try await bob.texts().filter { $0.contains("userLeft") }
            return left.count >= 2
        }
        try await node.settle()
        left += try await bob.texts().filter { $0.contains("userLeft") }
        #expect(left.count == 2)
    }

    func settleMembers(_ node: TestNode, room: String, count: Int) async throws {
        let broker = node.gateway.broker
        try await node.settle { await broker.members(of: RoomID(room)!, after: nil, limit: 10).items.count == count }
    }

    @Test func aBroadcastReachesEveryConnection() async throws {
        let node = self.node()
        let clients = [try await node.connect("a"), try await node.connect("b"), try await node.connect("c")]
        node.gateway.broker.publish(OutboundFrame.text(["hello": "all"]), to: .everyone)
        for client in clients { #expect(try await client.texts() == [#"{"hello":"all"}"#]) }
    }
}
