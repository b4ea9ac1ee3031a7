import NIOCore
import NIOEmbedded
import NIOHTTP1
import SwitchboardConfiguration
import SwitchboardCore
import Synchronization
import Testing

@testable import SwitchboardGateway

/// Nodes of one process, linked as the node channels link them over Redis.
private final class RelayLink: Sendable {
    /// Node → its gateway, or `nil` for a node that listens and never answers (a frozen owner).
    let nodes = Mutex<[String: GatewayContext?]>([:])

    func send(_ payload: [UInt8], from origin: String, to node: String, sent: @Sendable (Bool) -> Void) {
        guard let target = self.nodes.withLock({ $0[node] }) else { return sent(false) }
        sent(true)
        target?.socketIORelay.received(from: origin, payload, gateway: target!)
    }
}

/// The in-memory broker, with ``RelayLink`` as its node channels.
private struct RelayingBroker: ForwardingBroker {
    let name: String
    let link: RelayLink
    let inner: InMemoryBroker

    var relaysToNodes: Bool { true }
    func relay(_ payload: [UInt8], to node: String, sent: @escaping @Sendable (Bool) -> Void) {
        self.link.send(payload, from: self.name, to: node, sent: sent)
    }
}

/// What each request was answered.
private final class Answers: Sendable {
    let answers = Mutex<[UInt64: GatewayResponse]>([:])

    func responder() -> PollResponder {
        let id = SocketIOHTTP.nextRequestID()
        return PollResponder(id: id) { response, written in
            self.answers.withLock { $0[id] = response }
            written?()
        }
    }

    subscript(_ responder: PollResponder) -> GatewayResponse? { self.answers.withLock { $0[responder.id] } }
}

@Suite struct SocketIORelayTests {
    @Test func aSidNamesItsNode() {
        let sid = SocketIORelay.makeSid(node: "gw-a.1:x@y")
        #expect(sid.hasPrefix("gw-a.1:x@y~") && sid.utf8.count == "gw-a.1:x@y~".utf8.count + 16)
        #expect(SocketIORelay.owner(of: sid) == "gw-a.1:x@y")
        for bad in ["", "~", "a~", "~AAAAAAAAAAAAAAA=", "plain", "a b~AAAAAAAAAAAAAAA=", "a~bad!", String(repeating: "x", count: 129) + "~AAAA"] {
            #expect(SocketIORelay.owner(of: bad) == nil, "\(bad)")
        }
    }

    private func nodes() -> (TestNode, TestNode, RelayLink) {
        let link = RelayLink()
        let a = TestNode({ $0.nodeId = "a" }, broker: { RelayingBroker(name: "a", link: link, inner: InMemoryBroker(delivering: $0)) })
        let b = TestNode({ $0.nodeId = "b" }, broker: { RelayingBroker(name: "b", link: link, inner: InMemoryBroker(delivering: $0)) })
        link.nodes.withLock { $0 = ["a": a.gateway, "b": b.gateway] }
        return (a, b, link)
    }

    private func request(
        _ method: HTTPMethod,
        sid: String?,
        body: String = "",
        on node: TestNode,
        _ answers: Answers
    ) async -> PollResponder {
        let responder = answers.responder()
        let uri = "/socket.io/?EIO=4&transport=polling" + (sid.map { "&sid=" + $0 } ?? "")
        let (head, bytes, loop, gateway) = (HTTPRequestHead(version: .http1_1, method: method, uri: uri), Array(body.utf8), node.loop, node.gateway)
        // Served on the node's loop, as `HTTPHandler` serves it.
        node.loop.execute {
            _ = SocketIOHTTP.handle(head, body: bytes, responder: responder, remoteAddress: nil, eventLoop: loop, gateway: gateway)
        }
        await node.loop.run()
        return responder
    }

    private func text(_ response: GatewayResponse?) -> String { response.map { String(decoding: $0.body, as: UTF8.self) } ?? "<none>" }

