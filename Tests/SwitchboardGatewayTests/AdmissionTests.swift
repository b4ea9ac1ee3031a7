import NIOCore
import NIOHTTP1
import SwitchboardConfiguration
import SwitchboardCore
import Synchronization
import Testing

@testable import SwitchboardGateway

/// `$connect` without a socket: every refusal answers its status and message and leaves no slot taken, and a lease
/// gives back what it took exactly once.
@Suite struct AdmissionTests {
    /// A valid handshake for `uri`, with `extra` headers added and the header named `without` left out.
    func head(_ uri: String = "/ws", _ extra: [(String, String)] = [], without: String? = nil) -> HTTPRequestHead {
        let handshake = [
            ("Host", "x"), ("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ]
        return HTTPRequestHead(version: .http1_1, method: .GET, uri: uri, headers: HTTPHeaders(handshake.filter { $0.0 != without } + extra))
    }

    func evaluate(_ head: HTTPRequestHead, on node: TestNode) -> Result<Admission.Candidate, GatewayResponseError> {
        Admission.evaluate(head, remoteAddress: try? SocketAddress(ipAddress: "127.0.0.1", port: 9), gateway: node.gateway)
    }

    /// Expects `head` refused with `status` and `{"message": message}`, and no slot held afterwards beyond `slots`.
    func expectRefused(
        _ head: HTTPRequestHead,
        on node: TestNode,
        _ status: HTTPResponseStatus,
        _ message: String,
        slots: Int = 0,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        guard case .failure(let refusal) = self.evaluate(head, on: node) else {
            Issue.record("\(head.uri) was admitted", sourceLocation: sourceLocation)
            return
        }
        #expect(refusal.response.status == status, sourceLocation: sourceLocation)
        #expect(refusal.response.body == GatewayResponse.message(status, message).body, sourceLocation: sourceLocation)
        #expect(node.counts.slots == slots, "a refusal leaked a slot", sourceLocation: sourceLocation)
    }

    func admit(_ head: HTTPRequestHead, on node: TestNode) throws -> Admission.Candidate {
        try self.evaluate(head, on: node).get()
    }

    @Test func eachRefusalAnswersItsStatusAndTakesNoSlot() {
        let node = TestNode { $0.allowedOrigins = ["https://app.example.com"] }
        self.expectRefused(
            self.head(without: "Sec-WebSocket-Key"),
            on: node,
            .badRequest,
            "Invalid WebSocket handshake: Sec-WebSocket-Key must be the base64 of 16 bytes"
        )
        self.expectRefused(self.head("/health"), on: node, .notFound, "Not Found")
        self.expectRefused(self.head("/%40x"), on: node, .notFound, "Not Found")
        self.expectRefused(self.head("/prod/%2Fws"), on: node, .badRequest, "Encoded / (%2F) is not allowed in a path")
        self.expectRefused(
            self.head("/ws", [("Origin", "https://evil.example.com")]),
            on: node,
            .forbidden,
            "Origin https://evil.example.com is not allowed"
        )
        self.expectRefused(self.head("/ws?userId=a%20b"), on: node, .badRequest, "userId may contain only letters, digits and _ - . : @")
        self.expectRefused(
            self.head("/ws?token=aaaaa.bbb.ccc", [("Authorization", "Bearer aaaaa.bbb.ddd")]),
            on: node,
            .badRequest,
            "Token given in more than one place with different values"
        )
        node.gateway.draining.store(true, ordering: .relaxed)
        self.expectRefused(self.head(), on: node, .serviceUnavailable, "Server is draining; reconnect to another node")
    }

    @Test func anAdmittedHandshakeHoldsOneSlotUntilItsLeaseEnds() throws {
        let node = TestNode { $0.allowedOrigins = ["https://app.example.com"] }
        let candidate = try self.admit(self.head("/prod/ws?userId=bob&token=aaaaa.bbb.ccc", [("Origin", "https://app.example.com")]), on: node)
        #expect(candidate.info.userId == "bob")
        #expect(candidate.info.stage == "prod")
        #expect(candidate.token == "aaaaa.bbb.ccc")
        #expect(node.counts.slots == 1)
        candidate.lease.end(nil)
        #expect(node.counts.slots == 0)
        candidate.lease.end(nil)
        #expect(node.counts.slots == 0)
    }

    @Test func theConnectThrottleRefusesWith429() throws {
        let node = TestNode {
            $0.throttling.connectRate = 0.001
            $0.throttling.connectBurst = 1
        }
        try self.admit(self.head(), on: node).lease.end(nil)
        self.expectRefused(self.head(), on: node, .tooManyRequests, "Too Many Requests")
    }

    @Test func maxConnectionsRefusesWith429AndGivesTheSlotBack() throws {
        let node = TestNode { $0.maxConnections = 1 }
        let first = try self.admit(self.head(), on: node)
        self.expectRefused(self.head(), on: node, .tooManyRequests, "Too many connections on this node (at most 1)", slots: 1)
        first.lease.end(nil)
        #expect(node.counts.slots == 0)
        try self.admit(self.head(), on: node).lease.end(nil)
        #expect(node.counts.slots == 0)
    }

    // MARK: authorize

    func userCount(_ node: TestNode, _ userId: String) -> Int? {
        node.gateway.connectionsPerUser.withLock { $0[userId] }
    }

    @Test func thePerUserLimitRefusesWith429AndCountsComeBack() async throws {
        let node = TestNode { $0.maxConnectionsPerUser = 2 }
        let head = self.head("/ws?userId=bob")
        let (first, second, third) = (try self.admit(head, on: node), try self.admit(head, on: node), try self.admit(head, on: node))
        _ = try await Admission.authorize(first, head: head, gateway: node.gateway)
        _ = try await Admission.authorize(second, head: head, gateway: node.gateway)
        await #expect {
            try await Admission.authorize(third, head: head, gateway: node.gateway)
        } throws: { error in
            let refusal = error as? GatewayResponseError
            return refusal?.response.status == .tooManyRequests
                && refusal?.response.body == GatewayResponse.message(.tooManyRequests, "Too many connections for this user (at most 2)").body
        }
        #expect(self.userCount(node, "bob") == 2)
        third.lease.end(nil)
        #expect(self.userCount(node, "bob") == 2)  // the refused one never counted
        first.lease.end(nil)
        first.lease.end(nil)
        #expect(self.userCount(node, "bob") == 1)
        let fourth = try self.admit(head, on: node)
        _ = try await Admission.authorize(fourth, head: head, gateway: node.gateway)
        #expect(self.userCount(node, "bob") == 2)
        second.lease.end(nil)
        fourth.lease.end(nil)
        #expect(self.userCount(node, "bob") == nil)
        #expect(node.counts.slots == 0)
    }

    @Test func registrationIsVisibleUntilTheLeaseEnds() async throws {
        let node = TestNode()
        let head = self.head("/ws?userId=carol")
        let candidate = try self.admit(head, on: node)
        let (info, _) = try await Admission.authorize(candidate, head: head, gateway: node.gateway)
        #expect(info.id == candidate.info.id)
        #expect(await node.gateway.broker.connection(info.id)?.info.userId == "carol")
        candidate.lease.end(nil)
        #expect(node.counts.slots == 0)
        let broker = node.gateway.broker
        try await node.settle { await broker.connection(info.id) == nil }
    }

    @Test func withNothingAsynchronousAdmissionRegistersOnTheLoop() async throws {
        let node = TestNode { $0.maxConnectionsPerUser = 1 }
        let head = self.head("/ws?userId=dana")
        let (first, second) = (try self.admit(head, on: node), try self.admit(head, on: node))
        let admitted = try Admission.authorizeNow(first, gateway: node.gateway)
        #expect(admitted?.0.id == first.info.id)
        #expect(await node.gateway.broker.connection(first.info.id) != nil)
        // The per-user limit refuses on the loop too, and the refused lease undoes its registration.
        #expect(throws: GatewayResponseError.self) { try Admission.authorizeNow(second, gateway: node.gateway) }
        #expect(await node.gateway.broker.connection(second.info.id) == nil)  // refused before it was registered
        second.lease.end(nil)
        first.lease.end(nil)
        let broker = node.gateway.broker
        try await node.settle { await broker.connection(second.info.id) == nil }
        #expect(self.userCount(node, "dana") == nil)
        #expect(node.counts.slots == 0)
    }

    @Test func aConnectRouteOrAJWTKeyNeedsTheAsynchronousPath() throws {
        let node = TestNode { $0.routes = try! RouteTable(["$connect": .integration(url: "http://127.0.0.1:9/", routeResponse: false)]) }
        let candidate = try self.admit(self.head(), on: node)
        #expect(try Admission.authorizeNow(candidate, gateway: node.gateway) == nil)
        candidate.lease.end(nil)
        #expect(node.counts.slots == 0)
    }
}
