import NIOCore
import NIOEmbedded
import NIOWebSocket
import SwitchboardCore
import SwitchboardWebSocket
import Testing

@Suite struct WebSocketSessionTests {
    let mask = WebSocketMaskingKey([1, 2, 3, 4])!

    func frame(_ opcode: WebSocketOpcode, _ bytes: [UInt8], fin: Bool = true, masked: Bool = true, rsv1: Bool = false) -> WebSocketFrame {
        var data = ByteBuffer(bytes: bytes)
        if masked { data.webSocketMask(self.mask) }
        return WebSocketFrame(fin: fin, rsv1: rsv1, opcode: opcode, maskKey: masked ? self.mask : nil, data: data)
    }

    func session(max: Int = 16, rejectBinary: Bool = false) -> WebSocketSession {
        WebSocketSession(maxMessageBytes: max, rejectBinary: rejectBinary)
    }

    @Test func deliversWholeAndFragmentedMessages() {
        var session = self.session()
        #expect(session.receive(self.frame(.text, Array("hi".utf8))) == .deliver(ByteBuffer(string: "hi"), isText: true))
        #expect(session.receive(self.frame(.binary, [1, 2], fin: false)) == .none)
        #expect(session.receive(self.frame(.ping, [9])) == .pong(ByteBuffer(bytes: [9])))
        #expect(session.receive(self.frame(.continuation, [3])) == .deliver(ByteBuffer(bytes: [1, 2, 3]), isText: false))
    }

    @Test func enforcesTheMessageLimitAcrossFragments() {
        var session = self.session(max: 4)
        #expect(session.receive(self.frame(.text, Array("abc".utf8), fin: false)) == .none)
        #expect(session.receive(self.frame(.continuation, Array("de".utf8))) == .sendClose(code: 1009, reason: "message exceeds 4 bytes"))
        #expect(session.closeStatus?.code == 1009)
        // Data after our close is discarded; the peer's close completes the handshake.
        #expect(session.receive(self.frame(.text, Array("x".utf8))) == .none)
        #expect(session.receive(self.frame(.connectionClose, [0x03, 0xE8])) == .disconnect)
    }

    @Test func invalidUTF8ClosesWith1007() {
        var session = self.session()
        #expect(session.receive(self.frame(.text, [0xC3, 0x28])) == .sendClose(code: 1007, reason: "text message is not valid UTF-8"))
    }

    @Test func protocolViolationsCloseWith1002() {
        for bad in [
            self.frame(.text, [1], masked: false), self.frame(.text, [1], rsv1: true), self.frame(.continuation, [1]),
            self.frame(WebSocketOpcode(encodedWebSocketOpcode: 3)!, []), self.frame(.connectionClose, [3]),
            self.frame(.connectionClose, [0x03, 0xED]),  // 1005 may not be sent
        ] {
            var session = self.session()
            guard case .sendClose(1002, _) = session.receive(bad) else {
                Issue.record("expected 1002 for \(bad)")
                continue
            }
        }
        var interleaved = self.session()
        _ = interleaved.receive(self.frame(.text, [0x61], fin: false))
        guard case .sendClose(1002, _) = interleaved.receive(self.frame(.text, [0x61])) else {
            Issue.record("a new message inside a fragmented one must fail")
            return
        }
    }

    @Test func binaryCanBeRejected() {
        var session = self.session(rejectBinary: true)
        #expect(session.receive(self.frame(.binary, [1])) == .sendClose(code: 1003, reason: "binary frames are not accepted"))
    }

