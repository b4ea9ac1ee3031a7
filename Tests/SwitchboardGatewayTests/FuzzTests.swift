import NIOCore
import NIOWebSocket
import SwitchboardCore
import SwitchboardWebSocket
import Testing

@testable import SwitchboardGateway

/// A seeded, bounded fuzz run over the path a client's bytes take: frames into the session state machine, completed
/// messages through the JSON parser and route selection, and into every built-in app. Nothing may trap, and every
/// outcome must be one the protocol allows.
@Suite struct FuzzTests {
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            self.state &+= 0x9E37_79B9_7F4A_7C15
            var z = self.state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static let fragments: [[UInt8]] = [
        Array(#"{"action":"joinRoom","roomId":"#.utf8), Array(#""lobby"}"#.utf8), Array(#"{"action":"sendMessage","roomId":"lobby","message":"#.utf8),
        Array("[[[[[[[[".utf8), Array("]]]]".utf8), Array(#"\ud800"#.utf8), [0xFF, 0xC3, 0x28, 0xE2, 0x82], Array("null".utf8), Array("1e999".utf8),
        Array(#"{"action":"ping"}"#.utf8), Array(#""}"#.utf8), [0], Array(#"{"a":{"b":{"c":"#.utf8),
        // Raw deflate of `{"action":"ping"}`, and a stored block of "hi".
        Array(
            MessageDeflater(windowBits: 15, level: 6).compress(
                ByteBuffer(string: String(repeating: #"{"action":"ping"}"#, count: 4)),
                allocator: .init()
            )!.readableBytesView
        ),
        [0x01, 0x02, 0x00, 0xFD, 0xFF, 0x68, 0x69],
    ]

    func randomPayload(_ rng: inout SplitMix) -> [UInt8] {
        var bytes: [UInt8] = []
        for _ in 0..<Int.random(in: 0...6, using: &rng) {
            if Bool.random(using: &rng) {
                bytes += Self.fragments.randomElement(using: &rng)!
            } else {
                bytes += (0..<Int.random(in: 0...20, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            }
        }
        return bytes
    }

    /// Odd seeds negotiate permessage-deflate: RSV1 frames are then inflated (mostly failing, as random bytes do;
    /// some fragments are real deflate data) and the inflated message checked like any other.
    @Test(arguments: [1, 2, 3, 4])
    func framesRouteAndAppsNeverTrap(seed: UInt64) throws {
        var rng = SplitMix(state: seed)
        let deflate = seed % 2 == 1
        let inflater = try MessageInflater()
        func newSession() -> WebSocketSession { WebSocketSession(maxMessageBytes: 256, rejectBinary: false, perMessageDeflate: deflate) }
        let mask = WebSocketMaskingKey([1, 2, 3, 4])!
        let opcodes: [WebSocketOpcode] = [.text, .binary, .continuation, .ping, .pong, .connectionClose, WebSocketOpcode(encodedWebSocketOpcode: 3)!]
        var session = newSession()
        var rooms: Set<RoomID> = []
        for _ in 0..<20_000 {
            var data = ByteBuffer(bytes: self.randomPayload(&rng))
            data.webSocketMask(mask)
            let frame = WebSocketFrame(
                fin: Int.random(in: 0..<4, using: &rng) != 0,
                rsv1: Int.random(in: 0..<50, using: &rng) == 0,
                opcode: opcodes.randomElement(using: &rng)!,
                maskKey: mask,
                data: data
            )
            var action = session.receive(frame)
            if case .inflate(let compressed, let isText) = action {
                #expect(deflate)
                action = session.inflated(inflater.inflate(compressed, limit: 256, allocator: ByteBufferAllocator()), isText: isText)
            }
            switch action {
            case .inflate:
                Issue.record("asked to inflate an inflated message")
            case .deliver(let buffer, let isText):
                #expect(buffer.readableBytes <= 256)
                if isText { #expect(UTF8Validation.isValid(buffer.readableBytesView)) }
                let body = isText ? buffer.withUnsafeReadableBytes { try? JSONValue.parse($0) } : nil
                let selected = RouteSelectionExpression.default.routeKey(for: body)
                let request = AppRequest(selectedKey: selected, body: body, isBinary: !isText)
                for app in BuiltinApp.allCases {
                    for effect in BuiltinApps.handle(app, request: request, userId: "fuzz", rooms: rooms, now: 0) {
                        if case .join(let room, _) = effect { rooms.insert(room) }
                        if case .leave(let room) = effect {
                            let removed = rooms.remove(room)
                            #expect(removed != nil)
                        }
                    }
                }
            case .sendClose(let code, _), .sendCloseAndDisconnect(code: .some(let code), _):
                #expect(CloseCode.isValidOnWire(code))
                session = newSession()
            case .disconnect, .sendCloseAndDisconnect:
                session = newSession()
            case .pong(let payload):
                #expect(payload.readableBytes == frame.length)
            case .none:
                break
            }
        }
    }
}
