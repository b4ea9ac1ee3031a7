import Logging
import NIOCore
import NIOEmbedded
import NIOWebSocket
import Prometheus
import SwitchboardConfiguration
import SwitchboardCore
import Synchronization
import Testing

@testable import SwitchboardGateway

/// A node on one `NIOAsyncTestingEventLoop` with its broker in memory, so a handler test is a few lines:
/// `let node = TestNode(); let alice = try await node.connect("alice"); try await alice.send(...)`.
final class TestNode: Sendable {
    let loop = NIOAsyncTestingEventLoop()
    let gateway: GatewayContext

    /// - Parameters:
    ///   - configure: changes to the default configuration.
    ///   - broker: the broker over this node's hub (in memory by default).
    ///   - wallClock: milliseconds since 1970 for timestamps (fixed by default).
    init(
        _ configure: (inout GatewayConfiguration) -> Void = { _ in },
        broker makeBroker: ((any LocalDelivery) -> any Broker)? = nil,
        wallClock: @escaping @Sendable () -> Int64 = { 1_000_000 }
    ) {
        var configuration = GatewayConfiguration()
        configure(&configuration)
        let metrics = GatewayMetrics(registry: PrometheusCollectorRegistry(), routes: configuration.routes)
        let hub = LocalHub(group: self.loop, metrics: metrics)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        self.gateway = GatewayContext(
            configuration: configuration,
            broker: makeBroker?(hub) ?? InMemoryBroker(delivering: hub),
            hub: hub,
            logger: logger,
            wallClock: wallClock,
            integrations: nil,
            metrics: metrics,
            resources: try! GatewayResources.load()
        )
    }

    /// A client that passed `$connect`, its handler on an active channel of this node's loop.
    func connect(_ userId: String = "alice") async throws -> TestClient {
        let lease = try #require(ConnectionLease.take(self.gateway))
        let info = ConnectionInfo(id: .random(), userId: userId, connectedAt: 1_000_000, sourceIp: "127.0.0.1", userAgent: "test", stage: nil)
        try await lease.register(info)
        lease.open()
        let channel = NIOAsyncTestingChannel(loop: self.loop)
        try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).get()
        let (gateway, admitted) = (self.gateway, Admitted(info: info, claims: nil, lease: lease))
        try await self.loop.submit {
            try channel.pipeline.syncOperations.addHandler(
                WebSocketConnectionHandler(admitted, gateway: gateway, eventLoop: channel.eventLoop, now: .now())
            )
        }.get()
        return TestClient(channel: channel, info: info, node: self)
    }

    /// The heartbeat sweep, as if it ran `after` from now.
    func tick(after: TimeAmount) async throws {
        let (hub, loop) = (self.gateway.hub, self.loop)
        try await self.loop.submit { hub.tick(on: loop, now: .now() + after) }.get()
        await self.loop.run()
    }

    /// Runs what is due on the loop until `condition` holds (backend calls answer from other threads), at most 5 s.
    func settle(until condition: () async throws -> Bool = { true }) async throws {
        for _ in 0..<500 {
            await self.loop.run()
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        Issue.record("condition not reached in 5 s")
    }

    /// Connections whose `$disconnect` has not finished, and slots held.
    var counts: (active: Int, slots: Int) {
        (self.gateway.activeConnections.load(ordering: .relaxed), self.gateway.slots.load(ordering: .relaxed))
    }
}

/// The client side of one test connection: masked frames in, the server's frames decoded as a client reads them.
struct TestClient: Sendable {
    let channel: NIOAsyncTestingChannel
    let info: ConnectionInfo
    let node: TestNode

    func send(_ text: String) async throws {
        try await self.send(.text, ByteBuffer(string: text))
    }

    func send(_ opcode: WebSocketOpcode, _ payload: ByteBuffer, fin: Bool = true) async throws {
        let mask = WebSocketMaskingKey.random()
        var data = payload
        data.webSocketMask(mask)
        try await self.channel.writeInbound(WebSocketFrame(fin: fin, opcode: opcode, maskKey: mask, data: data))
        await self.node.loop.run()
    }

    /// Every frame the server wrote since the last call.
    func frames() async throws -> [WebSocketFrame] {
        await self.node.loop.run()
        let decoder = EmbeddedChannel(handler: ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: 1 << 24)))
        while let bytes = try await self.channel.readOutbound(as: ByteBuffer.self) { try decoder.writeInbound(bytes) }
        var frames: [WebSocketFrame] = []
        while let frame = try decoder.readInbound(as: WebSocketFrame.self) { frames.append(frame) }
        return frames
    }

    /// The text messages among ``frames()``.
    func texts() async throws -> [String] {
        try await self.frames().filter { $0.opcode == .text }.map { String(buffer: $0.data) }
    }

    var isActive: Bool { self.channel.isActive }
}

extension WebSocketFrame {
    /// A close frame's code.
    var closeCode: UInt16? {
        guard self.opcode == .connectionClose else { return nil }
        var data = self.data
        return data.readInteger(as: UInt16.self)
    }
}
