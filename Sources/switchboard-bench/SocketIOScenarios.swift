import ArgumentParser
import NIOCore
import NIOHTTP1
import NIOPosix
import SwitchboardCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

struct SocketIOFanout: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "socketio-fanout",
        abstract: """
            room-fanout for Socket.IO clients (Engine.IO v4, Socket.IO v5) at --url's Socket.IO path \
            (ws://HOST:PORT/socket.io/): N members join one room with `joinRoom` over the WebSocket transport or \
            long-polling, and one sender on the WebSocket transport emits `sendMessage` at R messages/s carrying its send \
            time; latency of the members' `message` events, loss, the server's and the generator's CPU.
            """
    )

    enum Transport: String, ExpressibleByArgument { case websocket, polling }

    @OptionGroup var target: Target
    @OptionGroup var options: FanoutOptions
    @Option(help: "The members' transport: websocket or polling (the sender's is always websocket).") var transport = Transport.websocket

    func run() async throws {
        guard !self.target.deflate else { throw ValidationError("socketio-fanout offers no permessage-deflate") }
        let (dialer, members, rate, options) = (self.target.dialer(), self.options.members, self.options.rate, self.options)
        guard let base = try self.target.urls().first else { throw ValidationError("socketio-fanout needs a --url") }
        let room = "bench-\(UInt32.random(in: 0...UInt32.max))"
        let join = #"42["joinRoom",{"roomId":"\#(room)"}]"#
        let joined = Tally()
        let delivered = Tally()
        let lastDelivery = Atomic<UInt64>(0)
        let onPacket: @Sendable (ByteBuffer) -> Void = { packet in
            if starts(packet, #"42["message""#), let sentAt = integer(after: #""t":"#, in: packet) {
                delivered.record(since: sentAt)
                delivered.count.add(1, ordering: .relaxed)
                lastDelivery.store(nowMicros(), ordering: .relaxed)
            } else if starts(packet, #"42["joinedRoom""#) {
                joined.count.add(1, ordering: .relaxed)
            } else if starts(packet, "44") || starts(packet, #"42["error""#) {
                delivered.fail(String(buffer: packet))
            }
        }
        let stats = PollingStats()
        var pollers: [PollingClient] = []
        switch self.transport {
        case .websocket:
            let url = base.adding("EIO", "4").adding("transport", "websocket")
            _ = try await open(members, rate: options.connectRate, urls: [url], dialer: dialer) { _ in
                joined.behaviour(onText: socketIOText(join: join) { packet, _ in onPacket(packet) })
            }
        case .polling:
            let url = base.adding("EIO", "4").adding("transport", "polling")
            let started = ContinuousClock.now
            for index in 0..<members {
                let client = PollingClient(
                    url: url.adding("userId", "u\(index)"),
                    index: index,
                    dialer: dialer,
                    stats: stats,
                    join: join,
                    onPacket: onPacket,
                    onOpen: { joined.opened.add(1, ordering: .relaxed) },
                    onFailure: { joined.fail($0) }
                )
                client.eventLoop.execute { client.start() }
                pollers.append(client)
                if index % 50 == 49 {
                    let due = started + .milliseconds(Int64(index + 1) * 1000 / Int64(options.connectRate))
                    if ContinuousClock.now < due { try await Task.sleep(until: due) }
                }
            }
        }
        try await waitUntil(seconds: 60) { joined.count.load(ordering: .relaxed) + joined.failed.load(ordering: .relaxed) >= members }
        let senderJoined = Tally()
        let senders = try await open(
            1,
            rate: 1,
            urls: [base.adding("EIO", "4").adding("transport", "websocket")],
            dialer: dialer,
            userPrefix: "sender"
        ) { _ in
            senderJoined.behaviour(
                onText: socketIOText(join: join) { packet, _ in
                    if starts(packet, #"42["joinedRoom""#) { senderJoined.count.add(1, ordering: .relaxed) }
                }
            )
        }
        guard try await waitUntil(seconds: 30, { senderJoined.count.load(ordering: .relaxed) == 1 }), let sender = senders.first else {
            throw BenchError("the sender could not join: \(senderJoined.failure ?? "no joinedRoom")")
        }
        let total = Int(Double(rate) * options.seconds)
        let start = NIODeadline.now() + .milliseconds(100)
        let chat = options.payloadBytes > 0 ? ChatPayload(bytes: options.payloadBytes) : nil
        for index in 0..<total {
            sender.eventLoop.scheduleTask(deadline: start + .nanoseconds(Int64(index) * 1_000_000_000 / Int64(rate))) {
                Dialer.run(on: sender) { link in
                    let now = nowMicros()
                    let frame = chat?.frame(room: room, sentAt: now, sequence: index) ?? #"{"roomId":"\#(room)","message":{"t":\#(now)}}"#
                    link.send(#"42["sendMessage",\#(frame)]"#)
                }
            }
        }
        let expected = total * joined.count.load(ordering: .relaxed)
        let (startMicros, cpuBefore, generatorBefore, cpuFrom) = (
            start.uptimeNanoseconds / 1000, cpuSeconds(self.target.pid), cpuSeconds(getpid()), nowMicros()
        )
        let (requestsBefore, connectsBefore) = (stats.requests.load(ordering: .relaxed), stats.connects.load(ordering: .relaxed))
        try await Task.sleep(for: .milliseconds(Int64(options.seconds * 1000) + 100))
        try await waitUntil(seconds: 10) { delivered.count.load(ordering: .relaxed) >= expected }
        let got = delivered.count.load(ordering: .relaxed)
        let window = Double(nowMicros() - cpuFrom) / 1e6
        // Over the time the deliveries took, which is longer than the sending when the server falls behind.
        let seconds = max(options.seconds, Double(lastDelivery.load(ordering: .relaxed) &- startMicros) / 1e6)
        let cpuUsed = cpuSeconds(self.target.pid).flatMap { after in cpuBefore.map { after - $0 } }
        // The generator's own share of its core over the same time: near 100 % it, not the server, may set the latency.
        let generator = cpuSeconds(getpid()).flatMap { after in generatorBefore.map { (after - $0) / window } }
        let requests = Double(stats.requests.load(ordering: .relaxed) - requestsBefore) / window
        let connects = Double(stats.connects.load(ordering: .relaxed) - connectsBefore) / window
        for client in pollers { client.eventLoop.execute { client.stop() } }
        report(
            [
                "scenario": "socketio-fanout", "server": .string(self.target.server), "transport": .string(self.transport.rawValue),
                "members": number(members), "joined": number(joined.count.load(ordering: .relaxed)), "rate": number(rate),
                "payload_bytes": number(options.payloadBytes),
                "delivered_per_second": number(Double(got) / seconds),
                "loss_percent": number(Double(expected - got) * 100 / Double(max(expected, 1))),
                "server_cpu_percent": cpuUsed.map { number($0 * 100 / window) } ?? .null,  // from the first send to the last delivery awaited
                "server_cpu_us_per_delivery": cpuUsed.map { number($0 * 1e6 / Double(max(got, 1))) } ?? .null,
                "generator_cpu_percent": generator.map { number($0 * 100) } ?? .null,
                // Polling only: HTTP requests (GETs and POSTs) and TCP connections opened per second, same window.
                "polling_requests_per_second": self.transport == .polling ? number(requests) : .null,
                "polling_connects_per_second": self.transport == .polling ? number(connects) : .null,
                "polling_retries": self.transport == .polling ? number(stats.retries.load(ordering: .relaxed)) : .null,
            ],
            joined.failures(),
            [
                "delivery_failures": number(delivered.failed.load(ordering: .relaxed)),
                "first_delivery_failure": delivered.failure.map(JSONValue.string) ?? .null,
            ],
            delivered.percentiles()
        )
    }
}

/// Whether `buffer`'s readable bytes start with `prefix`.
func starts(_ buffer: ByteBuffer, _ prefix: StaticString) -> Bool {
    buffer.readableBytes >= prefix.utf8CodeUnitCount
        && buffer.withUnsafeReadableBytes { memcmp($0.baseAddress!, prefix.utf8Start, prefix.utf8CodeUnitCount) == 0 }
}

/// A WebSocket behaviour's `onText` for a Socket.IO client on the WebSocket transport, one Engine.IO packet a frame:
/// the OPEN (`0{…}`) answered with a CONNECT to `/` (`40`), each ping (`2`) with a pong (`3`), the CONNECT's answer
/// (`40{…}`) with `join`; every other Socket.IO packet (`4…`) goes to `onPacket`.
func socketIOText(join: String, onPacket: @escaping @Sendable (ByteBuffer, Link) -> Void) -> @Sendable (ByteBuffer, Link) -> Void {
    { frame, link in
        if starts(frame, "40") {
            link.send(join)
        } else if starts(frame, "4") {
            onPacket(frame, link)
        } else if starts(frame, "0") {
            link.send("40")
        } else if starts(frame, "2") {
            link.send("3")
        }
    }
}

/// What the long-polling clients of a run did, together.
final class PollingStats: Sendable {
    /// HTTP requests sent (handshakes, GETs, POSTs).
    let requests = Atomic<Int>(0)
    /// TCP connections opened for them: one per request when the server closes each response's connection.
    let connects = Atomic<Int>(0)
    /// Requests sent again on a new connection after the kept-alive one they were sent on closed under them.
    let retries = Atomic<Int>(0)
}

/// One Socket.IO client on Engine.IO long-polling, as socket.io-client runs it: a handshake GET, then a GET always
/// waiting for packets and, beside it, POSTs of the packets it has to send (one in flight; those queued meanwhile go
/// together, separated by 0x1E). Each of the two has its own keep-alive TCP connection, opened again when the server
/// closes it. Pings (`2`) are answered with pongs (`3`); the OPEN with a CONNECT to `/` (`40`), its answer (`40{…}`)
/// with `join`; the other Socket.IO packets go to `onPacket`. Everything but `init` runs on `eventLoop`.
final class PollingClient: @unchecked Sendable {
    let eventLoop: any EventLoop
    private let url: WebSocketURL
    private let stats: PollingStats
    private let join: String
    private let onPacket: @Sendable (ByteBuffer) -> Void
    private let onOpen: @Sendable () -> Void
    private let onFailure: @Sendable (String) -> Void
    private let poll: HTTPLane
    private let post: HTTPLane
    private var sid: String?
    private var outbox: [String] = []
    private var posting = false
    private var stopped = false

    init(
        url: WebSocketURL,
        index: Int,
        dialer: Dialer,
        stats: PollingStats,
        join: String,
        onPacket: @escaping @Sendable (ByteBuffer) -> Void,
        onOpen: @escaping @Sendable () -> Void,
        onFailure: @escaping @Sendable (String) -> Void
    ) {
        let eventLoop = dialer.group.next()
        self.eventLoop = eventLoop
        (self.url, self.stats, self.join, self.onPacket, self.onOpen, self.onFailure) = (url, stats, join, onPacket, onOpen, onFailure)
        let bootstrap = dialer.bootstrap(on: eventLoop, host: url.host, index: index)
        self.poll = HTTPLane(bootstrap: bootstrap, url: url, stats: stats)
        self.post = HTTPLane(bootstrap: bootstrap, url: url, stats: stats)
    }

    func start() {
        self.poll.send(.GET, self.url.path, body: nil) { result in
            guard let body = self.answer(result, "handshake"), starts(body, "0{"), let sid = string(after: #""sid":""#, in: body) else {
                if !self.stopped { self.failed("handshake: no sid") }
                return
            }
            self.sid = sid
            self.onOpen()
            self.send("40")
            self.nextPoll()
        }
    }

    func stop() {
        self.stopped = true
        self.poll.close()
        self.post.close()
    }

    private var sessionPath: String { self.url.adding("sid", self.sid ?? "").path }

    private func nextPoll() {
        guard !self.stopped else { return }
        self.poll.send(.GET, self.sessionPath, body: nil) { result in
            guard var body = self.answer(result, "GET") else { return }
            while body.readableBytes > 0 {
                let length = body.readableBytesView.firstIndex(of: 0x1E).map { $0 - body.readerIndex } ?? body.readableBytes
                let packet = body.readSlice(length: length)!
                body.moveReaderIndex(forwardBy: min(1, body.readableBytes))
                if starts(packet, "40") {
                    self.send(self.join)
                } else if starts(packet, "4") {
                    self.onPacket(packet)
                } else if starts(packet, "2") {
                    self.send("3")
                } else if starts(packet, "1") {
                    return self.failed("the server closed the session")
                }
            }
            self.nextPoll()
        }
    }

    private func send(_ packet: String) {
        self.outbox.append(packet)
        self.flush()
    }

    private func flush() {
        guard !self.posting, !self.outbox.isEmpty, !self.stopped else { return }
        self.posting = true
        let body = self.outbox.joined(separator: "\u{1E}")
        self.outbox.removeAll(keepingCapacity: true)
        self.post.send(.POST, self.sessionPath, body: body) { result in
            guard self.answer(result, "POST") != nil else { return }
            self.posting = false
            self.flush()
        }
    }

    /// The body of a 200 answer; otherwise the client fails and stops, and `nil`.
    private func answer(_ result: Result<(status: UInt, body: ByteBuffer), any Error>, _ what: String) -> ByteBuffer? {
        guard !self.stopped else { return nil }
        switch result {
        case .success((200, let body)):
            return body
        case .success((let status, let body)):
            self.failed("\(what): HTTP \(status) \(String(buffer: body).prefix(60))")
        case .failure(let error):
            self.failed("\(what): \(error)")
        }
        return nil
    }

    private func failed(_ reason: String) {
        self.onFailure(reason)
        self.stop()
    }
}

/// The string after `key` up to the next `"`, as in `"sid":"abc"`.
func string(after key: StaticString, in buffer: ByteBuffer) -> String? {
    guard let start = end(of: key, in: buffer) else { return nil }
    return String(decoding: buffer.readableBytesView.dropFirst(start).prefix { $0 != UInt8(ascii: "\"") }, as: UTF8.self)
}

/// One keep-alive HTTP/1.1 connection of a polling client, one request at a time: opened for the first request and
/// again for the next one after the server closed it (or answered `Connection: close`). A request sent on a kept-alive
/// connection that closes before its answer is sent again once, on a new one. Used on one event loop only.
final class HTTPLane: @unchecked Sendable {
    typealias Completion = @Sendable (Result<(status: UInt, body: ByteBuffer), any Error>) -> Void

    private let bootstrap: ClientBootstrap
    private let url: WebSocketURL
    private let stats: PollingStats
    private var current: LaneHandler?
    private var closed = false

    init(bootstrap: ClientBootstrap, url: WebSocketURL, stats: PollingStats) {
        (self.bootstrap, self.url, self.stats) = (bootstrap, url, stats)
    }

    func send(_ method: HTTPMethod, _ uri: String, body: String?, completion: @escaping Completion) {
        var headers = HTTPHeaders([("Host", "\(self.url.host):\(self.url.port)"), ("Accept", "*/*")])
        if let body { headers.add(contentsOf: [("Content-Type", "text/plain;charset=UTF-8"), ("Content-Length", String(body.utf8.count))]) }
        let request = LaneHandler.Request(head: HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: headers), body: body)
        self.stats.requests.add(1, ordering: .relaxed)
        if let handler = self.current, handler.usable {
            handler.send(request) { result in
                if case .failure(LaneHandler.Closed.beforeAnswer) = result, !self.closed {
                    self.stats.retries.add(1, ordering: .relaxed)
                    self.dial(request, completion)
                } else {
                    completion(result)
                }
            }
        } else {
            self.dial(request, completion)
        }
    }

    func close() {
        self.closed = true
        self.current?.close()
        self.current = nil
    }

    private func dial(_ request: LaneHandler.Request, _ completion: @escaping Completion) {
        guard !self.closed else { return }
        let handler = LaneHandler()
        self.current = handler
        self.stats.connects.add(1, ordering: .relaxed)
        self.bootstrap
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
            .connect(host: self.url.host, port: self.url.port)
            .whenComplete { result in
                switch result {
                case .success: handler.send(request, completion: completion)
                case .failure(let error): completion(.failure(error))
                }
            }
    }
}

