import NIOCore
import Testing

@testable import SwitchboardSocketIO

private let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
private let configuration = EngineSession.Configuration(pingInterval: .seconds(25), pingTimeout: .seconds(20), maxPayload: 64)

private func payload(_ text: String) -> EngineSession.Action { .answerPoll(Array(text.utf8)) }

private func openPolling() -> EngineSession {
    EngineSession.open(sid: "abc", transport: .polling, configuration: configuration, now: start).session
}

@Suite struct EngineSessionTests {
    @Test func handshakeOnPollingAndOnWebSocket() {
        let (polling, pollingActions) = EngineSession.open(sid: "abc", transport: .polling, configuration: configuration, now: start)
        #expect(pollingActions == [payload(#"0{"sid":"abc","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":64}"#)])
        #expect(polling.transport == .polling)
        let (webSocket, webSocketActions) = EngineSession.open(sid: "abc", transport: .webSocket, configuration: configuration, now: start)
        let handshake = EngineHandshake(sid: "abc", upgrades: [], pingIntervalMilliseconds: 25000, pingTimeoutMilliseconds: 20000, maxPayload: 64)
        #expect(webSocketActions == [.send([.open(handshake)])])
        #expect(webSocket.transport == .webSocket)
    }

    @Test func pollWaitsForPacketsAndQueuesWhileNoneWaits() {
        var session = openPolling()
        #expect(session.send(.text("a")) == [])
        #expect(session.send(.text("b")) == [])
        #expect(session.poll() == [payload("4a\u{1e}4b")])
        #expect(session.poll() == [])
        #expect(session.send(.binary([1, 2, 3])) == [payload("bAQID")])
    }

    @Test func pollAnswerIsCutToMaxPayloadAndTheRestKept() {
        var session = openPolling()
        let thirty = String(repeating: "x", count: 30)
        for _ in 0..<3 { _ = session.send(.text(thirty)) }
        // 31 + 1 + 31 = 63 bytes fit in 64; the third packet waits for the next GET.
        #expect(session.poll() == [payload("4\(thirty)\u{1e}4\(thirty)")])
        #expect(session.poll() == [payload("4\(thirty)")])
        // One packet over the limit still goes out, alone.
        let big = String(repeating: "y", count: 100)
        _ = session.send(.text(big))
        _ = session.send(.text("z"))
        #expect(session.poll() == [payload("4\(big)")])
        #expect(session.poll() == [payload("4z")])
    }

