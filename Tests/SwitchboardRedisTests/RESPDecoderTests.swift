import NIOCore
import NIOPosix
import Testing

@testable import SwitchboardRedis

/// A hostile or broken Redis must get an error, never a trap, a buffer past the bound, or quadratic work.
@Suite struct RESPDecoderTests {
    /// Feeds `wire` in pieces of `chunk` bytes and returns every value, checking the decoder never looked at a byte
    /// twice (a decoder that restarts each value on every read examines the square of its size).
    func feed(_ wire: [UInt8], chunk: Int, maximumReplyBytes: Int = 64 << 20) throws -> [RESPValue] {
        var decoder = RESPDecoder(maximumReplyBytes: maximumReplyBytes)
        var buffer = ByteBuffer()
        var values: [RESPValue] = []
        var offset = 0
        while offset < wire.count {
            let end = min(offset + chunk, wire.count)
            buffer.writeBytes(wire[offset..<end])
            offset = end
            while let value = try decoder.next(&buffer) { values.append(value) }
        }
        #expect(buffer.readableBytes == 0)
        #expect(decoder.bytesExamined <= wire.count)
        return values
    }

    func feed(_ text: String, chunk: Int = .max, maximumReplyBytes: Int = 64 << 20) throws -> [RESPValue] {
        try self.feed(Array(text.utf8), chunk: chunk, maximumReplyBytes: maximumReplyBytes)
    }

    /// The error the decoder throws on `text`, fed whole.
    func error(_ text: String, maximumReplyBytes: Int = 64 << 20) -> RESPParseError? {
        var decoder = RESPDecoder(maximumReplyBytes: maximumReplyBytes)
        var buffer = ByteBuffer(string: text)
        do {
            while try decoder.next(&buffer) != nil {}
            return nil
        } catch {
            return error
        }
    }

    @Test func hugeLengthsAndCountsAreErrorsNotTraps() {
        for bound in [64 << 20, Int.max] {
            for reply in [
                "$9223372036854775807\r\n", "%4611686018427387904\r\n", "*9223372036854775807\r\n",
                "~3074457345618258603\r\n", "%1537228672809129302\r\n",
                "$-9223372036854775808\r\n", "*99999999999999999999\r\n",
            ] {
                #expect(self.error(reply, maximumReplyBytes: bound) != nil, "\(reply) with a bound of \(bound)")
            }
        }
        // Within a bound of Int.max, a length just under it waits for its body without overflowing.
        #expect(self.error("$9223372036854775700\r\nabc", maximumReplyBytes: .max) == nil)
        #expect(self.error(":9223372036854775808\r\n")?.reason == "bad integer '9223372036854775808'")
    }

    @Test func bulkStringOverTheBoundIsRefusedFromItsHeaderAlone() throws {
        // Only the header has arrived: the decoder throws before a byte of the body is fed.
        #expect(self.error("$67108865\r\n")?.reason.contains("a bulk string of 67108865 bytes exceeds the 64 MiB reply limit") == true)
        #expect(self.error("$1023\r\n", maximumReplyBytes: 1024)?.reason.contains("1024-byte reply limit") == true)
        #expect(self.error("=2000\r\n", maximumReplyBytes: 1024) != nil)
        #expect(self.error("!2000\r\n", maximumReplyBytes: 1024) != nil)
        // Exactly the bound: header (7) + body (1015) + CR LF (2).
        let body = String(repeating: "x", count: 1015)
        #expect(try self.feed("$1015\r\n\(body)\r\n", chunk: 100, maximumReplyBytes: 1024) == [.bulkString(Array(body.utf8))])
        #expect(self.error("$1016\r\n", maximumReplyBytes: 1024) != nil)
    }

    @Test func aggregateCountOverTheBoundIsRefused() {
        // 1024 - 6 bytes of header leave room for 339 elements of at least 3 bytes.
        #expect(self.error("*339\r\n", maximumReplyBytes: 1024) == nil)
        #expect(self.error("*340\r\n", maximumReplyBytes: 1024)?.reason.contains("an aggregate of 340 elements exceeds") == true)
        #expect(self.error("~340\r\n", maximumReplyBytes: 1024) != nil)
        #expect(self.error(">340\r\n", maximumReplyBytes: 1024) != nil)
        #expect(self.error("%169\r\n", maximumReplyBytes: 1024) == nil)
        #expect(self.error("%170\r\n", maximumReplyBytes: 1024)?.reason.contains("an aggregate of 170 entries exceeds") == true)
        #expect(self.error("*22369622\r\n")?.reason.contains("64 MiB reply limit") == true)
    }