/// The handler of one lane connection: writes a request, gathers its answer.
final class LaneHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    struct Request: Sendable {
        var head: HTTPRequestHead
        var body: String?
    }

    enum Closed: Error { case beforeAnswer }

    private var context: ChannelHandlerContext?
    private var pending: HTTPLane.Completion?
    private var status: UInt = 0
    private var keepAlive = true
    private var body: ByteBuffer?

    /// Open, and no request in flight.
    var usable: Bool { self.pending == nil && self.keepAlive && self.context?.channel.isActive == true }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func send(_ request: Request, completion: @escaping HTTPLane.Completion) {
        guard let context, context.channel.isActive else { return completion(.failure(Closed.beforeAnswer)) }
        self.pending = completion
        context.write(self.wrapOutboundOut(.head(request.head)), promise: nil)
        if let body = request.body {
            context.write(self.wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        }
        context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
    }

    func close() { self.context?.close(promise: nil) }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            (self.status, self.keepAlive, self.body) = (head.status.code, head.isKeepAlive, nil)
        case .body(var bytes):
            if self.body == nil { self.body = bytes } else { self.body!.writeBuffer(&bytes) }
        case .end:
            let (done, body) = (self.pending, self.body ?? context.channel.allocator.buffer(capacity: 0))
            (self.pending, self.body) = (nil, nil)
            if !self.keepAlive { context.close(promise: nil) }
            done?(.success((self.status, body)))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.keepAlive = false
        let done = self.pending
        self.pending = nil
        done?(.failure(Closed.beforeAnswer))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
}
