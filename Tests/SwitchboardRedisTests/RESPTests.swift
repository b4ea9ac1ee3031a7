import NIOCore
import Testing

@testable import SwitchboardRedis

@Suite struct RESPTests {
    func parse(_ text: String) throws -> RESPValue? {
        var buffer = ByteBuffer(string: text)
        var decoder = RESPDecoder(maximumReplyBytes: 1 << 20)
        return try decoder.next(&buffer)
    }

    @Test func parsesRESP2() throws {
        #expect(try self.parse("+OK\r\n") == .simpleString("OK"))
        #expect(try self.parse("-ERR no\r\n") == .error("ERR no"))
        #expect(try self.parse(":42\r\n") == .integer(42))
        #expect(try self.parse("$5\r\nhello\r\n") == .bulkString(Array("hello".utf8)))
        #expect(try self.parse("$-1\r\n") == .bulkString(nil))
        #expect(try self.parse("*2\r\n$1\r\na\r\n:1\r\n") == .array([.bulkString([97]), .integer(1)]))
        #expect(try self.parse("$4\r\na\r\nb\r\n")?.bytes == Array("a\r\nb".utf8))
    }

    @Test func parsesRESP3() throws {
        #expect(try self.parse("_\r\n") == .null)
        #expect(try self.parse("#t\r\n") == .boolean(true))
        #expect(try self.parse(",1.5\r\n") == .double(1.5))
        #expect(try self.parse("%1\r\n+k\r\n:1\r\n") == .map([(.simpleString("k"), .integer(1))]))
        #expect(try self.parse(">3\r\n+message\r\n+ch\r\n$1\r\nx\r\n") == .push([.simpleString("message"), .simpleString("ch"), .bulkString([120])]))
    }

    @Test func consumesWholeElementsAndResumes() throws {
        var decoder = RESPDecoder(maximumReplyBytes: 1 << 20)
        var buffer = ByteBuffer(string: "*2\r\n$1\r\na\r\n")
        #expect(try decoder.next(&buffer) == nil)
        #expect(buffer.readableBytes == 0)
        buffer.writeString(":7\r\n")
        #expect(try decoder.next(&buffer) == .array([.bulkString([97]), .integer(7)]))
        #expect(buffer.readableBytes == 0)
    }

    @Test func rejectsGarbage() {
        #expect(throws: RESPParseError.self) { try self.parse("?x\r\n") }
        #expect(throws: RESPParseError.self) { try self.parse("$x\r\n") }
        #expect(throws: RESPParseError.self) { try self.parse(String(repeating: "*1\r\n", count: 40) + ":1\r\n") }
    }

    @Test func encodesCommandsAsBulkArrays() {
        var buffer = ByteBuffer()
        RESPEncoder.encode(["SET", "k", .bytes([0, 255])], into: &buffer)
        #expect(Array(buffer.readableBytesView) == Array("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n".utf8) + [0, 255] + Array("\r\n".utf8))
    }

    @Test func readsURLs() throws {
        let plain = try RedisConfiguration(url: "redis://localhost")
        #expect((plain.host, plain.port, plain.database, plain.tls, plain.password) == ("localhost", 6379, 0, false, nil))
        let full = try RedisConfiguration(url: "rediss://app:s3cret@cache.example.com:6380/2")
        #expect(
            (full.host, full.port, full.database, full.tls, full.username, full.password) == ("cache.example.com", 6380, 2, true, "app", "s3cret")
        )
        let passwordOnly = try RedisConfiguration(url: "redis://:pw@h:1")
        #expect(passwordOnly.username == nil && passwordOnly.password == "pw")
        #expect(throws: RedisError.self) { try RedisConfiguration(url: "http://x") }
        #expect(throws: RedisError.self) { try RedisConfiguration(url: "redis://h:99999") }
    }
}
