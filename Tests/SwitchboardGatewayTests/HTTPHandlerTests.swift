import NIOCore
import NIOEmbedded
import NIOHTTP1
import SwitchboardConfiguration
import SwitchboardCore
import Synchronization
import Testing

@testable import SwitchboardGateway

/// The plain-HTTP side on an `EmbeddedChannel`: request parts in, response parts out, time driven by the loop.
@Suite struct HTTPHandlerTests {
    func channel(_ node: TestNode, _ upgrade: UpgradeState = UpgradeState()) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel(handler: HTTPHandler(gateway: node.gateway, upgrade: upgrade, management: nil))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
        return channel
    }

    func head(_ uri: String, _ headers: [(String, String)] = [], method: HTTPMethod = .GET) -> HTTPRequestHead {
        HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: HTTPHeaders([("Host", "x")] + headers))
    }

    struct Response: Equatable {
        var status: HTTPResponseStatus
        var body: String

        init(_ status: HTTPResponseStatus, _ body: String) {
            (self.status, self.body) = (status, body)
        }
    }

    /// Sends a whole request without a body and reads the whole response.
    func exchange(_ channel: EmbeddedChannel, _ head: HTTPRequestHead) throws -> Response {
        try channel.writeInbound(HTTPServerRequestPart.head(head))
        try channel.writeInbound(HTTPServerRequestPart.end(nil))
        return try self.response(channel)
    }

    func response(_ channel: EmbeddedChannel) throws -> Response {
        guard case .head(let head) = try channel.readOutbound(as: HTTPServerResponsePart.self),
            case .body(.byteBuffer(let body)) = try channel.readOutbound(as: HTTPServerResponsePart.self),
            case .end = try channel.readOutbound(as: HTTPServerResponsePart.self)
        else {
            Issue.record("no whole response")
            return Response(.imATeapot, "")
        }
        #expect(head.headers["content-length"] == [String(body.readableBytes)])
        return Response(head.status, String(buffer: body))
    }

    @Test func healthIsOkThenDraining() throws {
        let node = TestNode()
        let channel = try self.channel(node)
        #expect(try self.exchange(channel, self.head("/health")) == Response(.ok, #"{"status":"ok"}"#))
        node.gateway.draining.store(true, ordering: .relaxed)
        #expect(try self.exchange(channel, self.head("/health")) == Response(.serviceUnavailable, #"{"status":"draining"}"#))
    }

    @Test func websocketHealthReportsTheCounts() throws {
        let node = TestNode()
        node.gateway.activeConnections.store(2, ordering: .relaxed)
        node.gateway.acceptedConnections.store(5, ordering: .relaxed)
        let response = try self.exchange(try self.channel(node), self.head("/health/websocket"))
        #expect(response.status == .ok)
        let json = try JSONValue.parse(response.body)
        #expect(json[path: ["status"]] == JSONValue.string("healthy"))
        #expect(json[path: ["connections"]] == JSONValue.number("2"))
        #expect(json[path: ["connectionsAccepted"]] == JSONValue.number("5"))
    }

    @Test func aWebSocketPathWithoutUpgradeAnswers426AndReservedPaths404() throws {
        let channel = try self.channel(TestNode())
        let upgradeRequired = try self.exchange(channel, self.head("/prod/ws"))
        #expect(upgradeRequired.status == .upgradeRequired)
        #expect(upgradeRequired.body.contains("ws://host:port/prod/ws"))
        #expect(try self.exchange(channel, self.head("/health/nope")) == Response(.notFound, #"{"message":"Not Found"}"#))
        #expect(try self.exchange(channel, self.head("/%40stats")) == Response(.notFound, #"{"message":"Not Found"}"#))
    }

    @Test func aStoredRejectionIsTheAnswerOnce() throws {
        let upgrade = UpgradeState()
        let channel = try self.channel(TestNode(), upgrade)
        upgrade.rejection = GatewayResponse(.forbidden, body: Array("go away".utf8))
        let handshake = self.head("/ws", [("Upgrade", "websocket"), ("Connection", "Upgrade")])
        #expect(try self.exchange(channel, handshake) == Response(.forbidden, "go away"))
        #expect(upgrade.rejection?.status == nil)
        #expect(!channel.isActive)  // an answered upgrade request is not kept alive
    }

    @Test func aBodyWhereNoneIsTakenIsRefusedAtTheHead() throws {
        let channel = try self.channel(TestNode())
        try channel.writeInbound(HTTPServerRequestPart.head(self.head("/health", [("Content-Length", "5")], method: .POST)))
        // Answered before any of the body was sent, and closed so that none of it is read.
        #expect(try self.response(channel) == Response(.payloadTooLarge, #"{"message":"This endpoint takes no request body"}"#))
        #expect(!channel.isActive)
    }

    @Test func theRequestTimerClosesAnIdleConnection() throws {
        let channel = try self.channel(TestNode { $0.handshakeTimeout = .seconds(5) })
        channel.embeddedEventLoop.advanceTime(by: .seconds(4))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(!channel.isActive)
    }

    @Test func theRequestTimerIsReArmedAfterAKeptAliveResponse() throws {
        let channel = try self.channel(TestNode { $0.handshakeTimeout = .seconds(5) })
        channel.embeddedEventLoop.advanceTime(by: .seconds(4))
        _ = try self.exchange(channel, self.head("/health"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(4))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(!channel.isActive)
    }

    /// On the async testing loop: the lease's end unregisters in a task, off any embedded loop's thread.
    @Test func anAdmittedConnectionClosedBeforeTheHandoverEndsItsLease() async throws {
        let node = TestNode()
        let lease = try #require(ConnectionLease.take(node.gateway))
        let info = ConnectionInfo(id: .random(), userId: "alice", connectedAt: 1_000_000, sourceIp: "127.0.0.1", userAgent: "test", stage: nil)
        try await lease.register(info)
        lease.open()
        let loop = node.loop
        let upgrade = try await loop.submit { NIOLoopBound(UpgradeState(), eventLoop: loop) }.get()
        let channel = NIOAsyncTestingChannel(loop: node.loop)
        try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).get()
        let gateway = node.gateway
        try await node.loop.submit {
            upgrade.value.admitted = Admitted(info: info, claims: nil, lease: lease)
            try channel.pipeline.syncOperations.addHandler(HTTPHandler(gateway: gateway, upgrade: upgrade.value, management: nil))
        }.get()
        #expect([node.counts.active, node.counts.slots] == [1, 1])
        try await channel.close()
        let broker = node.gateway.broker
        try await node.settle { node.counts == (0, 0) }
        try await node.settle { await broker.connection(info.id) == nil }
        #expect(try await node.loop.submit { upgrade.value.admitted == nil }.get())
        #expect([node.counts.active, node.counts.slots] == [0, 0])
    }
}