    @Test func answersThePeersCloseAndRecordsItsStatus() {
        var session = self.session()
        #expect(session.receive(self.frame(.connectionClose, [0x0F, 0xA0] + Array("bye".utf8))) == .sendCloseAndDisconnect(code: 4000, reason: ""))
        #expect(session.closeStatus! == (4000, "bye"))
        var empty = self.session()
        #expect(empty.receive(self.frame(.connectionClose, [])) == .sendCloseAndDisconnect(code: nil, reason: ""))
        #expect(empty.closeStatus!.code == 1005)
        var badReason = self.session()
        #expect(
            badReason.receive(self.frame(.connectionClose, [0x03, 0xE8, 0xFF])) == .sendClose(code: 1007, reason: "close reason is not valid UTF-8")
        )
    }

    @Test func lostConnectionsRecord1006OnlyWithoutAnEarlierStatus() {
        var lost = self.session()
        lost.abandon(reason: "connection lost")
        #expect(lost.closeStatus!.code == 1006)
        var closed = self.session()
        _ = closed.close(code: 1001, reason: "server draining")
        closed.abandon(reason: "connection lost")
        #expect(closed.closeStatus! == (1001, "server draining"))
    }

    @Test(arguments: [
        ([0x61, 0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xF0, 0x9F, 0x98, 0x80] as [UInt8], true),
        ([0xC0, 0x80], false), ([0xED, 0xA0, 0x80], false), ([0xF4, 0x90, 0x80, 0x80], false), ([0xE2, 0x82], false), ([0x80], false),
    ])
    func validatesUTF8(_ bytes: [UInt8], _ valid: Bool) {
        #expect(UTF8Validation.isValid(bytes) == valid)
        // The word-at-a-time path must reach the same verdict wherever the first non-ASCII byte falls.
        for padding in [0, 7, 8, 9, 16] {
            let padded = Array(repeating: UInt8(ascii: "a"), count: padding) + bytes + Array(repeating: UInt8(ascii: "b"), count: 9)
            #expect(padded.withUnsafeBytes(UTF8Validation.isValid) == valid)
        }
    }
}

@Suite struct LivenessTests {
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000)

    @Test func pingsOnScheduleAndTimesOutWithoutPongs() {
        var liveness = Liveness(pingInterval: .seconds(25), pongTimeout: .seconds(60), idleTimeout: nil, now: self.start)
        #expect(liveness.tick(now: self.start + .seconds(10)) == .none)
        #expect(liveness.tick(now: self.start + .seconds(25)) == .sendPing)
        #expect(liveness.tick(now: self.start + .seconds(30)) == .none)
        #expect(liveness.tick(now: self.start + .seconds(50)) == .sendPing)
        liveness.heard(at: self.start + .seconds(51))
        #expect(liveness.tick(now: self.start + .seconds(100)) == .sendPing)
        #expect(liveness.tick(now: self.start + .seconds(111)) == .timedOut)
    }

    @Test func idleTimeoutCountsMessagesNotPongs() {
        var liveness = Liveness(pingInterval: .seconds(25), pongTimeout: .seconds(60), idleTimeout: .seconds(40), now: self.start)
        liveness.heard(at: self.start + .seconds(30))
        #expect(liveness.tick(now: self.start + .seconds(35)) == .sendPing)
        #expect(liveness.tick(now: self.start + .seconds(40)) == .idle)
        liveness.messageReceived(at: self.start + .seconds(41))
        #expect(liveness.tick(now: self.start + .seconds(42)) == .none)
    }
}

@Suite struct WireFrameTests {
    /// Frames as NIO's own decoder reads them back.
    func decode(_ wire: ByteBuffer) throws -> [WebSocketFrame] {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: 1 << 20)))
        try channel.writeInbound(wire)
        var frames: [WebSocketFrame] = []
        while let frame = try channel.readInbound(as: WebSocketFrame.self) { frames.append(frame) }
        return frames
    }

    @Test(arguments: [0, 125, 126, 65_535, 65_536])
    func everyLengthEncodingRoundTrips(length: Int) throws {
        let payload = ByteBuffer(repeating: 0x61, count: length)
        let frames = try self.decode(WireFrame.encode(WireFrame.text, payload, allocator: ByteBufferAllocator()))
        #expect(frames.count == 1)
        #expect(frames.first?.fin == true && frames.first?.opcode == .text && frames.first?.maskKey == nil)
        #expect(frames.first?.data == payload)
    }

    @Test func largerThanMaxFrameIsFragmented() throws {
        let payload = ByteBuffer(string: String(repeating: "0123456789", count: 2) + "abcde")
        let frames = try self.decode(WireFrame.encode(WireFrame.binary, payload, maxFrame: 10, allocator: ByteBufferAllocator()))
        #expect(frames.map(\.opcode) == [.binary, .continuation, .continuation])
        #expect(frames.map(\.fin) == [false, false, true])
        #expect(frames.map(\.data.readableBytes) == [10, 10, 5])
    }
}
