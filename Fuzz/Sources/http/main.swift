import FuzzDriver
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOPosix
import Prometheus
import SwitchboardConfiguration
import SwitchboardCore

@testable import SwitchboardGateway

/// Bytes of a client's first requests → NIO's HTTP/1 request decoder (fed in fuzz-chosen chunks) → for each request
/// head, the gateway's I/O-free classification and `$connect` checks (`Admission`, `ManagementAPI.route`) → the real
/// `HTTPHandler` on an `EmbeddedChannel`, which answers health, asset, refusal and not-found requests.
///
/// Input: byte 0 picks the chunk size; the rest is the byte stream.
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard size > 0, let data else { return 0 }
    let input = UnsafeBufferPointer(start: data, count: size)
    let chunk = [1, 3, 16, 1 << 20][Int(input[0] & 0b11)]
    let stream = input.dropFirst()

    let channel = EmbeddedChannel()
    do {
        try channel.pipeline.syncOperations.addHandlers(
            ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)),
            RequestChecks(gateway: Fixture.gateway),
            HTTPHandler(gateway: Fixture.gateway, upgrade: UpgradeState(), management: nil)
        )
        // Connected, as a server's accepted channel is: an inactive channel would take no reads.
        try channel.connect(to: SocketAddress(ipAddress: "203.0.113.7", port: 50_000)).wait()
    } catch {
        fatalError("pipeline setup failed: \(error)")
    }
    precondition(channel.isActive, "the embedded channel did not connect")
    var start = stream.startIndex
    while start < stream.endIndex, channel.isActive {
        let end = min(start + chunk, stream.endIndex)
        let buffer = ByteBuffer(bytes: UnsafeBufferPointer(rebasing: stream[start..<end]))
        start = end
        do {
            try channel.writeInbound(buffer)
        } catch {
            break  // a parse error or a closed channel: the connection is over
        }
    }
    while let part = try? channel.readOutbound(as: HTTPServerResponsePart.self) {
        if case .head(let head) = part {
            precondition(head.status.code != 500, "the gateway answered 500 to \(head)")
        }
    }
    _ = try? channel.finish()
    precondition(Fixture.gateway.slots.load(ordering: .relaxed) == 0, "a refused or finished handshake kept its connection slot")
    return 0
}

/// One gateway shared by every run: building it (event loop group, metrics registry) costs more than a run.
enum Fixture {
    static let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)

    static let gateway: GatewayContext = {
        let resources: GatewayResources
        do { resources = try GatewayResources.load() } catch { fatalError("\(error)") }
        var configuration = GatewayConfiguration()
        configuration.allowedOrigins = ["https://app.example.com", "https://*.example.org"]
        configuration.maxConnections = 1000
        let metrics = GatewayMetrics(registry: PrometheusCollectorRegistry(), routes: configuration.routes)
        let hub = LocalHub(group: group, metrics: metrics)
        var logger = Logger(label: "fuzz")
        logger.logLevel = .critical
        return GatewayContext(
            configuration: configuration,
            broker: InMemoryBroker(delivering: hub),
            hub: hub,
            logger: logger,
            wallClock: { 1_795_455_469_866 },
            integrations: nil,
            metrics: metrics,
            resources: resources
        )
    }()
}

/// Runs the I/O-free request checks on every head and passes the request on to `HTTPHandler`, except `GET /metrics`,
/// whose answer is produced by an asynchronous task that an `EmbeddedChannel` cannot wait for.
final class RequestChecks: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    let gateway: GatewayContext
    private var dropping = false

    init(gateway: GatewayContext) {
        self.gateway = gateway
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = self.unwrapInboundIn(data)
        if case .head(let head) = part {
            self.check(head, context: context)
            self.dropping = head.method == .GET && Admission.split(head.uri).path == "/metrics"
        }
        if !self.dropping { context.fireChannelRead(data) }
        if case .end = part { self.dropping = false }
    }

    private func check(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let (path, query) = Admission.split(head.uri)
        precondition(!path.contains("?"), "split left a '?' in the path of \(head.uri)")
        let pairs = Admission.queryPairs(head.uri)
        for (name, value) in query {
            precondition(pairs.first { $0.name == name }?.value == value, "split and queryPairs disagree on \(name) in \(head.uri)")
        }
        let isWebSocket = Admission.isWebSocketPath(path)
        let segments = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        if segments.prefix(2).contains(where: { $0.hasPrefix("@") }) {
            precondition(!isWebSocket, "\(path) is a management path and a WebSocket path")
        }
        _ = ManagementAPI.route(head.uri)
        switch Admission.evaluate(head, remoteAddress: context.channel.remoteAddress, gateway: self.gateway) {
        case .success(let candidate):
            precondition(isWebSocket, "admitted a handshake on \(path), which is not a WebSocket path")
            precondition(Name.problem(with: candidate.info.userId, field: "userId") == nil, "admitted a bad userId")
            // The upgrader would now own the lease; the fuzzer ends it at once (its slot comes back synchronously).
            candidate.lease.end(nil)
        case .failure(let refusal):
            precondition((400..<600).contains(refusal.response.status.code), "refused with \(refusal.response.status)")
        }
    }
}

switchboard_fuzz_run(CommandLine.argc, CommandLine.unsafeArgv, fuzzOne)
