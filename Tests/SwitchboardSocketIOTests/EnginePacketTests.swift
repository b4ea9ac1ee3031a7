import SwitchboardCore
import Testing

@testable import SwitchboardSocketIO

@Suite struct EnginePacketTests {
    @Test func textPacketsFromTheProtocolDocument() throws {
        #expect(try EnginePacket(webSocketText: "2probe") == .ping("probe"))
        #expect(try EnginePacket(webSocketText: "3probe") == .pong("probe"))
        #expect(try EnginePacket(webSocketText: "4hello") == .message(.text("hello")))
        #expect(try EnginePacket(webSocketText: "4") == .message(.text("")))
        #expect(try EnginePacket(webSocketText: "1") == .close)
        #expect(try EnginePacket(webSocketText: "5") == .upgrade)
        #expect(try EnginePacket(webSocketText: "6") == .noop)
        #expect(EnginePacket.ping("").webSocketText == "2")
        #expect(EnginePacket.message(.text("€€€")).webSocketText == "4€€€")
        #expect(EnginePacket.message(.binary([1, 2, 3])).webSocketText == nil)
    }

    @Test func openPacketCarriesTheHandshake() throws {
        let handshake = EngineHandshake(
            sid: "lv_VI97HAXpY6yYWAAAC",
            upgrades: ["websocket"],
            pingIntervalMilliseconds: 25000,
            pingTimeoutMilliseconds: 20000,
            maxPayload: 1_000_000
        )
        let text = #"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
        #expect(EnginePacket.open(handshake).webSocketText == text)
        #expect(try EnginePacket(webSocketText: text) == .open(handshake))
        #expect(throws: EngineIOError.invalidHandshake) { try EnginePacket(webSocketText: #"0{"sid":1}"#) }
        #expect(throws: EngineIOError.invalidHandshake) { try EnginePacket(webSocketText: "0{") }
    }

    @Test func payloadsFromTheEngineIOParserChangelog() throws {
        // engine.io-parser 4.0.0: "4hello\x1e4€€€" and "4hello\x1ebAQID".
        let strings: [EnginePacket] = [.message(.text("hello")), .message(.text("€€€"))]
        #expect(EnginePacket.encodePayload(strings) == Array("4hello\u{1e}4€€€".utf8))
        let mixed: [EnginePacket] = [.message(.text("hello")), .message(.binary([1, 2, 3]))]
        #expect(EnginePacket.encodePayload(mixed) == Array("4hello\u{1e}bAQID".utf8))
        #expect(try EnginePacket.decodePayload(Array("4hello\u{1e}bAQID".utf8), maxPayload: 100) == mixed)
        #expect(try EnginePacket.decodePayload(Array("4hello\u{1e}4€€€".utf8), maxPayload: 100) == strings)
    }

    @Test func base64RoundTripsEveryLength() throws {
        for length in 0..<10 {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 * 77 + 250) }
            let payload = EnginePacket.encodePayload([.message(.binary(bytes))])
            #expect(payload.count == EnginePacket.message(.binary(bytes)).pollingCount)
            #expect(try EnginePacket.decodePayload(payload, maxPayload: 100) == [.message(.binary(bytes))])
        }
        // Unpadded is accepted too.
        #expect(try EnginePacket.decodePayload(Array("bAQ".utf8), maxPayload: 100) == [.message(.binary([1]))])
    }

    @Test func malformedPayloadsAreRefused() throws {
        #expect(throws: EngineIOError.emptyPacket) { try EnginePacket.decodePayload([], maxPayload: 100) }
        #expect(throws: EngineIOError.emptyPacket) { try EnginePacket.decodePayload(Array("4a\u{1e}".utf8), maxPayload: 100) }
        #expect(throws: EngineIOError.emptyPacket) { try EnginePacket(webSocketText: "") }
        #expect(throws: EngineIOError.unknownPacketType) { try EnginePacket(webSocketText: "7") }
        #expect(throws: EngineIOError.unknownPacketType) { try EnginePacket.decodePayload(Array("x".utf8), maxPayload: 100) }
        #expect(throws: EngineIOError.invalidBase64) { try EnginePacket.decodePayload(Array("bA".utf8), maxPayload: 100) }
        #expect(throws: EngineIOError.invalidBase64) { try EnginePacket.decodePayload(Array("bAQ*D".utf8), maxPayload: 100) }
        #expect(throws: EngineIOError.invalidBase64) { try EnginePacket.decodePayload(Array("bA=QD".utf8), maxPayload: 100) }
        #expect(throws: EngineIOError.invalidText) { try EnginePacket.decodePayload([0x34, 0xFF], maxPayload: 100) }
        #expect(throws: EngineIOError.payloadTooLarge) { try EnginePacket.decodePayload(Array("4hello".utf8), maxPayload: 5) }
        #expect(try EnginePacket.decodePayload(Array("4hello".utf8), maxPayload: 6) == [.message(.text("hello"))])
    }

    @Test func errorsSayWhatToFix() throws {
        let error = #expect(throws: EngineIOError.self) { try EnginePacket.decodePayload(Array("4hello".utf8), maxPayload: 5) }
        #expect(error?.message == "payload of 6 bytes exceeds maxPayload (5 bytes)")
        #expect(error?.httpStatus == 413)
        #expect(EngineIOError.requestOverlap.httpStatus == 400)
    }
}
