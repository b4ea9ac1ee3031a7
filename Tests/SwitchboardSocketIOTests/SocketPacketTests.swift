import SwitchboardCore
import Testing

@testable import SwitchboardSocketIO

private func decode(_ messages: [EngineMessage], maxAttachments: Int = 10) throws(SocketIOError) -> [SocketPacket] {
    var decoder = SocketPacketDecoder(maxAttachments: maxAttachments)
    var packets: [SocketPacket] = []
    for message in messages {
        if let packet = try decoder.receive(message) { packets.append(packet) }
    }
    return packets
}

private func decodeOne(_ text: String) throws(SocketIOError) -> SocketPacket? { try decode([.text(text)]).first }

/// A WebSocket frame as the protocol document writes it: the Engine.IO `4` then the Socket.IO packet.
private func decodeFrame(_ frame: String) throws -> SocketPacket? {
    guard case .message(let message) = try EnginePacket(webSocketText: frame) else { return nil }
    return try decode([message]).first
}

@Suite struct SocketPacketTests {
    @Test func packetsFromTheProtocolDocument() throws {
        #expect(try decodeOne("0") == SocketPacket(.connect))
        #expect(try decodeOne(#"0/admin,{"token":"123"}"#) == SocketPacket(.connect, namespace: "/admin", data: .object([.init("token", "123")])))
        #expect(try decodeOne("1/admin,") == SocketPacket(.disconnect, namespace: "/admin"))
        #expect(try decodeOne(#"2["foo"]"#) == .event("foo", []))
        #expect(try decodeOne(#"2/admin,["bar"]"#) == .event("bar", [], namespace: "/admin"))
        #expect(try decodeOne(#"212["foo"]"#) == .event("foo", [], ackID: 12))
        #expect(try decodeOne(#"3/admin,13["bar"]"#) == SocketPacket(.ack, namespace: "/admin", ackID: 13, data: ["bar"]))
        #expect(
            try decodeFrame(#"44/admin,{"message":"Not authorized"}"#)
                == SocketPacket(.connectError, namespace: "/admin", data: .object([.init("message", "Not authorized")]))
        )
        #expect(try decodeOne(#"4"oops""#) == SocketPacket(.connectError, data: "oops"))
    }

