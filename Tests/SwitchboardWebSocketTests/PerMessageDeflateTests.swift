import NIOCore
import NIOWebSocket
import SwitchboardCore
import SwitchboardWebSocket
import Testing

@Suite struct PerMessageDeflateTests {
    static let both = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"

    // MARK: Negotiation (RFC 7692 §7.1)

    @Test(arguments: [
        // Chrome, Firefox and Safari.
        ("permessage-deflate; client_max_window_bits", both, 15),
        // Python websockets' default offer.
        ("permessage-deflate; server_max_window_bits=12; client_max_window_bits=12", both + "; server_max_window_bits=12", 12),
        // Autobahn's, and an offer that already asks for what the server answers.
        ("permessage-deflate; client_no_context_takeover; client_max_window_bits", both, 15),
        ("permessage-deflate; server_no_context_takeover; client_no_context_takeover", both, 15),
        ("permessage-deflate; server_max_window_bits=9; server_no_context_takeover", both + "; server_max_window_bits=9", 9),
        ("permessage-deflate;server_max_window_bits=\"10\"", both + "; server_max_window_bits=10", 10),
        ("PerMessage-Deflate", both, 15),
        ("permessage-deflate; server_max_window_bits=8", both + "; server_max_window_bits=8", 8),
    ])
    func acceptsWhatClientsOffer(offer: String, response: String, bits: Int) {
        #expect(PerMessageDeflate.negotiate([offer]) == .init(serverMaxWindowBits: bits, response: response))
    }

    @Test(arguments: [
        "permessage-deflate; server_max_window_bits",  // needs a value
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=010",
        "permessage-deflate; server_max_window_bits=1e1",
        "permessage-deflate; client_max_window_bits=99999999999999999999999",
        "permessage-deflate; server_max_window_bits=\"10",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; mystery",
        "x-webkit-deflate-frame",
        "",
    ])
    func declinesInvalidOffers(offer: String) {
        #expect(PerMessageDeflate.negotiate([offer]) == nil)
    }

    @Test func triesOffersInOrderAcrossHeaderLines() {
        let agreement = PerMessageDeflate.negotiate([
            "x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=4",
            "permessage-deflate; server_max_window_bits=11, permessage-deflate",
        ])
        #expect(agreement?.serverMaxWindowBits == 11)
    }

    // MARK: Deflate and inflate

