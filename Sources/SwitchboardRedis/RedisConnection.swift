import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// Why a Redis call failed.
public struct RedisError: Error, CustomStringConvertible, Sendable {
    public enum Code: Sendable {
        /// The connection could not be made or was lost; the client reconnects on the next call.
        case connection
        case timeout
        /// Redis answered with an error reply (`-ERR …`, `-WRONGPASS …`).
        case server
        case configuration
    }

    public let code: Code
    public let message: String
    /// Whether Redis may have run the command. `false` only when it was never written (no connection, a Redis counted
    /// as unreachable, a connect that failed), so sending it again cannot run it twice; a command that was written
    /// and then lost its connection or its reply may well have run.
    public let mayHaveRun: Bool

    public init(_ code: Code, _ message: String, mayHaveRun: Bool = true) {
        self.code = code
        self.message = message
        self.mayHaveRun = mayHaveRun
    }

    /// The same failure, known to have happened before the command was written.
    var notSent: RedisError { RedisError(self.code, self.message, mayHaveRun: false) }

    public var description: String { "Redis \(self.code): \(self.message)" }
}

/// Where Redis is and how to log in: `redis://[user:password@]host[:port][/db]`, or `rediss://` for TLS (ElastiCache
/// in-transit encryption).
public struct RedisConfiguration: Sendable {
    public var host: String
    public var port: Int
    public var username: String?
    public var password: String?
    public var database: Int
    public var tls: Bool
    public var connectTimeout: TimeAmount = .seconds(5)
    public var commandTimeout: TimeAmount = .seconds(5)
    /// The most bytes one reply may take on the wire, nested elements included (64 MiB by default). Every length in
    /// a reply is checked against it as soon as its header arrives, so a broken or hostile server cannot make the
    /// gateway buffer more than this per connection; a reply past it fails every pending command and closes the
    /// connection. Raise it only if you read values larger than this (Redis's own `proto-max-bulk-len` is 512 MB).
    public var maximumReplyBytes = RedisConfiguration.defaultMaximumReplyBytes

    static let defaultMaximumReplyBytes = 64 * 1024 * 1024

    public init(url: String) throws(RedisError) {
        let tls = url.hasPrefix("rediss://")
        guard tls || url.hasPrefix("redis://") else { throw RedisError(.configuration, "'\(url)' is not a redis:// or rediss:// URL") }
        var rest = Substring(url.dropFirst(tls ? 9 : 8))
        var database = 0
        if let slash = rest.firstIndex(of: "/") {
            let path = rest[rest.index(after: slash)...]
            if !path.isEmpty {
                guard let db = Int(path), db >= 0 else { throw RedisError(.configuration, "'\(path)' is not a database number") }
                database = db
            }
            rest = rest[..<slash]
        }
        var username: String?
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = credentials.firstIndex(of: ":") {
                let user = credentials[..<colon]
                username = user.isEmpty ? nil : String(user)
                password = String(credentials[credentials.index(after: colon)...])
            } else {
                password = String(credentials)
            }
        }
        var host = String(rest)
        var port = 6379
        if let colon = rest.lastIndex(of: ":") {
            guard let value = Int(rest[rest.index(after: colon)...]), (1...65535).contains(value) else {
                throw RedisError(.configuration, "bad port in '\(url)'")
            }
            port = value
            host = String(rest[..<colon])
        }
        guard !host.isEmpty else { throw RedisError(.configuration, "no host in '\(url)'") }
        (self.host, self.port, self.username, self.password, self.database, self.tls) = (host, port, username, password, database, tls)
    }
}