    @Test func theBoundCoversAWholeReplyAndRestartsWithTheNext() throws {
        let element = "$40\r\n" + String(repeating: "y", count: 40) + "\r\n"  // 47 bytes
        // 4 + 47 + 47 = 98 bytes: fits a bound of 100, twice in a row.
        #expect(try self.feed("*2\r\n\(element)\(element)*2\r\n\(element)\(element)", maximumReplyBytes: 100).count == 2)
        // A third element would not fit, nor would a nested one.
        let error = self.error("*3\r\n\(element)\(element)\(element)", maximumReplyBytes: 140)
        #expect(error?.reason.contains("a bulk string of 40 bytes exceeds the 140-byte reply limit (103 bytes of this reply already read)") == true)
        #expect(self.error("*2\r\n*1\r\n\(element)*1\r\n*1\r\n\(element)", maximumReplyBytes: 100) != nil)
        // A simple string or error line longer than the bound is refused before its end arrives.
        #expect(self.error("+" + String(repeating: "z", count: 200), maximumReplyBytes: 100)?.reason.contains("a line of more than") == true)
    }

    @Test func theHandlerFailsPendingCommandsAndClosesOnAReplyOverTheBound() async throws {
        let body = String(repeating: "x", count: 1000)
        let server = try await ScriptedServer.start(reply: Array("$1000\r\n\(body)\r\n$2000\r\n".utf8))
        defer { server.close(promise: nil) }
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(RESPHandler(onPush: nil, maximumReplyBytes: 1024))
                }
            }
            .connect(host: "127.0.0.1", port: server.localAddress!.port!).get()
        let first = channel.eventLoop.makePromise(of: RESPValue.self)
        let second = channel.eventLoop.makePromise(of: RESPValue.self)
        channel.write((command: ["GET", "a"] as [RedisArgument], promise: first), promise: nil)
        channel.writeAndFlush((command: ["GET", "b"] as [RedisArgument], promise: second), promise: nil)
        #expect(try await first.futureResult.get() == .bulkString(Array(body.utf8)))
        do {
            _ = try await second.futureResult.get()
            Issue.record("a reply over the bound was accepted")
        } catch let error as RedisError {
            #expect(error.code == .connection && error.message.contains("a bulk string of 2000 bytes exceeds the 1024-byte reply limit"))
        }
        try await channel.closeFuture.get()
    }

    @Test func largeRepliesGiveTheSameValueHoweverTheyAreSplit() throws {
        // Encoded as a command is: an array of bulk strings.
        var many = ByteBuffer()
        RESPEncoder.encode((0..<200_000).map { RedisArgument.string("v\($0 % 1000)") }, into: &many)
        var wide = ByteBuffer()
        RESPEncoder.encode((0..<100).map { RedisArgument.bytes([UInt8](repeating: UInt8($0), count: 64 << 10)) }, into: &wide)
        // 2.2 MB three bytes at a time and 6.5 MB in 4 KiB pieces: minutes of work each if it were quadratic.
        for (wire, chunks) in [(Array(many.readableBytesView), [3, 4096]), (Array(wide.readableBytesView), [4096, 65536])] {
            let whole = try self.feed(wire, chunk: .max)
            #expect(whole.count == 1)
            for chunk in chunks {
                #expect(try self.feed(wire, chunk: chunk) == whole)
            }
        }
    }

    @Test func aLongLineTrickledInIsSearchedOnce() throws {
        let line = "+" + String(repeating: "a", count: 100_000) + "\r\n"
        #expect(try self.feed(line, chunk: 1) == [.simpleString(String(repeating: "a", count: 100_000))])
    }

    @Test func everySplitOfAMixedRESP3ReplyGivesTheSameValue() throws {
        let text =
            ">4\r\n+message\r\n%2\r\n$3\r\nkey\r\n*3\r\n:-42\r\n,-inf\r\n#f\r\n(3492890328409238509324850943850943825024385\r\n"
            + "~2\r\n_\r\n$-1\r\n=15\r\ntxt:Some string\r\n*-1\r\n!21\r\nSYNTAX invalid syntax\r\n,1.5e3\r\n"
        let wire = Array(text.utf8)
        let whole = try self.feed(wire, chunk: .max)
        #expect(
            whole == [
                .push([
                    .simpleString("message"),
                    .map([
                        (.bulkString(Array("key".utf8)), .array([.integer(-42), .double(-.infinity), .boolean(false)])),
                        (.bulkString(Array("3492890328409238509324850943850943825024385".utf8)), .set([.null, .bulkString(nil)])),
                    ]),
                    .bulkString(Array("txt:Some string".utf8)),
                    .array(nil),
                ]),
                .error("SYNTAX invalid syntax"),
                .double(1500),
            ]
        )
        for first in 0...wire.count {
            for second in first...wire.count {
                var decoder = RESPDecoder(maximumReplyBytes: 1 << 20)
                var buffer = ByteBuffer()
                var values: [RESPValue] = []
                for piece in [wire[..<first], wire[first..<second], wire[second...]] {
                    buffer.writeBytes(piece)
                    while let value = try decoder.next(&buffer) { values.append(value) }
                }
                #expect(values == whole, "split at \(first) and \(second)")
            }
        }
    }

    @Test func nestingIsLimited() throws {
        let depth = RESPDecoder.maximumDepth
        #expect(try self.feed(String(repeating: "*1\r\n", count: depth - 1) + ":1\r\n").count == 1)
        #expect(self.error(String(repeating: "*1\r\n", count: depth) + ":1\r\n")?.reason == "nested deeper than 32")
        #expect(self.error(String(repeating: "%1\r\n", count: depth) + ":1\r\n:1\r\n") != nil)
    }

    @Test func onlyBulkStringsAndArraysMayBeNull() throws {
        #expect(try self.feed("$-1\r\n*-1\r\n") == [.bulkString(nil), .array(nil)])
        for reply in ["$-2\r\n", "*-2\r\n", "%-1\r\n", "~-1\r\n", ">-1\r\n", "=-1\r\n", "!-1\r\n", "%-2\r\n"] {
            #expect(self.error(reply)?.reason.hasPrefix("bad length") == true, "\(reply)")
        }
    }

    @Test func malformedFramingIsRefused() {
        #expect(self.error("$3\r\nabcd\r\n")?.reason == "a bulk string of 3 bytes is not followed by CR LF")
        #expect(self.error("+OK\n") != nil)
        #expect(self.error("#x\r\n") != nil)
        #expect(self.error("?") != nil)  // refused from its type byte alone
        #expect(self.error(",nope\r\n") != nil)
    }

    @Test func anEncodedCommandParsesAsAnArrayOfBulkStrings() throws {
        let command: [RedisArgument] = ["SET", "k", .bytes([0, 13, 10, 255]), .string(""), RedisArgument(-7)]
        var buffer = ByteBuffer()
        RESPEncoder.encode(command, into: &buffer)
        var decoder = RESPDecoder(maximumReplyBytes: 1024)
        #expect(
            try decoder.next(&buffer)
                == .array([
                    .bulkString(Array("SET".utf8)), .bulkString([107]), .bulkString([0, 13, 10, 255]), .bulkString([]),
                    .bulkString(Array("-7".utf8)),
                ])
        )
        #expect(buffer.readableBytes == 0)
    }
}

/// A server that answers the first bytes it receives with `reply`, whatever they are: a Redis that misbehaves on cue.
enum ScriptedServer {
    static func start(reply: [UInt8]) async throws -> any Channel {
        try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Replier(reply: reply)) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    private final class Replier: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        private var reply: [UInt8]?

        init(reply: [UInt8]) {
            self.reply = reply
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard let reply = self.reply else { return }
            self.reply = nil
            context.writeAndFlush(self.wrapOutboundOut(ByteBuffer(bytes: reply)), promise: nil)
        }
    }
}