    let allocator = ByteBufferAllocator()
    let chat = ByteBuffer(string: String(repeating: #"{"action":"message","roomId":"lobby","message":"hello there"}"#, count: 20))

    @Test(arguments: 9...15)
    func roundTripsWithEveryWindow(bits: Int) throws {
        let compressed = try #require(MessageDeflater(windowBits: bits, level: 6).compress(self.chat, allocator: self.allocator))
        #expect(compressed.readableBytes < self.chat.readableBytes / 5)
        // The sync flush's tail is not sent (§7.2.1).
        #expect(Array(compressed.readableBytesView.suffix(4)) != [0, 0, 0xFF, 0xFF])
        #expect(try MessageInflater().inflate(compressed, limit: 1 << 20, allocator: self.allocator) == .success(self.chat))
    }

    @Test func compressingTheSameMessageTwiceGivesTheSameBytes() {
        // What lets a fan-out deflate once: no context is carried from one message to the next.
        let deflater = MessageDeflater(windowBits: 15, level: 6)
        let first = deflater.compress(self.chat, allocator: self.allocator)
        _ = deflater.compress(ByteBuffer(string: "something else entirely, long enough to matter"), allocator: self.allocator)
        #expect(first != nil && deflater.compress(self.chat, allocator: self.allocator) == first)
    }

    @Test func emptyMessagesAreLeftAlone() {
        #expect(MessageDeflater(windowBits: 15, level: 6).compress(ByteBuffer(), allocator: self.allocator) == nil)
    }

    @Test func incompressibleMessagesAreLeftAlone() {
        var rng = SystemRandomNumberGenerator()
        let noise = ByteBuffer(bytes: (0..<4096).map { _ in UInt8.random(in: 0...255, using: &rng) })
        #expect(MessageDeflater(windowBits: 15, level: 6).compress(noise, allocator: self.allocator) == nil)
    }

    @Test func aZipBombStopsAtTheLimit() throws {
        // 64 MiB of zeros deflate to about 64 KiB; inflating stops one byte past the limit.
        let zeros = ByteBuffer(repeating: 0, count: 64 << 20)
        let bomb = try #require(MessageDeflater(windowBits: 15, level: 9).compress(zeros, allocator: self.allocator))
        #expect(bomb.readableBytes < 128 << 10)
        let inflater = try MessageInflater()
        #expect(inflater.inflate(bomb, limit: 1 << 20, allocator: self.allocator) == .failure(.tooBig))
        // The same inflater goes on with the next message.
        let small = try #require(
            MessageDeflater(windowBits: 15, level: 9).compress(ByteBuffer(repeating: 0, count: 1 << 20), allocator: self.allocator)
        )
        #expect(inflater.inflate(small, limit: 1 << 20, allocator: self.allocator) == .success(ByteBuffer(repeating: 0, count: 1 << 20)))
        #expect(inflater.inflate(small, limit: (1 << 20) - 1, allocator: self.allocator) == .failure(.tooBig))
    }

    @Test func invalidDeflateDataIsCorrupt() throws {
        let inflater = try MessageInflater()
        // Block type 3 is reserved.
        #expect(inflater.inflate(ByteBuffer(bytes: [0xFF, 0xFF, 0xFF]), limit: 1024, allocator: self.allocator) == .failure(.corrupt))
        // A stored block whose length and its complement disagree.
        #expect(inflater.inflate(ByteBuffer(bytes: [0x00, 0x05, 0x00, 0x00, 0x00]), limit: 1024, allocator: self.allocator) == .failure(.corrupt))
        #expect(inflater.inflate(ByteBuffer(bytes: [0x00]), limit: 1024, allocator: self.allocator) == .success(ByteBuffer()))
    }

    @Test func anEmptyMessageRoundTrips() throws {
        // Deflate of nothing (one empty fixed block), as browsers send an empty compressed message.
        #expect(try MessageInflater().inflate(ByteBuffer(bytes: [0x02, 0x00]), limit: 16, allocator: self.allocator) == .success(ByteBuffer()))
    }

    // MARK: The session with permessage-deflate

    let mask = WebSocketMaskingKey([1, 2, 3, 4])!

    func frame(_ opcode: WebSocketOpcode, _ bytes: [UInt8], fin: Bool = true, rsv1: Bool = false) -> WebSocketFrame {
        var data = ByteBuffer(bytes: bytes)
        data.webSocketMask(self.mask)
        return WebSocketFrame(fin: fin, rsv1: rsv1, opcode: opcode, maskKey: self.mask, data: data)
    }

    @Test func rsv1MarksACompressedMessageWhoseFramesAreJoined() {
        var session = WebSocketSession(maxMessageBytes: 64, rejectBinary: false, perMessageDeflate: true)
        #expect(session.receive(self.frame(.text, [1, 2], fin: false, rsv1: true)) == .none)
        #expect(session.receive(self.frame(.ping, [])) == .pong(ByteBuffer()))
        #expect(session.receive(self.frame(.continuation, [3])) == .inflate(ByteBuffer(bytes: [1, 2, 3]), isText: true))
        #expect(session.inflated(.success(ByteBuffer(string: "hi")), isText: true) == .deliver(ByteBuffer(string: "hi"), isText: true))
        // Uncompressed messages still pass as they are.
        #expect(session.receive(self.frame(.binary, [7])) == .deliver(ByteBuffer(bytes: [7]), isText: false))
    }

    @Test func theInflatedMessageIsCheckedLikeAnyOther() {
        var session = WebSocketSession(maxMessageBytes: 4, rejectBinary: true, perMessageDeflate: true)
        #expect(
            session.inflated(.success(ByteBuffer(bytes: [0xC3, 0x28])), isText: true)
                == .sendClose(code: 1007, reason: "text message is not valid UTF-8")
        )
        session = WebSocketSession(maxMessageBytes: 4, rejectBinary: true, perMessageDeflate: true)
        #expect(session.inflated(.success(ByteBuffer(bytes: [1])), isText: false) == .sendClose(code: 1003, reason: "binary frames are not accepted"))
        session = WebSocketSession(maxMessageBytes: 4, rejectBinary: true, perMessageDeflate: true)
        #expect(session.inflated(.failure(.tooBig), isText: true) == .sendClose(code: 1009, reason: "message exceeds 4 bytes"))
        session = WebSocketSession(maxMessageBytes: 4, rejectBinary: true, perMessageDeflate: true)
        #expect(
            session.inflated(.failure(.corrupt), isText: true) == .sendClose(code: 1007, reason: "compressed message is not valid deflate data")
        )
    }

    @Test func compressedBytesAreBoundedBeforeTheyAreInflated() {
        var session = WebSocketSession(maxMessageBytes: 1024, rejectBinary: false, perMessageDeflate: true)
        // Up to the limit plus deflate's worst-case growth is held; past it the message is refused as it arrives.
        #expect(session.receive(self.frame(.binary, Array(repeating: 0, count: 1024 + 65), fin: false, rsv1: true)) == .none)
        #expect(session.receive(self.frame(.continuation, [0])) == .sendClose(code: 1009, reason: "message exceeds 1024 bytes"))
    }

    @Test(arguments: [
        (WebSocketOpcode.ping, true), (.pong, true), (.connectionClose, true), (.continuation, false),
    ])
    func rsv1OnlyOnTheFirstFrameOfADataMessage(opcode: WebSocketOpcode, fin: Bool) {
        var session = WebSocketSession(maxMessageBytes: 64, rejectBinary: false, perMessageDeflate: true)
        if opcode == .continuation { _ = session.receive(self.frame(.text, [1], fin: false, rsv1: true)) }
        #expect(
            session.receive(self.frame(opcode, [], fin: fin, rsv1: true))
                == .sendClose(code: 1002, reason: "RSV1 set on a control or continuation frame")
        )
    }

    @Test func rsv1WithoutTheExtensionIsAProtocolError() {
        var session = WebSocketSession(maxMessageBytes: 64, rejectBinary: false)
        #expect(
            session.receive(self.frame(.text, [1], rsv1: true)) == .sendClose(code: 1002, reason: "reserved bits set without a negotiated extension")
        )
    }

    @Test func compressedFramesSetRSV1OnTheFirstFragmentOnly() {
        let wire = WireFrame.encode(.text, ByteBuffer(bytes: [1, 2, 3]), maxFrame: 2, compressed: true, allocator: self.allocator)
        #expect(Array(wire.readableBytesView) == [0x41, 2, 1, 2, 0x80, 1, 3])
    }
}