    @Test func secondConcurrentGetClosesTheSession() {
        var session = openPolling()
        #expect(session.poll() == [])
        let actions = session.poll()
        #expect(
            actions == [
                .rejectRequest(.requestOverlap), payload("1"), .close(.transportError("overlap from client: a second GET while one is waiting")),
            ]
        )
        #expect(session.isClosed)
        #expect(session.poll() == [.rejectRequest(.unknownSession)])
        #expect(session.send(.text("late")) == [])
    }

    @Test func postIsDecodedAndDelivered() {
        var session = openPolling()
        #expect(session.post(Array("4hello\u{1e}bAQID".utf8), now: start) == [.deliver(.text("hello")), .deliver(.binary([1, 2, 3]))])
    }

    @Test func postOverMaxPayloadOrMalformedClosesTheSession() {
        var session = openPolling()
        _ = session.poll()
        let body = Array(("4" + String(repeating: "x", count: 64)).utf8)
        let actions = session.post(body, now: start)
        #expect(actions.first == .rejectRequest(.payloadTooLarge))
        #expect(actions.dropFirst().first == payload("1"))
        #expect(actions.last == .close(.parseError(.payloadTooLarge)))

        var other = openPolling()
        #expect(other.post(Array("9".utf8), now: start) == [.rejectRequest(.unknownPacketType), .close(.parseError(.unknownPacketType))])
    }

    /// The waiting GET gets a noop, not a close packet, as from the reference server (engine.io-protocol test suite,
    /// "forcefully closes the session").
    @Test func clientClosePacketEndsTheSessionAndAnswersTheWaitingGetWithANoop() {
        var session = openPolling()
        _ = session.poll()
        #expect(session.post(Array("4bye\u{1e}1\u{1e}4ignored".utf8), now: start) == [.deliver(.text("bye")), payload("6"), .close(.clientClose)])
        #expect(EngineSession.CloseReason.clientClose.description == "transport close")
    }

    @Test func pollAbortedIsATransportError() {
        var session = openPolling()
        #expect(session.pollAborted() == [])
        _ = session.poll()
        #expect(session.pollAborted() == [.close(.transportError("poll connection closed prematurely"))])
    }

    @Test func upgradeProbeFlushesTheWaitingGetThenSwitches() {
        var session = openPolling()
        #expect(session.poll() == [])
        #expect(session.webSocketOffered(now: start) == [])
        #expect(session.receive(webSocketText: "2probe", now: start) == [.send([.pong("probe")]), payload("6")])
        // Sent during the upgrade: held for the WebSocket.
        #expect(session.send(.text("during")) == [])
        #expect(session.transport == .polling)
        #expect(session.receive(webSocketText: "5", now: start) == [.send([.message(.text("during"))])])
        #expect(session.transport == .webSocket)
        #expect(session.send(.text("after")) == [.send([.message(.text("after"))])])
        #expect(session.receive(webSocketText: "4hi", now: start) == [.deliver(.text("hi"))])
        #expect(session.receive(webSocketBinary: [9], now: start) == [.deliver(.binary([9]))])
        #expect(session.poll() == [.rejectRequest(.wrongTransport)])
        #expect(session.post(Array("4x".utf8), now: start) == [.rejectRequest(.wrongTransport)])
        #expect(session.webSocketOffered(now: start) == [.rejectRequest(.wrongTransport)])
        #expect(session.webSocketClosed() == [.close(.transportClose)])
    }

    @Test func getDuringUpgradeIsAnsweredAtOnce() {
        var session = openPolling()
        _ = session.webSocketOffered(now: start)
        #expect(session.receive(webSocketText: "2probe", now: start) == [.send([.pong("probe")])])
        #expect(session.poll() == [payload("6")])
        _ = session.send(.text("q"))
        #expect(session.poll() == [payload("4q")])
    }

    @Test func anythingElseDuringTheProbeAbandonsIt() {
        var session = openPolling()
        _ = session.poll()
        _ = session.webSocketOffered(now: start)
        #expect(session.receive(webSocketText: "4hello", now: start) == [.closeProbe])
        #expect(session.transport == .polling)
        // The GET that waited before the probe still waits.
        #expect(session.send(.text("a")) == [payload("4a")])

        _ = session.webSocketOffered(now: start)
        #expect(session.receive(webSocketText: "2probe", now: start) == [.send([.pong("probe")])])
        #expect(session.receive(webSocketText: "x", now: start) == [.closeProbe])
        #expect(session.transport == .polling)
        #expect(!session.isClosed)
    }

    @Test func upgradeTimesOut() {
        var session = openPolling()
        _ = session.webSocketOffered(now: start)
        #expect(session.nextDeadline == start + .seconds(10))
        #expect(session.tick(now: start + .seconds(9)) == [])
        #expect(session.tick(now: start + .seconds(10)) == [.closeProbe])
        #expect(session.nextDeadline == start + .seconds(25))
    }

    @Test func heartbeatPingPongAndTimeout() {
        var (session, _) = EngineSession.open(sid: "abc", transport: .webSocket, configuration: configuration, now: start)
        #expect(session.nextDeadline == start + .seconds(25))
        #expect(session.tick(now: start + .seconds(24)) == [])
        #expect(session.tick(now: start + .seconds(25)) == [.send([.ping("")])])
        #expect(session.nextDeadline == start + .seconds(45))
        // The pong resets: the next ping is due pingInterval after it.
        #expect(session.receive(webSocketText: "3", now: start + .seconds(30)) == [])
        #expect(session.tick(now: start + .seconds(50)) == [])
        #expect(session.tick(now: start + .seconds(55)) == [.send([.ping("")])])
        #expect(session.tick(now: start + .seconds(74)) == [])
        #expect(session.tick(now: start + .seconds(75)) == [.close(.pingTimeout)])
        #expect(session.isClosed)
        #expect(session.tick(now: start + .seconds(200)) == [])
    }

    /// The ping timeout counts from when the ping was due, not from the sweep that sent it (up to a sweep late);
    /// a sweep later than half the timeout still leaves the client half of it.
    @Test func aLateSweepDoesNotLengthenThePingTimeout() {
        var (session, _) = EngineSession.open(sid: "abc", transport: .webSocket, configuration: configuration, now: start)
        #expect(session.tick(now: start + .seconds(26)) == [.send([.ping("")])])
        #expect(session.nextDeadline == start + .seconds(45))
        #expect(session.tick(now: start + .seconds(45)) == [.close(.pingTimeout)])
        var (late, _) = EngineSession.open(sid: "abc", transport: .webSocket, configuration: configuration, now: start)
        #expect(late.tick(now: start + .seconds(40)) == [.send([.ping("")])])
        #expect(late.nextDeadline == start + .seconds(50))
    }

    @Test func pingOnPollingGoesToTheWaitingGet() {
        var session = openPolling()
        _ = session.poll()
        #expect(session.tick(now: start + .seconds(25)) == [payload("2")])
        #expect(session.post(Array("3".utf8), now: start + .seconds(26)) == [])
        #expect(session.tick(now: start + .seconds(46)) == [])
    }

    @Test func webSocketRulesMaxPayloadAndHeartbeatDirection() {
        var (session, _) = EngineSession.open(sid: "abc", transport: .webSocket, configuration: configuration, now: start)
        #expect(session.receive(webSocketBinary: [UInt8](repeating: 0, count: 65), now: start) == [.close(.parseError(.payloadTooLarge))])
        (session, _) = EngineSession.open(sid: "abc", transport: .webSocket, configuration: configuration, now: start)
        #expect(session.receive(webSocketText: "4" + String(repeating: "x", count: 64), now: start) == [.close(.parseError(.payloadTooLarge))])
        (session, _) = EngineSession.open(sid: "abc", transport: .webSocket, configuration: configuration, now: start)
        #expect(
            session.receive(webSocketText: "2", now: start) == [
                .close(.transportError("invalid heartbeat direction: in Engine.IO v4 only the server pings"))
            ]
        )
        (session, _) = EngineSession.open(sid: "abc", transport: .webSocket, configuration: configuration, now: start)
        #expect(session.receive(webSocketText: "", now: start) == [.close(.parseError(.emptyPacket))])
    }

    @Test func serverCloseAnswersTheWaitingGet() {
        var session = openPolling()
        _ = session.poll()
        #expect(session.close() == [payload("1"), .close(.serverClose)])
        #expect(session.close() == [])
    }
}
