import NIOCore
import NIOPosix

/// The load generator's WebSocket client: one NIO channel handler per connection, no task and no actor, so a single
/// core drives tens of thousands of connections and hundreds of thousands of messages a second. It speaks just the
/// client side of RFC 6455 that a benchmark needs: the upgrade, masked text frames out, unmasked frames in (with
/// fragments), pings answered, and the close handshake.
final class LoadSocket: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Sent into a channel's pipeline from any thread: runs `body` on the connection's event loop.
    struct Run: Sendable {
        var body: @Sendable (Link) -> Void
    }

    private let request: String
    private let behaviour: Behaviour
    private let maskKey: (UInt8, UInt8, UInt8, UInt8) = (.random(in: 0...255), .random(in: 0...255), .random(in: 0...255), .random(in: 0...255))
    private var upgraded = false
    private var closing = false
    private var pending: ByteBuffer?
    private var fragments: ByteBuffer?
    /// The scenario's own slot for this connection (for example when its outstanding request left).
    var mark: UInt64 = 0

    init(url: WebSocketURL, behaviour: Behaviour) {
        self.request =
            "GET \(url.path) HTTP/1.1\r\nHost: \(url.host):\(url.port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        self.behaviour = behaviour
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
            self.pending!.moveReaderIndex(forwardBy: headEnd)
            self.upgraded = true
            self.behaviour.onOpen(Link(socket: self, context: context))
        }
        while self.upgraded, let (opcode, fin, payload) = self.nextFrame() {
            self.handle(opcode: opcode, fin: fin, payload: payload, context: context)
        }
        if self.pending?.readableBytes == 0 {
            self.pending = nil
        } else if let pending = self.pending, pending.readerIndex > 65_536 {
            self.pending!.discardReadBytes()  // a frame split across reads: do not keep what was parsed already
        }
    }

    /// The next whole frame from the buffered bytes, if one has arrived (server frames are never masked).
    private func nextFrame() -> (opcode: UInt8, fin: Bool, payload: ByteBuffer)? {
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
        guard let payload = buffer.readSlice(length: length) else { return nil }
        self.pending = buffer
        return (first & 0x0F, first & 0x80 != 0, payload)
    }

    private func handle(opcode: UInt8, fin: Bool, payload: ByteBuffer, context: ChannelHandlerContext) {
        switch opcode {
        case 0x1, 0x2:
            if fin { self.behaviour.onText(payload, Link(socket: self, context: context)) } else { self.fragments = payload }
        case 0x0:
            var payload = payload
            self.fragments?.writeBuffer(&payload)
            if fin, let message = self.fragments {
                self.fragments = nil
                self.behaviour.onText(message, Link(socket: self, context: context))
            }
        case 0x9:
            self.write(opcode: 0xA, payload: payload.readableBytesView, context: context)
        case 0x8:
            if !self.closing { self.write(opcode: 0x8, payload: payload.readableBytesView.prefix(2), context: context) }
            self.closing = true
            context.close(promise: nil)
        default:
            break
        }
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

    func dial(_ url: WebSocketURL, index: Int, behaviour: Behaviour) -> EventLoopFuture<any Channel> {
        var bootstrap = ClientBootstrap(group: self.group)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(LoadSocket(url: url, behaviour: behaviour))
                }
            }
        if self.sources > 1, url.host.hasPrefix("127."), let source = try? SocketAddress(ipAddress: "127.0.0.\(1 + index % self.sources)", port: 0) {
            // IP_BIND_ADDRESS_NO_PORT (24): pick the port at connect time, per destination, not at bind time.
            bootstrap = bootstrap.channelOption(ChannelOptions.Types.SocketOption(level: .ip, name: .init(rawValue: 24)), value: 1).bind(to: source)
        }
        let dial = bootstrap.connect(host: url.host, port: url.port)
        dial.whenFailure { behaviour.onFailure("connect: \($0)") }  // a channel that never opened has no close
        return dial
    }

    /// Runs `body` on the connection's event loop, from any thread.
    static func run(on channel: any Channel, _ body: @escaping @Sendable (Link) -> Void) {
        channel.pipeline.fireUserInboundEventTriggered(LoadSocket.Run(body: body))
    }
}