/// Encodes commands and matches replies to them in order, so any number can be in flight (pipelining). Pub/sub
/// messages (`message`, `pmessage`, `smessage`, and RESP3 pushes) go to `onPush` instead, and so does any reply that
/// arrives while no command waits.
final class RESPHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = (command: [RedisArgument], promise: EventLoopPromise<RESPValue>)
    typealias OutboundOut = ByteBuffer

    private var pending = CircularBuffer<EventLoopPromise<RESPValue>>()
    private let heard: Heard
    /// Holds the bytes of the element being read, at most `maximumReplyBytes` of them between reads, and resumes it
    /// on the next read. `nil` once a bad reply has put the stream out of step: later reads are dropped.
    private var decoder: NIOSingleStepByteToMessageProcessor<RESPDecoder>?
    private let onPush: (@Sendable (RESPValue) -> Void)?

    /// - Parameter maximumReplyBytes: `RedisConfiguration.maximumReplyBytes`.
    init(
        onPush: (@Sendable (RESPValue) -> Void)?,
        maximumReplyBytes: Int = RedisConfiguration.defaultMaximumReplyBytes,
        heard: Heard = Heard()
    ) {
        self.onPush = onPush
        self.heard = heard
        self.decoder = NIOSingleStepByteToMessageProcessor(RESPDecoder(maximumReplyBytes: maximumReplyBytes))
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let (command, reply) = self.unwrapOutboundIn(data)
        var out = context.channel.allocator.buffer(capacity: 64)
        RESPEncoder.encode(command, into: &out)
        self.pending.append(reply)
        context.write(self.wrapOutboundOut(out), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.heard.now()
        guard let decoder = self.decoder else { return }
        do {
            try decoder.process(buffer: self.unwrapInboundIn(data)) { value in
                if let onPush = self.onPush, Self.isPush(value) {
                    onPush(value)
                } else if let promise = self.pending.popFirst() {
                    promise.succeed(value)
                } else {
                    // Nothing asked for it: a sharded `sunsubscribe` Redis sends when a slot moves away.
                    self.onPush?(value)
                }
            }
        } catch {
            self.decoder = nil
            self.failAll(RedisError(.connection, "\(error)"))
            context.close(promise: nil)
        }
    }

    private static func isPush(_ value: RESPValue) -> Bool {
        if case .push = value { return true }
        guard case .array(let elements?) = value, let kind = elements.first?.string else { return false }
        return kind == "message" || kind == "pmessage" || kind == "smessage"
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.failAll(RedisError(.connection, "connection closed"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.failAll(RedisError(.connection, "\(error)"))
        context.close(promise: nil)
    }

    private func failAll(_ error: RedisError) {
        while let promise = self.pending.popFirst() { promise.fail(error) }
    }
}

/// When a connection last heard from Redis: the clock its commands' timeouts run on.
final class Heard: Sendable {
    private let uptime = Atomic<UInt64>(NIODeadline.now().uptimeNanoseconds)

    func now() { self.uptime.store(NIODeadline.now().uptimeNanoseconds, ordering: .relaxed) }

    var last: NIODeadline { .uptimeNanoseconds(self.uptime.load(ordering: .relaxed)) }
}

/// One open connection to Redis, logged in and on its database.
final class RedisConnection: Sendable {
    let channel: any Channel
    private let timeout: TimeAmount
    private let heard: Heard

    private init(channel: any Channel, timeout: TimeAmount, heard: Heard) {
        self.channel = channel
        self.timeout = timeout
        self.heard = heard
    }

    static func connect(
        _ configuration: RedisConfiguration,
        group: any EventLoopGroup,
        onPush: (@Sendable (RESPValue) -> Void)? = nil
    ) async throws(RedisError) -> RedisConnection {
        let channel: any Channel
        let heard = Heard()
        do {
            let tls = try configuration.tls ? NIOSSLContext(configuration: .makeClientConfiguration()) : nil
            channel = try await ClientBootstrap(group: group)
                .connectTimeout(configuration.connectTimeout)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let tls {
                            try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: tls, serverHostname: configuration.host))
                        }
                        try channel.pipeline.syncOperations.addHandler(
                            RESPHandler(onPush: onPush, maximumReplyBytes: configuration.maximumReplyBytes, heard: heard)
                        )
                    }
                }
                .connect(host: configuration.host, port: configuration.port).get()
        } catch {
            throw RedisError(.connection, "cannot connect to \(configuration.host):\(configuration.port): \(error)", mayHaveRun: false)
        }
        let connection = RedisConnection(channel: channel, timeout: configuration.commandTimeout, heard: heard)
        do {
            if let password = configuration.password {
                let auth: [RedisArgument] = configuration.username.map { ["AUTH", .string($0), .string(password)] } ?? ["AUTH", .string(password)]
                _ = try await connection.send(auth)
            }
            if configuration.database != 0 { _ = try await connection.send(["SELECT", RedisArgument(configuration.database)]) }
        } catch {
            connection.close()
            throw error.notSent
        }
        return connection
    }

    /// Sends one command; several calls pipeline. Error replies throw `.server`.
    func send(_ command: [RedisArgument], timeout limit: TimeAmount? = nil) async throws(RedisError) -> RESPValue {
        let value = try await self.pipeline([command], timeout: limit)[0]
        if case .error(let message) = value { throw RedisError(.server, message) }
        return value
    }

    /// Writes every command, flushes once, and collects the replies in order (error replies included).
    ///
    /// The timeout counts from the last bytes Redis sent, not from the write: a Redis working through a long backlog
    /// (or a node whose busy event loop reads its replies late) is not away, and dropping its connection would fail
    /// commands that it then runs. A frozen Redis, or one cut off, sends nothing, and its callers fail after `limit`.
    func pipeline(_ commands: [[RedisArgument]], timeout limit: TimeAmount? = nil) async throws(RedisError) -> [RESPValue] {
        let loop = self.channel.eventLoop
        let promises = commands.map { _ in loop.makePromise(of: RESPValue.self) }
        for (command, promise) in zip(commands, promises) {
            self.channel.write((command, promise)).whenFailure { error in
                // Never written whole: Redis runs no command it has not read to the end.
                promise.fail(RedisError(.connection, "\(error)", mayHaveRun: false))
            }
        }
        self.channel.flush()
        let sent = NIODeadline.now()
        loop.execute {
            let answered = NIOLoopBoundBox(false, eventLoop: loop)
            promises.last?.futureResult.whenComplete { _ in answered.value = true }
            self.failWhenSilent(promises, answered, for: limit ?? self.timeout, since: sent)
        }
        var replies: [RESPValue] = []
        replies.reserveCapacity(commands.count)
        for promise in promises {
            do {
                replies.append(try await promise.futureResult.get())
            } catch let error as RedisError {
                if error.code == .timeout { self.close() }  // a late reply would answer the wrong command
                throw error
            } catch {
                throw RedisError(.connection, "\(error)")
            }
        }
        return replies
    }

    /// Fails `promises` with `.timeout` once Redis has sent nothing for `limit` while they wait.
    ///
    /// Silence is confirmed after one more pass of the event loop: a task that held the loop (a busy node) can make
    /// the check due before the loop has read what Redis sent meanwhile, and a check scheduled a millisecond ahead
    /// runs only after the loop has polled its sockets again.
    private func failWhenSilent(
        _ promises: [EventLoopPromise<RESPValue>],
        _ answered: NIOLoopBoundBox<Bool>,
        for limit: TimeAmount,
        since sent: NIODeadline,
        confirming: Bool = false
    ) {
        let heard = max(sent, self.heard.last)
        let deadline = confirming ? .now() + .milliseconds(1) : heard + limit
        self.channel.eventLoop.scheduleTask(deadline: deadline) {
            guard !answered.value else { return }
            let silent = NIODeadline.now() - max(sent, self.heard.last) >= limit
            if silent, confirming {
                for promise in promises { promise.fail(RedisError(.timeout, "Redis sent nothing for \(limit)")) }
            } else {
                self.failWhenSilent(promises, answered, for: limit, since: sent, confirming: silent)
            }
        }
    }

    var isActive: Bool { self.channel.isActive }

    func close() {
        self.channel.close(promise: nil)
    }
}
