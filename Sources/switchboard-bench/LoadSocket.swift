import CompressNIO
import NIOCore
import NIOPosix
import Synchronization

/// The load generator's WebSocket client: one NIO channel handler per connection, no task and no actor, so a single
/// core drives tens of thousands of connections and hundreds of thousands of messages a second. It speaks just the
/// client side of RFC 6455 that a benchmark needs: the upgrade, masked text frames out, unmasked frames in (with
/// fragments), pings answered, and the close handshake. With `deflate` it offers permessage-deflate (RFC 7692) as
/// Chrome does and inflates the compressed messages it gets; its own messages go out uncompressed, which RFC 7692
/// allows, so the generator stays cheap.
final class LoadSocket: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Sent into a channel's pipeline from any thread: runs `body` on the connection's event loop.
    struct Run: Sendable {
        var body: @Sendable (Link) -> Void
    }

    private let request: String
    private let behaviour: Behaviour
    private let extensions: ExtensionStats?
    private let inflateCache: InflateCache?
    /// Set once the server accepted permessage-deflate; it inflates the compressed messages.
    private var inflater: Inflater?
    /// Whether the message being reassembled from fragments was compressed (RSV1 on its first frame).
    private var fragmentsCompressed = false
    /// Frame bytes on the wire (headers and payloads as received) of the message being reassembled.
    private var fragmentsWireBytes = 0
    /// What the last message handed to the behaviour took on the wire, and whether it came compressed.
    private(set) var lastWireBytes = 0
    private(set) var lastCompressed = false
    private let maskKey: (UInt8, UInt8, UInt8, UInt8) = (.random(in: 0...255), .random(in: 0...255), .random(in: 0...255), .random(in: 0...255))
    private var upgraded = false
    private var closing = false
    private var pending: ByteBuffer?
    private var fragments: ByteBuffer?
    /// The scenario's own slot for this connection (for example when its outstanding request left).
    var mark: UInt64 = 0
    /// A second slot for the scenario (for example which of its clients this is).
    var tag = 0

    /// - Parameter extensions: where to count what the server answered to a permessage-deflate offer; `nil` offers
    ///   no extension.
    init(url: WebSocketURL, behaviour: Behaviour, extensions: ExtensionStats? = nil, inflateCache: InflateCache? = nil) {
        self.request =
            "GET \(url.path) HTTP/1.1\r\nHost: \(url.host):\(url.port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            + (extensions == nil ? "" : "Sec-WebSocket-Extensions: \(PerMessageDeflate.offer)\r\n") + "\r\n"
        self.behaviour = behaviour
        self.extensions = extensions
        self.inflateCache = inflateCache
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(self.wrapOutboundOut(context.channel.allocator.buffer(string: self.request)), promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if self.upgraded { self.behaviour.onClose() } else { self.fail("closed before the upgrade", context: context) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !self.upgraded { self.fail("\(error)", context: context) }
        context.close(promise: nil)
    }

    /// Reports a connection that never opened, once, whichever of the refusal, the error and the close comes first.
    private func fail(_ reason: String, context: ChannelHandlerContext) {
        guard !self.closing else { return }
        self.closing = true
        self.behaviour.onFailure(reason)
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let run = event as? Run, self.upgraded { run.body(Link(socket: self, context: context)) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = self.unwrapInboundIn(data)
        if self.pending == nil { self.pending = bytes } else { self.pending!.writeBuffer(&bytes) }
        if !self.upgraded {
            guard let headEnd = end(of: "\r\n\r\n", in: self.pending!) else { return }
            guard self.pending!.readableBytesView.starts(with: "HTTP/1.1 101".utf8) else {
                self.fail("upgrade refused: \(self.pending!.getString(at: self.pending!.readerIndex, length: 12) ?? "")", context: context)
                return
            }
            let head = self.pending!.readString(length: headEnd) ?? ""
            if let refusal = self.negotiate(head: head) {
                self.fail(refusal, context: context)
                return
            }
            self.upgraded = true
            self.behaviour.onOpen(Link(socket: self, context: context))
        }
        while self.upgraded, let frame = self.nextFrame() {
            self.handle(frame, context: context)
        }
        if self.pending?.readableBytes == 0 {
            self.pending = nil
        } else if let pending = self.pending, pending.readerIndex > 65_536 {
            self.pending!.discardReadBytes()  // a frame split across reads: do not keep what was parsed already
        }
    }

    /// Reads the server's `Sec-WebSocket-Extensions` answer (RFC 7692 §7.1); returns why the connection must fail,
    /// as a browser would fail it, or `nil`.
    private func negotiate(head: String) -> String? {
        let answers = head.split(separator: "\r\n").compactMap { line -> Substring? in
            guard let colon = line.firstIndex(of: ":"), line[..<colon].lowercased() == "sec-websocket-extensions" else { return nil }
            return line[line.index(after: colon)...]
        }
        guard !answers.isEmpty else {
            self.extensions?.declined.add(1, ordering: .relaxed)
            return nil
        }
        let answer = answers.map { String($0.drop { $0 == " " }) }.joined(separator: ", ")
        guard let extensions = self.extensions else { return "extension answered without an offer: \(answer)" }
        extensions.saw(answer)
        switch PerMessageDeflate.accept(answer) {
        case .refused(let problem):
            return "bad Sec-WebSocket-Extensions answer (\(problem)): \(answer)"
        case .accepted(let resetEachMessage):
            self.inflater = Inflater(resetEachMessage: resetEachMessage, cache: self.inflateCache)
            extensions.negotiated.add(1, ordering: .relaxed)
            return nil
        }
    }

    /// The next whole frame from the buffered bytes, if one has arrived (server frames are never masked).
    private func nextFrame() -> Frame? {
        guard var buffer = self.pending, let first = buffer.readInteger(as: UInt8.self), let second = buffer.readInteger(as: UInt8.self)
        else { return nil }
        var length = Int(second & 0x7F)
        if length == 126 {
            guard let extended = buffer.readInteger(as: UInt16.self) else { return nil }
            length = Int(extended)
        } else if length == 127 {
            guard let extended = buffer.readInteger(as: UInt64.self) else { return nil }
            length = Int(extended)
        }
        let headerBytes = buffer.readerIndex - self.pending!.readerIndex
        guard let payload = buffer.readSlice(length: length) else { return nil }
        self.pending = buffer
        return Frame(opcode: first & 0x0F, fin: first & 0x80 != 0, rsv1: first & 0x40 != 0, payload: payload, wireBytes: headerBytes + length)
    }

    private struct Frame {
        var opcode: UInt8
        var fin: Bool
        var rsv1: Bool
        var payload: ByteBuffer
        /// Header and payload, as they came off the socket.
        var wireBytes: Int
    }

    private func handle(_ frame: Frame, context: ChannelHandlerContext) {
        switch frame.opcode {
        case 0x1, 0x2:
            if frame.fin {
                self.deliver(frame.payload, compressed: frame.rsv1, wireBytes: frame.wireBytes, context: context)
            } else {
                (self.fragments, self.fragmentsCompressed, self.fragmentsWireBytes) = (frame.payload, frame.rsv1, frame.wireBytes)
            }
        case 0x0:
            var payload = frame.payload
            self.fragments?.writeBuffer(&payload)
            self.fragmentsWireBytes += frame.wireBytes
            if frame.fin, let message = self.fragments {
                self.fragments = nil
                self.deliver(message, compressed: self.fragmentsCompressed, wireBytes: self.fragmentsWireBytes, context: context)
            }
        case 0x9:
            self.write(opcode: 0xA, payload: frame.payload.readableBytesView, context: context)
        case 0x8:
            if !self.closing { self.write(opcode: 0x8, payload: frame.payload.readableBytesView.prefix(2), context: context) }
            self.closing = true
            context.close(promise: nil)
        default:
            break
        }
    }

    /// Hands a whole message to the behaviour, inflated first when it came compressed.
    private func deliver(_ message: ByteBuffer, compressed: Bool, wireBytes: Int, context: ChannelHandlerContext) {
        (self.lastWireBytes, self.lastCompressed) = (wireBytes, compressed)
        guard compressed else {
            self.extensions?.uncompressedMessages.add(1, ordering: .relaxed)
            self.behaviour.onText(message, Link(socket: self, context: context))
            return
        }
        guard let inflater = self.inflater else {
            self.abort("RSV1 set without permessage-deflate negotiated", context: context)
            return
        }
        do {
            let (text, reused) = try inflater.inflate(message, allocator: context.channel.allocator)
            self.extensions?.compressedMessages.add(1, ordering: .relaxed)
            if reused { self.extensions?.reusedInflations.add(1, ordering: .relaxed) }
            self.behaviour.onText(text, Link(socket: self, context: context))
        } catch {
            self.abort("inflate: \(error)", context: context)
        }
    }

    /// A protocol error on an open connection: counted as a failure, and the connection closed.
    private func abort(_ reason: String, context: ChannelHandlerContext) {
        self.behaviour.onFailure(reason)
        self.pending = nil
        self.closing = true
        context.close(promise: nil)
    }

    func write(opcode: UInt8, payload: some Collection<UInt8>, context: ChannelHandlerContext) {
        var frame = context.channel.allocator.buffer(capacity: payload.count + 14)
        frame.writeInteger(0x80 | opcode)
        switch payload.count {
        case ..<126: frame.writeInteger(UInt8(0x80 | payload.count))
        case ...0xFFFF: frame.writeMultipleIntegers(UInt8(0x80 | 126), UInt16(payload.count))
        default: frame.writeMultipleIntegers(UInt8(0x80 | 127), UInt64(payload.count))
        }
        frame.writeMultipleIntegers(self.maskKey.0, self.maskKey.1, self.maskKey.2, self.maskKey.3)
        let start = frame.writerIndex - frame.readerIndex
        frame.writeBytes(payload)
        frame.withUnsafeMutableReadableBytes { bytes in
            let key = [self.maskKey.0, self.maskKey.1, self.maskKey.2, self.maskKey.3]
            for index in start..<bytes.count { bytes[index] ^= key[(index - start) & 3] }
        }
        context.writeAndFlush(self.wrapOutboundOut(frame), promise: nil)
    }

    /// Starts the close handshake; the server's close frame (or its end of the TCP connection) finishes it.
    func close(context: ChannelHandlerContext) {
        guard !self.closing else { return }
        self.closing = true
        self.write(opcode: 0x8, payload: [0x03, 0xE8], context: context)
    }
}

/// One connection as a scenario sees it, inside a callback on the connection's event loop.
struct Link {
    fileprivate let socket: LoadSocket
    fileprivate let context: ChannelHandlerContext

    var mark: UInt64 {
        get { self.socket.mark }
        nonmutating set { self.socket.mark = newValue }
    }

    var tag: Int {
        get { self.socket.tag }
        nonmutating set { self.socket.tag = newValue }
    }

    /// Frame bytes on the wire of the message being handled (headers and payload as received, compressed or not).
    var wireBytes: Int { self.socket.lastWireBytes }

    func send(_ text: String) { self.socket.write(opcode: 0x1, payload: text.utf8, context: self.context) }
    func close() { self.socket.close(context: self.context) }
}

/// What a scenario does with each connection; every callback runs on the connection's event loop.
struct Behaviour: Sendable {
    var onOpen: @Sendable (Link) -> Void = { _ in }
    var onText: @Sendable (ByteBuffer, Link) -> Void = { _, _ in }
    var onClose: @Sendable () -> Void = {}
    var onFailure: @Sendable (String) -> Void = { _ in }
}

/// `ws://host:port/path?query`, as much of a URL as the generator needs.
struct WebSocketURL: Sendable {
    var host: String
    var port: Int
    var path: String

    init(_ string: String) throws {
        guard string.hasPrefix("ws://") else { throw BenchError("only ws:// URLs are supported: \(string)") }
        let rest = string.dropFirst(5)
        let authority = rest.prefix { $0 != "/" }
        self.path = rest.dropFirst(authority.count).isEmpty ? "/" : String(rest.dropFirst(authority.count))
        let parts = authority.split(separator: ":")
        guard let host = parts.first, parts.count <= 2, let port = parts.count == 2 ? Int(parts[1]) : 80 else {
            throw BenchError("bad URL authority: \(string)")
        }
        (self.host, self.port) = (String(host), port)
    }

    /// The same URL with `name=value` added to its query.
    func adding(_ name: String, _ value: String) -> WebSocketURL {
        var copy = self
        copy.path += (self.path.contains("?") ? "&" : "?") + "\(name)=\(value)"
        return copy
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Opens connections on a group of event loops, each from one of `sources` local addresses (127.0.0.1, .2, …), so
/// long runs and churn are not bounded by one address's 28,000 ephemeral ports.
struct Dialer: Sendable {
    let group: MultiThreadedEventLoopGroup
    let sources: Int
    /// Where the connections count what the server answered to their permessage-deflate offer; `nil`: no offer.
    let extensions: ExtensionStats?
    /// One per event loop of `group`, by the loop's identity.
    private let inflateCaches: [ObjectIdentifier: InflateCache]

    init(group: MultiThreadedEventLoopGroup, sources: Int, extensions: ExtensionStats? = nil) {
        (self.group, self.sources, self.extensions) = (group, sources, extensions)
        self.inflateCaches = Dictionary(uniqueKeysWithValues: group.makeIterator().map { (ObjectIdentifier($0), InflateCache()) })
    }

    func dial(_ url: WebSocketURL, index: Int, behaviour: Behaviour) -> EventLoopFuture<any Channel> {
        let dial = self.bootstrap(on: self.group, host: url.host, index: index)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        LoadSocket(
                            url: url,
                            behaviour: behaviour,
                            extensions: self.extensions,
                            inflateCache: self.inflateCaches[ObjectIdentifier(channel.eventLoop)]
                        )
                    )
                }
            }
            .connect(host: url.host, port: url.port)
        dial.whenFailure { behaviour.onFailure("connect: \($0)") }  // a channel that never opened has no close
        return dial
    }

    /// A TCP client bootstrap on `group` (the dialer's, or one of its loops), with no delay, bound to source address
    /// `index % sources` when `host` is on loopback.
    func bootstrap(on group: any EventLoopGroup, host: String, index: Int) -> ClientBootstrap {
        let bootstrap = ClientBootstrap(group: group).channelOption(.tcpOption(.tcp_nodelay), value: 1)
        guard self.sources > 1, host.hasPrefix("127."), let source = try? SocketAddress(ipAddress: "127.0.0.\(1 + index % self.sources)", port: 0)
        else { return bootstrap }
        // IP_BIND_ADDRESS_NO_PORT (24): pick the port at connect time, per destination, not at bind time.
        return bootstrap.channelOption(ChannelOptions.Types.SocketOption(level: .ip, name: .init(rawValue: 24)), value: 1).bind(to: source)
    }

    /// Runs `body` on the connection's event loop, from any thread.
    static func run(on channel: any Channel, _ body: @escaping @Sendable (Link) -> Void) {
        channel.pipeline.fireUserInboundEventTriggered(LoadSocket.Run(body: body))
    }
}
