import NIOCore
import SwitchboardCore
import SwitchboardSocketIO
import Testing

@testable import SwitchboardGateway

@Suite struct SocketIOEncodingTests {
    private func polling(_ namespace: String = "/chat") -> SocketIOEncoding {
        SocketIOEncoding(namespace: namespace, transport: .polling, pushEvent: "message", maxFrameBytes: 1 << 20)
    }

    private func text(_ buffer: ByteBuffer) -> String { String(buffer: buffer) }

    @Test func aFrameWithAnActionIsTheEventOfThatName() {
        let frame = #"{"action":"joinedRoom","roomId":"a","offset":12345678901234567890}"#
        let encoded = self.polling().encode(.text, ByteBuffer(string: frame), allocator: ByteBufferAllocator())
        // Spliced as sent: the big number keeps its digits.
        #expect(self.text(encoded) == #"42/chat,["joinedRoom",{"action":"joinedRoom","roomId":"a","offset":12345678901234567890}]"#)
    }

    @Test func otherJSONTextAndBinaryAreThePushEvent() {
        let encoding = self.polling("/")
        let allocator = ByteBufferAllocator()
        #expect(self.text(encoding.encode(.text, ByteBuffer(string: #"{"a":1}"#), allocator: allocator)) == #"42["message",{"a":1}]"#)
        #expect(self.text(encoding.encode(.text, ByteBuffer(string: "not json"), allocator: allocator)) == #"42["message","not json"]"#)
        let binary = self.text(encoding.encode(.binary, ByteBuffer(bytes: [1, 2]), allocator: allocator))
        #expect(binary == "451-[\"message\",{\"_placeholder\":true,\"num\":0}]\u{1e}bAQI=")
    }

    @Test func withRecoveryOnlyRoomMessagesCarryTheirOffsetAsTheLastArgument() {
        let encoding = SocketIOEncoding(namespace: "/", transport: .polling, pushEvent: "message", maxFrameBytes: 1 << 20, offsets: true)
        let allocator = ByteBufferAllocator()
        func encode(_ frame: String) -> String { self.text(encoding.encode(.text, ByteBuffer(string: frame), allocator: allocator)) }
        let message = #"{"action":"message","roomId":"lobby","message":"hi","sender":"bob","timestamp":5,"offset":42}"#
        #expect(encode(message) == #"42["message",\#(message),"42@lobby"]"#)
        // Anything else, and a room message with an ack (the reference server offsets only events without one), as before.
        #expect(encode(#"{"action":"joinedRoom","roomId":"a","offset":3}"#) == #"42["joinedRoom",{"action":"joinedRoom","roomId":"a","offset":3}]"#)
        #expect(encode(#"{"action":"message","roomId":"a","offset":"3"}"#) == #"42["message",{"action":"message","roomId":"a","offset":"3"}]"#)
        #expect(self.text(encoding.encodeAck(1, .text, ByteBuffer(string: message), allocator: allocator)) == #"431[\#(message)]"#)
    }

    @Test func aRecoveryOffsetParsesOnlyAsItWasMade() {
        #expect(SocketIORecovery.parseOffset("42@lobby").map { "\($0.offset)@\($0.room)" } == "42@lobby")
        for bad in ["", "@a", "x@a", "-1@a", "99999999999999999999@a", "1@", "1", "hello"] { #expect(SocketIORecovery.parseOffset(bad) == nil) }
        let sid = ConnectionID.random()
        #expect(SocketIORecovery.socket(named: SocketIORecovery.newPID(for: sid)) == sid)
        for bad in [
            "", "a b", "a/b", ".\(sid)", "abc.\(sid)", String(repeating: "a", count: 20) + ".a b", String(repeating: "é", count: 10) + ".\(sid)",
        ] {
            #expect(SocketIORecovery.socket(named: bad) == nil)
        }
    }

    @Test func aStashedSessionReadsBackAndAnythingElseIsRefused() {
        let session = SocketIORecovery.Session(sid: .random(), userId: "alice", namespace: "/chat", rooms: [RoomID("a")!, RoomID("b")!], heardAt: 9)
        #expect(SocketIORecovery.Session(decoding: session.encoded) == session)
        let anonymous = SocketIORecovery.Session(sid: session.sid, userId: session.sid.rawValue, namespace: "/", rooms: [], heardAt: 1)
        #expect(SocketIORecovery.Session(decoding: anonymous.encoded) == anonymous)
        for bad in [
            "", "{}", #"{"sid":"a b","user":"alice","ns":"/","rooms":[],"heard":1}"#,
            #"{"sid":"\#(session.sid.rawValue)","user":"","ns":"/","rooms":[],"heard":1}"#,
        ] {
            #expect(SocketIORecovery.Session(decoding: Array(bad.utf8)) == nil)
        }
    }

    @Test func answersToAnEventWithAnAckIDAreItsAck() {
        let encoding = self.polling()
        let allocator = ByteBufferAllocator()
        #expect(
            self.text(encoding.encodeAck(7, .text, ByteBuffer(string: #"{"action":"pong"}"#), allocator: allocator))
                == #"43/chat,7[{"action":"pong"}]"#
        )
        #expect(self.text(encoding.encodeEmptyAck(8, allocator: allocator)) == "43/chat,8[]")
    }

    @Test func onAWebSocketEachMessageIsOneFrame() {
        let encoding = SocketIOEncoding(namespace: "/", transport: .webSocket, pushEvent: "message", maxFrameBytes: 1 << 20)
        var encoded = encoding.encode(.text, ByteBuffer(string: #"{"action":"pong"}"#), allocator: ByteBufferAllocator())
        #expect(encoded.readInteger(as: UInt8.self) == 0x81)
        let length = Int(encoded.readInteger(as: UInt8.self)!)
        #expect(encoded.readString(length: length) == #"42["pong",{"action":"pong"}]"#)
        #expect(encoded.readableBytes == 0)
    }
}
