import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOWebSocket
import SwitchboardConfiguration
import SwitchboardCore
import SwitchboardSocketIO
import Synchronization
import Testing

@testable import SwitchboardGateway

/// Socket.IO on a testing channel: ``SocketIOWebSocketHandler`` with an ``EngineConnection`` behind it, and the
/// polling path driven on ``EngineConnection`` directly, with exact bytes; every way a session ends runs each
/// namespace connection's `$disconnect` once.
@Suite struct SocketIOHandlerTests {
    typealias RecordingBroker = ConnectionHandlerTests.RecordingBroker

    func node(
        _ configure: (inout GatewayConfiguration) -> Void = { _ in },
        wallClock: @escaping @Sendable () -> Int64 = { 1_000_000 }
    ) -> TestNode {
        TestNode(configure, broker: { RecordingBroker($0) }, wallClock: wallClock)
    }

    func recording(_ node: TestNode) -> RecordingBroker { node.gateway.broker as! RecordingBroker }

    static func head(_ query: String) -> HTTPRequestHead {
        HTTPRequestHead(version: .http1_1, method: .GET, uri: "/socket.io/?EIO=4&" + query)
    }

    /// A WebSocket opened on the path without a `sid`: a new Engine.IO session on this node's loop.
    func openWebSocket(_ node: TestNode, userId: String = "sio") async throws -> TestClient {
        let channel = NIOAsyncTestingChannel(loop: node.loop)
        try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).get()
        let (gateway, head) = (node.gateway, Self.head("transport=websocket&userId=" + userId))
        try await node.loop.submit {
            try channel.pipeline.syncOperations.addHandler(SocketIOWebSocketHandler(head: head, sid: nil, gateway: gateway))
        }.get()
        // The namespace connections' ids come with their CONNECT replies; this one is a placeholder.
        let info = ConnectionInfo(id: .random(), userId: userId, connectedAt: 0, sourceIp: "127.0.0.1", userAgent: "test", stage: nil)
        return TestClient(channel: channel, info: info, node: node)
    }

    /// The `sid` of an open packet `0{"sid":…}` or a CONNECT reply `40{"sid":…}`.
    func sid(in text: String) throws -> String {
        let json = try JSONValue.parse(Array(text.drop { $0.isNumber }.utf8))
        return try #require(json.objectValue?["sid"]?.stringValue)
    }

    /// Opens a session and joins the main namespace: the namespace connection's id.
    func connected(_ node: TestNode, _ client: TestClient) async throws -> ConnectionID {
        _ = try await client.texts()  // the open packet
        try await client.send("40")
        var texts: [String] = []
        try await node.settle {
            texts += try await client.texts()
            return !texts.isEmpty
        }
        #expect(texts.count == 1)
        return try #require(ConnectionID(try self.sid(in: texts[0])))
    }

    /// The heartbeat sweep as the gateway runs it (``LocalHub`` then ``EngineSessions``), at `now`.
    func sweep(_ node: TestNode, at now: NIODeadline) async throws {
        let (hub, engines, loop) = (node.gateway.hub, node.gateway.engines, node.loop)
        try await node.loop.submit {
            hub.tick(on: loop, now: now)
            engines.tick(on: loop, now: now)
        }.get()
        await node.loop.run()
    }

    /// Waits until every namespace connection's end has run, then checks each ran once.
    func expectEndedOnce(_ ids: [ConnectionID], on node: TestNode) async throws {
        try await node.settle { node.counts == (0, 0) }
        let unregistered = self.recording(node).unregistered.withLock { $0 }
        #expect(unregistered.sorted { $0.rawValue < $1.rawValue } == ids.sorted { $0.rawValue < $1.rawValue })
        for id in ids { #expect(await node.gateway.broker.connection(id) == nil) }
    }

    // MARK: A session on a WebSocket

    @Test func theFirstFrameIsTheOpenPacket() async throws {
        let node = self.node {
            $0.socketIO.pingInterval = .seconds(25)
            $0.socketIO.pingTimeout = .seconds(20)
            $0.socketIO.maxPayload = 1_000_000
        }
        let client = try await self.openWebSocket(node)
        let frames = try await client.frames()
        #expect(frames.map(\.opcode) == [.text])
        let open = String(buffer: frames[0].data)
        let sid = try self.sid(in: open)
        #expect(open == #"0{"sid":"\#(sid)","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#)
        #expect(node.gateway.engines.contains(sid))
        #expect(node.counts == (0, 0))  // no namespace yet: no connection
    }

    @Test func aConnectIsAnsweredWithTheConnectionIdAndRegistersIt() async throws {
        let node = self.node()
        let client = try await self.openWebSocket(node)
        let open = try #require(try await client.texts().first)
        try await client.send("40")
        var texts: [String] = []
        try await node.settle {
            texts += try await client.texts()
            return !texts.isEmpty
        }
        let first = try #require(texts.first)
        let id = try #require(ConnectionID(try self.sid(in: first)))
        #expect(texts == [#"40{"sid":"\#(id.rawValue)"}"#])
        #expect(id.rawValue != (try self.sid(in: open)))
        #expect(node.counts == (1, 1))
        let registered = await node.gateway.broker.connection(id)
        #expect(registered?.info.userId == "sio")
        #expect(try await self.connectionIDs(node) == [id])
    }

    @Test func anEventIsRoutedByItsNameAndAnsweredAsAnEvent() async throws {
        let node = self.node()
        let client = try await self.openWebSocket(node)
        _ = try await self.connected(node, client)
        try await client.send(#"42["joinRoom",{"roomId":"a"}]"#)
        var texts: [String] = []
        try await node.settle {
            texts += try await client.texts()
            return !texts.isEmpty
        }
        #expect(texts == [#"42["joinedRoom",{"action":"joinedRoom","roomId":"a","members":["sio"],"memberCount":1,"offset":0}]"#])
        let members = await node.gateway.broker.members(of: RoomID("a")!, after: nil, limit: 10).items
        #expect(members.map(\.userId) == ["sio"])
    }

    @Test func anEventWithAnAckIdIsAnsweredWithItsAck() async throws {
        let node = self.node()
        let client = try await self.openWebSocket(node)
        _ = try await self.connected(node, client)
        try await client.send(#"421["joinRoom",{"roomId":"a"}]"#)
        var texts: [String] = []
        try await node.settle {
            texts += try await client.texts()
            return !texts.isEmpty
        }
        #expect(texts == [#"431[{"action":"joinedRoom","roomId":"a","members":["sio"],"memberCount":1,"offset":0}]"#])
        // A route that answers nothing is acknowledged empty.
        try await client.send(#"427["sendMessage",{"roomId":"a","message":"hi"}]"#)
        texts = []
        try await node.settle {
            texts += try await client.texts()
            return texts.contains("437[]")
        }
    }

    @Test func aRoomMessageFromAnotherConnectionArrivesAsAMessageEvent() async throws {
        let node = self.node { $0.presence = false }
        let client = try await self.openWebSocket(node)
        _ = try await self.connected(node, client)
        try await client.send(#"42["joinRoom",{"roomId":"a"}]"#)
        try await node.settle { try await !client.texts().isEmpty }
        let bob = try await node.connect("bob")
        try await bob.send(#"{"action":"joinRoom","roomId":"a"}"#)
        try await node.settle { try await !bob.texts().isEmpty }
        try await bob.send(#"{"action":"sendMessage","roomId":"a","message":"hello"}"#)
        var texts: [String] = []
        try await node.settle {
            texts += try await client.texts()
            return !texts.isEmpty
        }
        #expect(
            texts == [
                #"42["message",{"action":"message","roomId":"a","message":"hello","sender":"bob","timestamp":1000000,"offset":1}]"#
            ]
        )
    }

    // MARK: Every way a session ends

    @Test func aNamespaceDisconnectThenAClosedWebSocketEndsOnce() async throws {
        let node = self.node()
        let client = try await self.openWebSocket(node)
        let sid = try self.sid(in: try #require(try await client.texts().first))
        let id = try await self.connected(node, client)
        try await client.send("41")
        try await self.expectEndedOnce([id], on: node)
        #expect(client.isActive)  // the Engine.IO session stays open
        #expect(node.gateway.engines.contains(sid))
        try await client.send(.connectionClose, ByteBuffer(bytes: [0x03, 0xE8]))
        // The close is answered; the session's own close after it goes nowhere (the channel is closed by then).
        let framesClient1 = try await client.frames()
        #expect(framesClient1.first?.closeCode == 1000)
        #expect(framesClient1.allSatisfy { $0.opcode == .connectionClose })
        try await node.settle { !client.isActive && !node.gateway.engines.contains(sid) }
        try await self.expectEndedOnce([id], on: node)
    }

    @Test func aNamespaceDisconnectThenAPingTimeoutEndsOnce() async throws {
        let node = self.node {
            $0.socketIO.pingInterval = .seconds(10)
            $0.socketIO.pingTimeout = .seconds(5)
        }
        let client = try await self.openWebSocket(node)
        let start = NIODeadline.now()
        let open = try #require(try await client.texts().first)
        let sid = try self.sid(in: open)
        let id = try await self.connected(node, client)
        try await client.send("41")
        try await self.expectEndedOnce([id], on: node)
        try await self.sweep(node, at: start + .seconds(11))
        let textsClient2 = try await client.texts()
        #expect(textsClient2 == ["2"])
        try await self.sweep(node, at: start + .seconds(17))
        let framesClient3 = try await client.frames()
        #expect(framesClient3.map(\.closeCode) == [1000])
        try await node.settle { !node.gateway.engines.contains(sid) }
        try await self.expectEndedOnce([id], on: node)
    }

    @Test func aPingTimeoutEndsEveryNamespaceOnceAndClosesTheWebSocket() async throws {
        let node = self.node {
            $0.socketIO.pingInterval = .seconds(10)
            $0.socketIO.pingTimeout = .seconds(5)
        }
        // The session opens between `before` and `start`: its first ping is due 10 s after, on the real clock.
        let before = NIODeadline.now()
        let client = try await self.openWebSocket(node)
        let id = try await self.connected(node, client)
        let start = NIODeadline.now()
        try await self.sweep(node, at: before + .seconds(9))
        let framesClient4 = try await client.frames()
        #expect(framesClient4.isEmpty)
        try await self.sweep(node, at: start + .seconds(11))
        let textsClient5 = try await client.texts()
        #expect(textsClient5 == ["2"])
        // The timeout counts from when the ping was due (by `start` + 10 s), not from this late sweep.
        try await self.sweep(node, at: before + .seconds(14))
        let framesClient6 = try await client.frames()
        #expect(framesClient6.isEmpty)
        #expect(node.counts == (1, 1))
        try await self.sweep(node, at: start + .seconds(17))
        let framesClient7 = try await client.frames()
        #expect(framesClient7.map(\.closeCode) == [1000])
        try await self.expectEndedOnce([id], on: node)
        try await self.sweep(node, at: start + .seconds(60))
        try await self.expectEndedOnce([id], on: node)
    }

    @Test func aPongKeepsTheSessionAlive() async throws {
        let node = self.node {
            $0.socketIO.pingInterval = .seconds(10)
            $0.socketIO.pingTimeout = .seconds(5)
        }
        let client = try await self.openWebSocket(node)
        _ = try await self.connected(node, client)
        let start = NIODeadline.now()
        try await self.sweep(node, at: start + .seconds(11))
        let textsClient8 = try await client.texts()
        #expect(textsClient8 == ["2"])
        try await client.send("3")
        try await self.sweep(node, at: start + .seconds(17))
        // The pong put the next ping 10 s after it, and no timeout: a new ping, no close.
        let textsClient9 = try await client.frames()
        #expect(textsClient9.allSatisfy { $0.opcode == .text })
        #expect(client.isActive)
        #expect(node.counts == (1, 1))
    }

    /// The sweep follows Socket.IO's timings, not the WebSocket heartbeat's: the protocol test suites run with a
    /// 300 ms ping interval and a 200 ms ping timeout, which a 1 s sweep missed by up to a second.
    @Test func theSweepIntervalFollowsTheSocketIOTimings() {
        var socketIO = GatewayConfiguration.SocketIO()
        #expect(EngineSessions.sweepInterval(socketIO) == .seconds(1))
        socketIO.pingInterval = .milliseconds(300)
        socketIO.pingTimeout = .milliseconds(200)
        #expect(EngineSessions.sweepInterval(socketIO) == .milliseconds(10))
        socketIO.heartbeatEventInterval = .milliseconds(20)
        #expect(EngineSessions.sweepInterval(socketIO) == .milliseconds(5))
    }

    @Test func aBadPacketClosesTheSessionAndEndsEveryNamespaceOnce() async throws {
        let node = self.node { $0.socketIO.namespaces = ["/", "/chat"] }
        let client = try await self.openWebSocket(node)
        let sid = try self.sid(in: try #require(try await client.texts().first))
        try await client.send("40")
        try await client.send("40/chat,")
        try await node.settle { node.counts == (2, 2) }
        try await node.settle()
        let replies = try await client.texts()
        #expect(replies.map { $0.prefix(10) } == [#"40{"sid":""#, #"40/chat,{""#])
        let ids = try await self.connectionIDs(node)
        #expect(ids.count == 2)
        try await client.send("4x")  // no such Socket.IO packet type
        let framesClient10 = try await client.frames()
        #expect(framesClient10.map(\.closeCode) == [1000])
        try await self.expectEndedOnce(ids, on: node)
        #expect(!node.gateway.engines.contains(sid))
        try await client.send(.connectionClose, ByteBuffer(bytes: [0x03, 0xE8]))
        try await node.settle { !client.isActive }
        try await self.expectEndedOnce(ids, on: node)
    }

    /// The connections in this node's hub.
    func connectionIDs(_ node: TestNode) async throws -> [ConnectionID] {
        let (hub, loop) = (node.gateway.hub, node.loop)
        return try await loop.submit { Array(hub.shard(on: loop).connections.keys) }.get()
    }

    // MARK: The session bound

    @Test func reservePastTheMaximumIsRefusedAndAClosedSessionGivesItsPlaceBack() async throws {
        let node = self.node { $0.maxConnections = 2 }
        let engines = node.gateway.engines
        #expect(engines.maximum == 2)
        #expect(engines.reserve("a", on: node.loop))
        let session = try await self.pollingSession(node, sid: "b")
        #expect(!engines.reserve("c", on: node.loop))
        try await node.loop.submit { session.value.close() }.get()
        #expect(!engines.contains("b"))
        #expect(engines.reserve("c", on: node.loop))
        #expect(!engines.reserve("d", on: node.loop))
    }

    @Test func aWebSocketPastTheSessionBoundClosesWith1013() async throws {
        let node = self.node { $0.maxConnections = 1 }
        let first = try await self.openWebSocket(node)
        let framesFirst11 = try await first.frames()
        #expect(framesFirst11.map(\.opcode) == [.text])
        let second = try await self.openWebSocket(node)
        let framesSecond12 = try await second.frames()
        #expect(framesSecond12.map(\.closeCode) == [1013])
        try await node.settle { !second.isActive }
        try await first.channel.close()
        try await node.settle { node.gateway.engines.maximum == 1 && !first.isActive }
        let third = try await self.openWebSocket(node)
        let texts = try await third.texts()
        #expect(texts.count == 1 && texts[0].hasPrefix(#"0{"sid":"#))
    }

    // MARK: Polling, on the session directly

    /// Every answer given to the requests of one test, in order, as `(request, status, body)`.
    final class Answers: Sendable {
        let all = Mutex<[(request: UInt64, status: Int, body: String)]>([])

        func responder(_ id: UInt64) -> PollResponder {
            PollResponder(id: id) { response, written in
                self.all.withLock { $0.append((id, Int(response.status.code), String(decoding: response.body, as: UTF8.self))) }
                written?()
            }
        }

        func take() -> [String] {
            self.all.withLock { answers in
                defer { answers = [] }
                return answers.map { "\($0.request) \($0.status) \($0.body)" }
            }
        }
    }

    /// A polling session as a handshake makes it, its place reserved and added.
    func pollingSession(_ node: TestNode, sid: String) async throws -> NIOLoopBound<EngineConnection> {
        #expect(node.gateway.engines.reserve(sid, on: node.loop))
        let (gateway, loop, head) = (node.gateway, node.loop, Self.head("transport=polling&userId=sio"))
        return try await loop.submit {
            let session = EngineConnection(
                sid: sid,
                transport: .polling,
                head: head,
                remoteAddress: nil,
                gateway: gateway,
                eventLoop: loop,
                now: .now()
            )
            gateway.engines.add(session)
            return NIOLoopBound(session, eventLoop: loop)
        }.get()
    }

    @Test func aWaitingPollIsAnsweredAfterThePostThatFillsIt() async throws {
        let node = self.node()
        let answers = Answers()
        let session = try await self.pollingSession(node, sid: "s1")
        #expect(
            try await node.loop.submit { session.value.openPacket.webSocketText }.get()?.hasPrefix(#"0{"sid":"s1","upgrades":["websocket"],"#) == true
        )
        try await node.loop.submit { session.value.poll(answers.responder(1)) }.get()
        #expect(answers.take().isEmpty)  // waiting
        try await node.loop.submit { session.value.post(Array("40".utf8), answers.responder(2)) }.get()
        var seen: [String] = []
        try await node.settle {
            seen += answers.take()
            return seen.count == 2
        }
        let id = try #require(try await self.connectionIDs(node).first)
        #expect(seen == ["2 200 ok", #"1 200 40{"sid":"\#(id.rawValue)"}"#])
        // An event over POST; its answer waits for the next GET.
        try await node.loop.submit { session.value.post(Array(#"421["joinRoom",{"roomId":"a"}]"#.utf8), answers.responder(3)) }.get()
        try await node.settle { await node.gateway.broker.members(of: RoomID("a")!, after: nil, limit: 10).items.count == 1 }
        try await node.settle()
        #expect(answers.take() == ["3 200 ok"])
        try await node.loop.submit { session.value.poll(answers.responder(4)) }.get()
        #expect(answers.take() == [#"4 200 431[{"action":"joinedRoom","roomId":"a","members":["sio"],"memberCount":1,"offset":0}]"#])
        // Two packets in one POST, and both answers in one GET.
        try await node.loop.submit { session.value.post(Array("3\u{1e}41".utf8), answers.responder(5)) }.get()
        try await self.expectEndedOnce([id], on: node)
        #expect(answers.take() == ["5 200 ok"])
        #expect(node.gateway.engines.contains("s1"))
    }

    /// A request checks its session's deadlines before it is served: one that comes after the ping timeout, before
    /// the next sweep, is refused as for a closed session (engine.io-protocol test suite, "closes the session upon
    /// ping timeout", which polls 500 ms after a 300 ms + 200 ms heartbeat).
    @Test func aPollAfterThePingTimeoutFindsTheSessionClosedBeforeTheNextSweep() async throws {
        let node = self.node {
            $0.socketIO.pingInterval = .milliseconds(20)
            $0.socketIO.pingTimeout = .milliseconds(20)
        }
        let answers = Answers()
        _ = try await self.pollingSession(node, sid: "s9")
        let opened = NIODeadline.now()  // the session opened before: its ping is due by `opened` + 20 ms
        try await self.sweep(node, at: opened + .milliseconds(20))  // the ping, queued: no GET waits
        try await Task.sleep(for: .milliseconds(80))
        let gateway = node.gateway
        _ = try await node.loop.submit { SocketIOHTTP.serve(isGet: true, sid: "s9", body: [], responder: answers.responder(1), gateway: gateway) }
            .get()
        try await node.settle { !answers.all.withLock(\.isEmpty) }
        #expect(answers.take() == [#"1 400 {"code":1,"message":"Session ID unknown"}"#])
        #expect(!node.gateway.engines.contains("s9"))
    }

    @Test func aSecondPollWhileOneWaitsClosesTheSession() async throws {
        let node = self.node()
        let answers = Answers()
        let session = try await self.pollingSession(node, sid: "s2")
        try await node.loop.submit { session.value.post(Array("40".utf8), answers.responder(1)) }.get()
        try await node.settle { node.counts == (1, 1) }
        let id = try #require(try await self.connectionIDs(node).first)
        try await node.loop.submit { session.value.poll(answers.responder(2)) }.get()
        #expect(answers.take() == ["1 200 ok", #"2 200 40{"sid":"\#(id.rawValue)"}"#])
        try await node.loop.submit { session.value.poll(answers.responder(3)) }.get()
        try await node.loop.submit { session.value.poll(answers.responder(4)) }.get()
        let overlap = answers.take()
        #expect(overlap.count == 2)
        #expect(overlap.first?.hasPrefix("4 400 ") == true)
        #expect(overlap.last == "3 200 1")
        try await self.expectEndedOnce([id], on: node)
        #expect(!node.gateway.engines.contains("s2"))
        try await node.loop.submit { session.value.poll(answers.responder(5)) }.get()
        #expect(answers.take() == [#"5 400 {"code":1,"message":"Session ID unknown"}"#])
    }

    // MARK: Connection state recovery

    /// Every text the client gets until `count` have come.
    func texts(_ count: Int, from client: TestClient, on node: TestNode) async throws -> [String] {
        var texts: [String] = []
        try await node.settle {
            texts += try await client.texts()
            return texts.count >= count
        }
        return texts
    }

    @Test func aDroppedSocketThatReconnectsWithItsPidGetsItsIdAndWhatItsRoomsMissed() async throws {
        let clock = Atomic<Int64>(1_000)
        let node = self.node(
            {
                $0.presence = false
                $0.socketIO.recoveryWindow = .seconds(60)
            },
            wallClock: { clock.load(ordering: .relaxed) }
        )
        let client = try await self.openWebSocket(node)
        _ = try await client.texts()  // the open packet
        try await client.send("40")
        let reply = try #require(try await self.texts(1, from: client, on: node).first)
        let json = try JSONValue.parse(Array(reply.dropFirst(2).utf8)).objectValue
        let (id, pid) = (try #require(json?["sid"]?.stringValue), try #require(json?["pid"]?.stringValue))
        #expect(reply == #"40{"sid":"\#(id)","pid":"\#(pid)"}"#)
        for room in ["a", "b"] { try await client.send(#"42["joinRoom",{"roomId":"\#(room)"}]"#) }
        _ = try await self.texts(2, from: client, on: node)
        let bob = try await node.connect("bob")
        for room in ["a", "b"] { try await bob.send(#"{"action":"joinRoom","roomId":"\#(room)"}"#) }
        _ = try await bob.texts()
        func send(_ room: String, _ message: String, at time: Int64) async throws {
            clock.store(time, ordering: .relaxed)
            try await bob.send(#"{"action":"sendMessage","roomId":"\#(room)","message":"\#(message)"}"#)
            try await node.settle { try await !bob.texts().isEmpty }  // its own copy: sent at `time`
        }
        func event(_ room: String, _ message: String, _ offset: Int, at time: Int64) -> String {
            #"42["message",{"action":"message","roomId":"\#(room)","message":"\#(message)","sender":"bob","timestamp":\#(time),"offset":\#(offset)},"\#(offset)@\#(room)"]"#
        }
        try await send("a", "a1", at: 2_000)
        try await send("b", "b1", at: 3_000)
        try await send("a", "a2", at: 4_000)
        #expect(
            try await self.texts(3, from: client, on: node) == [
                event("a", "a1", 1, at: 2_000), event("b", "b1", 1, at: 3_000), event("a", "a2", 2, at: 4_000),
            ]
        )

        // The transport drops; the socket's $disconnect runs, and it leaves its session for the window.
        try await client.channel.close()
        try await node.settle { self.recording(node).unregistered.withLock { $0.contains { $0.rawValue == id } } }
        try await send("a", "a3", at: 5_000)
        try await send("b", "b2", at: 6_000)

        // The client saw `1@b` last: b resumes after 1; a from b1's timestamp on (a2 was written after b1).
        let again = try await self.openWebSocket(node)
        _ = try await again.texts()
        try await again.send(#"40{"pid":"\#(pid)","offset":"1@b"}"#)
        let recovered = try await self.texts(4, from: again, on: node)
        #expect(
            recovered == [
                #"40{"sid":"\#(id)","pid":"\#(pid)"}"#, event("a", "a2", 2, at: 4_000), event("a", "a3", 3, at: 5_000),
                event("b", "b2", 2, at: 6_000),
            ]
        )
        #expect(await node.gateway.broker.connection(ConnectionID(id)!)?.rooms.map(\.rawValue) == ["a", "b"])
        // Back in its rooms live.
        try await send("b", "b3", at: 7_000)
        #expect(try await self.texts(1, from: again, on: node) == [event("b", "b3", 3, at: 7_000)])

        // A session is recovered once: the same pid again (the socket dropped without leaving it: a DISCONNECT)
        // gets a new socket.
        try await again.send("41")
        try await node.settle { !self.recording(node).unregistered.withLock { $0.filter { $0.rawValue == id } }.dropFirst().isEmpty }
        try await again.send(#"40{"pid":"\#(pid)","offset":"3@b"}"#)
        let fresh = try #require(try await self.texts(1, from: again, on: node).first)
        let freshJSON = try JSONValue.parse(Array(fresh.dropFirst(2).utf8)).objectValue
        #expect(freshJSON?["sid"]?.stringValue != id)
        #expect(freshJSON?["pid"]?.stringValue != pid)
    }

    /// The client reconnected before its old socket's node noticed the drop (a half-open TCP connection, a polling
    /// session waiting for its ping timeout): the reconnect takes the old socket over at once.
    @Test func aReconnectNamingASocketStillRunningTakesItOver() async throws {
        let node = self.node {
            $0.presence = false
            $0.socketIO.recoveryWindow = .seconds(60)
        }
        let old = try await self.openWebSocket(node)
        _ = try await old.texts()
        try await old.send("40")
        let reply = try #require(try await self.texts(1, from: old, on: node).first)
        let json = try JSONValue.parse(Array(reply.dropFirst(2).utf8)).objectValue
        let (id, pid) = (try #require(json?["sid"]?.stringValue), try #require(json?["pid"]?.stringValue))
        try await old.send(#"42["joinRoom",{"roomId":"a"}]"#)
        _ = try await self.texts(1, from: old, on: node)
        let bob = try await node.connect("bob")
        try await bob.send(#"{"action":"joinRoom","roomId":"a"}"#)
        _ = try await self.texts(1, from: bob, on: node)
        try await bob.send(#"{"action":"sendMessage","roomId":"a","message":"m1"}"#)
        #expect(try await self.texts(1, from: old, on: node).first?.hasSuffix(#","1@a"]"#) == true)

        let again = try await self.openWebSocket(node)
        _ = try await again.texts()
        try await again.send(#"40{"pid":"\#(pid)","offset":"1@a"}"#)
        #expect(try await self.texts(1, from: again, on: node) == [#"40{"sid":"\#(id)","pid":"\#(pid)"}"#])
        #expect(try await old.texts() == ["41"])  // the old socket was ended, without its client's DISCONNECT
        _ = try await bob.texts()
        try await bob.send(#"{"action":"sendMessage","roomId":"a","message":"m2"}"#)
        #expect(try await self.texts(1, from: again, on: node).first?.hasSuffix(#","2@a"]"#) == true)
        #expect(try await old.texts().isEmpty)
        #expect(self.recording(node).unregistered.withLock { $0.map(\.rawValue) } == [id])
    }

    @Test func aPidThatIsNotOneOfOursOrNamesNoSessionConnectsAFreshSocket() async throws {
        let node = self.node { $0.socketIO.recoveryWindow = .seconds(60) }
        let unknown = SocketIORecovery.newPID(for: .random())
        for pid in ["nope", String(repeating: "x", count: 165), "a b", "../../etc", "", unknown] {
            let client = try await self.openWebSocket(node)
            _ = try await client.texts()
            try await client.send(#"40{"pid":\#(JSONValue.string(pid).jsonString),"offset":"1@a"}"#)
            let reply = try #require(try await self.texts(1, from: client, on: node).first)
            let json = try JSONValue.parse(Array(reply.dropFirst(2).utf8)).objectValue
            let given = try #require(json?["pid"]?.stringValue)
            #expect(given != pid)
            #expect(SocketIORecovery.socket(named: given)?.rawValue == json?["sid"]?.stringValue)
        }
    }
}
