import NIOCore
import SwitchboardCore
import Testing

@testable import SwitchboardSocketIO

private let start = NIODeadline.uptimeNanoseconds(1_000_000_000)

private func sent(_ texts: String...) -> SocketIOSession.Action { .send(texts.map(EngineMessage.text)) }

private func joined(_ namespace: String = "/", recovery: Bool = false) -> SocketIOSession {
    var session = SocketIOSession(configuration: .init(connectTimeout: .seconds(45), connectionStateRecovery: recovery), now: start)
    _ = session.receive(.text(namespace == "/" ? "0" : "0\(namespace),"))
    _ = session.decide(namespace, .accept(sid: "s1", pid: nil))
    return session
}

@Suite struct SocketIOSessionTests {
    @Test func connectAcceptedWithSid() {
        var session = SocketIOSession(configuration: .init(), now: start)
        #expect(session.receive(.text(#"0/admin,{"token":"123"}"#)) == [.authorize(namespace: "/admin", auth: ["token": "123"], recovery: nil)])
        #expect(session.decide("/admin", .accept(sid: "oSO0OpakMV_3jnilAAAA", pid: nil)) == [sent(#"0/admin,{"sid":"oSO0OpakMV_3jnilAAAA"}"#)])
        #expect(session.sid(in: "/admin") == "oSO0OpakMV_3jnilAAAA")
        #expect(session.nextDeadline == nil)
    }

    @Test func connectRefusedAndUnknownNamespace() {
        var session = SocketIOSession(configuration: .init(), now: start)
        _ = session.receive(.text("0/admin,"))
        #expect(session.decide("/admin", .refuse(message: "Not authorized", data: nil)) == [sent(#"4/admin,{"message":"Not authorized"}"#)])
        _ = session.receive(.text("0/nope,"))
        #expect(session.decide("/nope", .unknownNamespace) == [sent(#"4/nope,{"message":"Invalid namespace"}"#)])
        _ = session.receive(.text("0/x,"))
        #expect(session.decide("/x", .refuse(message: "m", data: ["retry": false])) == [sent(#"4/x,{"message":"m","data":{"retry":false}}"#)])
        // A refused namespace may be asked for again.
        #expect(session.receive(.text("0/admin,")) == [.authorize(namespace: "/admin", auth: nil, recovery: nil)])
    }

    @Test func connectTimeoutClosesAClientThatJoinsNothing() {
        var session = SocketIOSession(configuration: .init(connectTimeout: .seconds(45)), now: start)
        #expect(session.tick(now: start + .seconds(44)) == [])
        // A pending CONNECT does not count: the reference server checks for a joined namespace.
        _ = session.receive(.text("0"))
        #expect(session.tick(now: start + .seconds(45)) == [.close(.connectTimeout)])
        var joinedSession = joined()
        #expect(joinedSession.tick(now: start + .seconds(100)) == [])
    }

    @Test func eventsAndAcksFromTheClient() {
        var session = joined("/admin")
        #expect(session.receive(.text(#"2/admin,["bar"]"#)) == [.event(namespace: "/admin", name: "bar", arguments: [], ackID: nil)])
        #expect(session.receive(.text(#"2/admin,12["foo",1]"#)) == [.event(namespace: "/admin", name: "foo", arguments: [1], ackID: 12)])
        #expect(session.ack(namespace: "/admin", ackID: 12, ["ok"]) == [sent(#"3/admin,12["ok"]"#)])
        #expect(session.receive(.text(#"51-/admin,["up",{"_placeholder":true,"num":0}]"#)) == [])
        #expect(session.receive(.binary([7])) == [.event(namespace: "/admin", name: "up", arguments: [.binary([7])], ackID: nil)])
    }

    @Test func serverEmitWithAckAndBinary() {
        var session = joined()
        let first = session.emit("hello", ["world"], expectAck: true)
        #expect(first.ackID == 0)
        #expect(first.actions == [sent(#"20["hello","world"]"#)])
        let second = session.emit("file", [.binary([1, 2])], expectAck: true)
        #expect(second.ackID == 1)
        #expect(second.actions == [.send([.text(#"51-1["file",{"_placeholder":true,"num":0}]"#), .binary([1, 2])])])
        #expect(session.receive(.text(#"31["got it"]"#)) == [.ack(namespace: "/", ackID: 1, arguments: ["got it"])])
        #expect(session.emit("x", [], namespace: "/other").actions == [])
    }

    @Test func packetsForANamespaceNotJoinedCloseTheConnection() {
        var session = joined()
        #expect(session.receive(.text(#"2/admin,["bar"]"#)) == [.disconnected(namespace: "/", reason: "forced close"), .close(.invalidState)])
        #expect(session.receive(.text(#"2["bar"]"#)) == [])

        var twice = joined()
        #expect(twice.receive(.text("0")).last == .close(.invalidState))

        var pending = SocketIOSession(configuration: .init(), now: start)
        _ = pending.receive(.text("0"))
        #expect(pending.receive(.text(#"2["early"]"#)) == [.close(.invalidState)])
    }

    @Test func malformedPacketIsAParseError() {
        var session = joined()
        #expect(session.receive(.text("2[]")) == [.disconnected(namespace: "/", reason: "parse error"), .close(.invalidData)])
        var binary = joined()
        #expect(binary.receive(.binary([1])) == [.disconnected(namespace: "/", reason: "parse error"), .close(.unexpectedBinary)])
    }

    @Test func disconnectBothWays() {
        var session = joined("/admin")
        #expect(session.receive(.text("1/admin,")) == [.disconnected(namespace: "/admin", reason: "client namespace disconnect")])
        #expect(session.sid(in: "/admin") == nil)
        var other = joined("/admin")
        #expect(other.disconnect(namespace: "/admin") == [sent("1/admin,")])
        #expect(other.disconnect(namespace: "/admin") == [])
        var closed = joined("/admin")
        #expect(closed.engineClosed(.pingTimeout) == [.disconnected(namespace: "/admin", reason: "ping timeout")])
        #expect(closed.receive(.text(#"2/admin,["x"]"#)) == [])
    }

    @Test func connectionStateRecovery() {
        var session = SocketIOSession(configuration: .init(connectionStateRecovery: true), now: start)
        // A reconnecting client: the reference client merges pid and offset into its auth object.
        #expect(
            session.receive(.text(#"0{"pid":"p1","offset":"o7","token":"t"}"#))
                == [.authorize(namespace: "/", auth: ["pid": "p1", "offset": "o7", "token": "t"], recovery: .init(pid: "p1", offset: "o7"))]
        )
        #expect(session.decide("/", .accept(sid: "s1", pid: "p1")) == [sent(#"0{"sid":"s1","pid":"p1"}"#)])
        // Each event without an ack carries its offset last; one with an ack does not.
        #expect(session.emit("msg", ["hi"], offset: "o8").actions == [sent(#"2["msg","hi","o8"]"#)])
        #expect(session.emit("msg", ["hi"], expectAck: true, offset: "o9").actions == [sent(#"20["msg","hi"]"#)])

        // pid without a string offset is not a recovery; with recovery off, nothing is read.
        var partial = SocketIOSession(configuration: .init(connectionStateRecovery: true), now: start)
        #expect(partial.receive(.text(#"0{"pid":"p1"}"#)) == [.authorize(namespace: "/", auth: ["pid": "p1"], recovery: nil)])
        var off = SocketIOSession(configuration: .init(), now: start)
        #expect(
            off.receive(.text(#"0{"pid":"p1","offset":"o"}"#)) == [.authorize(namespace: "/", auth: ["pid": "p1", "offset": "o"], recovery: nil)]
        )
    }
}