    @Test func requestsForAnotherNodesSessionAreServedByIt() async throws {
        let (a, b, _) = self.nodes()
        let answers = Answers()
        let open = self.text(answers[await self.request(.GET, sid: nil, on: a, answers)])
        let sid = try #require(try JSONValue.parse(Array(open.utf8.dropFirst())).objectValue?["sid"]?.stringValue)
        #expect(sid.hasPrefix("a~"))
        let connect = await self.request(.POST, sid: sid, body: "40", on: b, answers)
        await a.loop.run()
        #expect(answers[connect]?.status == .ok && self.text(answers[connect]) == "ok")
        let poll = await self.request(.GET, sid: sid, on: b, answers)
        await a.loop.run()
        #expect(answers[poll]?.status == .ok && self.text(answers[poll]).hasPrefix("40{\"sid\":"))
        // A GET relayed from b waits on a until a POST (to a) brings packets.
        let waiting = await self.request(.GET, sid: sid, on: b, answers)
        await a.loop.run()
        #expect(answers[waiting] == nil)
        #expect(b.gateway.socketIORelay.waitingCount == 1)
        _ = await self.request(.POST, sid: sid, body: "42[\"ping\"]", on: a, answers)
        await a.loop.run()
        #expect(self.text(answers[waiting]).contains("\"pong\""))
        #expect(b.gateway.socketIORelay.waitingCount == 0)
        // The relayed answer keeps the owner's headers.
        #expect(answers[waiting]?.headers.contains { $0.name == "Content-Type" } == true)
    }

    @Test func aSessionOfAGoneNodeIsUnknownAtOnce() async {
        let (_, b, _) = self.nodes()
        let answers = Answers()
        let poll = await self.request(.GET, sid: "gone~AAAAAAAAAAAAAAA=", on: b, answers)
        #expect(answers[poll]?.status == .badRequest && self.text(answers[poll]).contains("Session ID unknown"))
        #expect(b.gateway.socketIORelay.waitingCount == 0)
    }

    @Test func anAnswerForAnotherSessionUnderTheSameIDIsIgnored() async {
        let (_, b, link) = self.nodes()
        link.nodes.withLock { $0["frozen"] = .some(nil) }
        let answers = Answers()
        let poll = await self.request(.GET, sid: "frozen~AAAAAAAAAAAAAAA=", on: b, answers)
        // An answer of the owner's for a request of this node's previous run, which had the same id.
        b.gateway.socketIORelay.received(from: "frozen", Array("A\t\(poll.id)\tfrozen~BBBBBBBBBBBBBBB=\t200\n2".utf8), gateway: b.gateway)
        #expect(answers[poll] == nil)
        b.gateway.socketIORelay.received(from: "frozen", Array("A\t\(poll.id)\tfrozen~AAAAAAAAAAAAAAA=\t200\n2".utf8), gateway: b.gateway)
        #expect(self.text(answers[poll]) == "2")
    }

    @Test func aRelayWithoutAnswerEndsAtTheTimeout() async {
        let (_, b, link) = self.nodes()
        link.nodes.withLock { $0["frozen"] = .some(nil) }  // listens, never answers
        let answers = Answers()
        let poll = await self.request(.GET, sid: "frozen~AAAAAAAAAAAAAAA=", on: b, answers)
        #expect(answers[poll] == nil)
        await b.loop.advanceTime(by: b.gateway.socketIORelay.timeout - .milliseconds(1))
        #expect(answers[poll] == nil)
        await b.loop.advanceTime(by: .milliseconds(1))
        #expect(answers[poll]?.status == .badRequest && self.text(answers[poll]).contains("Session ID unknown"))
        #expect(b.gateway.socketIORelay.waitingCount == 0)
    }

    @Test func anAbortedRelayedPollEndsTheSessionOnItsOwner() async throws {
        let (a, b, _) = self.nodes()
        let answers = Answers()
        let open = self.text(answers[await self.request(.GET, sid: nil, on: a, answers)])
        let sid = try #require(try JSONValue.parse(Array(open.utf8.dropFirst())).objectValue?["sid"]?.stringValue)
        let waiting = await self.request(.GET, sid: sid, on: b, answers)
        await a.loop.run()
        #expect(answers[waiting] == nil)
        SocketIOHTTP.pollAborted(sid: sid, id: waiting.id, gateway: b.gateway)
        await a.loop.run()
        #expect(b.gateway.socketIORelay.waitingCount == 0)
        #expect(!a.gateway.engines.contains(sid))  // "poll connection closed prematurely", as for a local GET
    }

    @Test func malformedRelayMessagesAreDropped() async {
        let (a, _, _) = self.nodes()
        for bad in [
            "", "Q", "Q\tx\tGET\ts\n", "A\t1\t999\n", "A\t1\ta~AAAAAAAAAAAAAAA=\t999\n", "A\t1\ta~AAAAAAAAAAAAAAA=\t200\tonly-name\n", "Z\t1\n",
            "Q\t1\tPUT\ta~AAAAAAAAAAAAAAA=\n",
        ] {
            a.gateway.socketIORelay.received(from: "b", Array(bad.utf8), gateway: a.gateway)
        }
        await a.loop.run()
        #expect(a.gateway.socketIORelay.waitingCount == 0)
    }
}
