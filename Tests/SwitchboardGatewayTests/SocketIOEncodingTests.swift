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