    @Test func encodingMatchesTheDocument() {
        #expect(
            SocketPacket(.connect, namespace: "/admin", data: .object([.init("sid", "oSO0OpakMV_3jnilAAAA")])).encode() == [
                .text(#"0/admin,{"sid":"oSO0OpakMV_3jnilAAAA"}"#)
            ]
        )
        #expect(SocketPacket(.disconnect, namespace: "/admin").encode() == [.text("1/admin,")])
        #expect(SocketPacket.event("hello", [1], ackID: 12).encode() == [.text(#"212["hello",1]"#)])
        #expect(SocketPacket(.ack, namespace: "/admin", ackID: 13, data: ["bar"]).encode() == [.text(#"3/admin,13["bar"]"#)])
        #expect(
            SocketPacket.event("hello", [.binary([1, 2, 3])]).encode()
                == [.text(#"51-["hello",{"_placeholder":true,"num":0}]"#), .binary([1, 2, 3])]
        )
        #expect(
            SocketPacket(.ack, namespace: "/admin", ackID: 456, data: [.binary([3])]).encode()
                == [.text(#"61-/admin,456[{"_placeholder":true,"num":0}]"#), .binary([3])]
        )
    }

    @Test func roundTrips() throws {
        let packets: [SocketPacket] = [
            .event("hello", [.binary([1]), .object([.init("x", .binary([2, 3])), .init("y", nil)]), true], namespace: "/chat", ackID: 7),
            SocketPacket(.ack, ackID: 0, data: [.binary([]), "done"]),
            .event("plain", ["a", 1, [nil]]),
            SocketPacket(.connect, namespace: "/a", data: .object([.init("pid", "p"), .init("offset", "o")])),
        ]
        for packet in packets {
            #expect(try decode(packet.encode()) == [packet])
        }
    }

    @Test func binaryEventFromTheDocumentIsReassembled() throws {
        // The document's frame `451-…` is the Engine.IO `4`, then the Socket.IO `51-…`.
        guard case .message(let text) = try EnginePacket(webSocketText: #"451-["hello",{"_placeholder":true,"num":0}]"#) else {
            Issue.record("not a message")
            return
        }
        var decoder = SocketPacketDecoder(maxAttachments: 10)
        #expect(try decoder.receive(text) == nil)
        #expect(try decoder.receive(.binary([1, 2, 3])) == .event("hello", [.binary([1, 2, 3])]))
        // Two attachments, used out of order.
        let two = try decode([.text(#"52-["e",{"_placeholder":true,"num":1},{"_placeholder":true,"num":0}]"#), .binary([0]), .binary([1])])
        #expect(two == [.event("e", [.binary([1]), .binary([0])])])
        // A placeholder in a plain EVENT is just an object.
        #expect(try decodeOne(#"2["e",{"_placeholder":true,"num":0}]"#)?.arguments == [.object([.init("_placeholder", true), .init("num", 0)])])
    }

    @Test func binaryErrors() {
        #expect(throws: SocketIOError.invalidPlaceholder) { try decode([.text(#"51-["e",{"_placeholder":true,"num":1}]"#), .binary([1])]) }
        #expect(throws: SocketIOError.invalidPlaceholder) { try decode([.text(#"51-["e",{"_placeholder":true,"num":-1}]"#), .binary([1])]) }
        #expect(throws: SocketIOError.invalidPlaceholder) { try decode([.text(#"51-["e",{"_placeholder":true,"num":"0"}]"#), .binary([1])]) }
        #expect(throws: SocketIOError.invalidPlaceholder) { try decode([.text(#"50-["e",{"_placeholder":true,"num":0}]"#)]) }
        #expect(throws: SocketIOError.invalidPlaceholder) {
            try decode([.text(#"51-["e",{"_placeholder":true,"num":99999999999999999999}]"#), .binary([1])])
        }
        #expect(throws: SocketIOError.tooManyAttachments) { try decode([.text(#"53-["e"]"#)], maxAttachments: 2) }
        #expect(throws: SocketIOError.invalidAttachments) { try decode([.text(#"5["e"]"#)]) }
        #expect(throws: SocketIOError.invalidAttachments) { try decode([.text(#"51["e"]"#)]) }
        #expect(throws: SocketIOError.invalidAttachments) { try decode([.text(#"51234567890-["e"]"#)]) }
        #expect(throws: SocketIOError.unexpectedBinary) { try decode([.binary([1])]) }
        #expect(throws: SocketIOError.unexpectedBinary) { try decode([.text(#"2["e"]"#), .binary([1])]) }
        #expect(throws: SocketIOError.unexpectedText) { try decode([.text(#"52-["e"]"#), .binary([1]), .text(#"2["e"]"#)]) }
    }

    @Test func malformedPacketsAreRefused() throws {
        #expect(throws: SocketIOError.emptyPacket) { try decodeOne("") }
        #expect(throws: SocketIOError.unknownPacketType) { try decodeOne("7") }
        #expect(throws: SocketIOError.unknownPacketType) { try decodeOne("x") }
        #expect(throws: SocketIOError.invalidJSON) { try decodeOne(#"2["e""#) }
        #expect(throws: SocketIOError.invalidJSON) { try decodeOne("2/admin,1x") }
        #expect(throws: SocketIOError.invalidData) { try decodeOne("2[]") }
        #expect(throws: SocketIOError.invalidData) { try decodeOne("2[1]") }
        #expect(throws: SocketIOError.invalidData) { try decodeOne(#"2{"a":1}"#) }
        #expect(throws: SocketIOError.invalidData) { try decodeOne("2") }
        #expect(throws: SocketIOError.invalidData) { try decodeOne(#"2["disconnect"]"#) }
        #expect(throws: SocketIOError.invalidData) { try decodeOne(#"0"token""#) }
        #expect(throws: SocketIOError.invalidData) { try decodeOne(#"1{}"#) }
        #expect(throws: SocketIOError.invalidData) { try decodeOne("4") }
        #expect(throws: SocketIOError.invalidData) { try decodeOne(#"31{}"#) }
        #expect(throws: SocketIOError.invalidAckID) { try decodeOne("3[]") }
        #expect(throws: SocketIOError.invalidAckID) { try decodeOne("01{}") }
        #expect(throws: SocketIOError.invalidAckID) { try decodeOne(#"212345678901234567["e"]"#) }
        #expect(throws: SocketIOError.invalidAckID) { try decodeOne(#"29007199254740992["e"]"#) }
        #expect(try decodeOne(#"29007199254740991["e"]"#)?.ackID == SocketPacket.maximumAckID)
    }
}
