import ArgumentParser
import Histogram
import NIOCore
import NIOHTTP1
import NIOPosix
import SwitchboardCore
import Synchronization

struct ManagementPost: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "management-post",
        abstract: "POST /@connections/{id} in closed loops from keep-alive clients; posts/s, POST and delivery latency."
    )

    @OptionGroup var target: Target
    @Option(help: "Connected clients the posts go to (the server must send the welcome frame).") var members = 100
    @Option(help: "Concurrent keep-alive HTTP clients.") var posters = 16
    @Option var seconds = 5.0
    @Option(help: "Bearer token for the management API, if it has one.") var token: String?

    func run() async throws {
        let (dialer, urls, members) = (self.target.dialer(), try self.target.urls(), self.members)
        let ids = Mutex<[String]>([])
        let delivered = Tally()
        let opened = Tally()
        _ = try await open(
            members,
            rate: 5000,
            urls: urls,
            dialer: dialer,
            behaviour: opened.behaviour(onText: { frame, _ in
                if let sentAt = integer(after: #""t":"#, in: frame) {
                    delivered.record(since: sentAt)
                    delivered.count.add(1, ordering: .relaxed)
                } else if let id = connectionId(in: frame) {
                    ids.withLock { $0.append(id) }
                }
            })
        )
        guard try await waitUntil(seconds: 30, { ids.withLock { $0.count } >= members }) else {
            throw BenchError(
                "only \(ids.withLock { $0.count }) of \(members) clients were told their connectionId: run the server with --welcome-frame true"
            )
        }
        let targets = ids.withLock { $0 }
        let posted = Tally()
        let next = Atomic<Int>(0)
        let until = nowMicros() + UInt64(self.seconds * 1_000_000)
        let host = "\(urls[0].host):\(urls[0].port)"
        let headers = HTTPHeaders(
            [("Host", host), ("Content-Type", "application/json")] + (self.token.map { [("Authorization", "Bearer \($0)")] } ?? [])
        )
        for _ in 0..<self.posters {
            _ = ClientBootstrap(group: dialer.group)
                .channelInitializer { channel in
                    channel.pipeline.addHTTPClientHandlers().flatMapThrowing {
                        try channel.pipeline.syncOperations.addHandler(
                            RequestLoop(headers: headers, tally: posted) {
                                guard nowMicros() < until else { return nil }
                                let id = targets[next.add(1, ordering: .relaxed).oldValue % targets.count]
                                return ("/@connections/\(id)", #"{"t":\#(nowMicros())}"#)
                            }
                        )
                    }
                }
                .connect(host: urls[0].host, port: urls[0].port)
        }
        try await Task.sleep(for: .milliseconds(Int64(self.seconds * 1000) + 500))  // the last responses too
        try await waitUntil(seconds: 5) { delivered.count.load(ordering: .relaxed) >= posted.count.load(ordering: .relaxed) }
        let (accepted, got) = (posted.count.load(ordering: .relaxed), delivered.count.load(ordering: .relaxed))
        let deliveries = delivered.latencies
        report(
            [
                "scenario": "management-post", "server": .string(self.target.server), "members": number(members),
                "posters": number(self.posters),
                "posts_per_second": number(Double(accepted) / self.seconds),
                "loss_percent": number(Double(max(accepted - got, 0)) * 100 / Double(max(accepted, 1))),
                "delivery_p99_ms": milliseconds(deliveries.valueAtPercentile(99)),
            ],
            posted.failures(),
            posted.percentiles()
        )
    }

    /// The id in the welcome frame, `{"action":"connected","connectionId":"…",…}`.
    func connectionId(in frame: ByteBuffer) -> String? {
        guard let start = end(of: #""connectionId":""#, in: frame) else { return nil }
        return String(decoding: frame.readableBytesView.dropFirst(start).prefix { $0 != UInt8(ascii: "\"") }, as: UTF8.self)
    }
}

struct Integration: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: """
            C clients in closed loops through an HTTP integration to a minimal backend this command serves; run the \
            gateway with --integrations bench=http://127.0.0.1:PORT/ --integration-route-responses bench.
            """
    )

    @OptionGroup var target: Target
    @Option var clients = 50
    @Option var seconds = 5.0
    @Option(help: "Port for the backend, on 127.0.0.1.") var backendPort = 9310

    func run() async throws {
        let dialer = self.target.dialer()
        _ = try await ServerBootstrap(group: dialer.group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMapThrowing {
                    try channel.pipeline.syncOperations.addHandler(Backend())
                }
            }
            .bind(host: "127.0.0.1", port: self.backendPort).get()
        let tally = try await closedLoop(
            self.target,
            on: dialer,
            clients: self.clients,
            seconds: self.seconds,
            message: #"{"action":"bench"}"#,
            reply: "benched"
        ).tally
        report(
            [
                "scenario": "integration", "server": .string(self.target.server), "clients": number(self.clients),
                "messages_per_second": number(Double(tally.count.load(ordering: .relaxed)) / self.seconds),
            ],
            tally.failures(),
            tally.percentiles()
        )
    }
}

/// An HTTP/1.1 keep-alive client that sends the next request as soon as the previous response ended, until `next`
/// says stop; it records each request's latency and counts the 2xx answers.
final class RequestLoop: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private let headers: HTTPHeaders
    private let tally: Tally
    private let next: @Sendable () -> (uri: String, body: String)?
    private var status: UInt = 0
    private var sentAt: UInt64 = 0

    init(headers: HTTPHeaders, tally: Tally, next: @escaping @Sendable () -> (uri: String, body: String)?) {
        (self.headers, self.tally, self.next) = (headers, tally, next)
    }

    func channelActive(context: ChannelHandlerContext) { self.send(context: context) }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head): self.status = head.status.code
        case .body: break
        case .end:
            if (200..<300).contains(self.status) {
                self.tally.record(since: self.sentAt)
                self.tally.count.add(1, ordering: .relaxed)
            } else {
                self.tally.fail("HTTP \(self.status)")
            }
            self.send(context: context)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.tally.fail("\(error)")
        context.close(promise: nil)
    }

    private func send(context: ChannelHandlerContext) {
        guard let (uri, body) = self.next() else {
            context.close(promise: nil)
            return
        }
        var headers = self.headers
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        self.sentAt = nowMicros()
        context.write(self.wrapOutboundOut(.head(HTTPRequestHead(version: .http1_1, method: .POST, uri: uri, headers: headers))), promise: nil)
        context.write(self.wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
    }
}

/// The smallest integration backend: every request gets a Lambda-proxy reply whose body goes back to the client.
final class Backend: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private static let reply = #"{"statusCode":200,"body":"{\"action\":\"benched\"}"}"#

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .end = self.unwrapInboundIn(data) else { return }
        let headers = HTTPHeaders([("Content-Type", "application/json"), ("Content-Length", String(Self.reply.utf8.count))])
        context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
        context.write(self.wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: Self.reply)))), promise: nil)
        context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
    }
}
