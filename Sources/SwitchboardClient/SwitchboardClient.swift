import Logging
import NIOCore
import NIOWebSocket
import SwitchboardCore
import Synchronization
import WSClient
import WSCompression

@_exported import enum SwitchboardCore.JSONValue

/// A Switchboard client that never gives up: it reconnects with exponential backoff and full jitter, detects dead
/// connections with pings, rejoins its rooms after a reconnect and recovers what it missed from the rooms' history,
/// and buffers what the app sends while it is away.
///
/// ```swift
/// let client = SwitchboardClient(configuration: .init(url: "ws://localhost:8080/prod", query: ["userId": "alice"]))
/// try await withThrowingDiscardingTaskGroup { group in
///     group.addTask { await client.run() }
///     client.joinRoom("lobby")
///     client.sendMessage("hello", to: "lobby")
///     for await event in client.events { print(event) }
/// }
/// ```
public final class SwitchboardClient: Sendable {
    public struct Configuration: Sendable {
        public var url: String
        /// Added to the URL's query (`userId`, `token`, …).
        public var query: [String: String]
        public var reconnect = ReconnectPolicy()
        /// Ping interval; a connection that does not answer within it is dropped and reconnected.
        public var heartbeat = Duration.seconds(25)
        /// Frames kept while disconnected; beyond it the oldest are dropped (and reported).
        public var outboundBufferLimit = 1000
        public var maxMessageBytes = 16 << 20
        /// Offer permessage-deflate (RFC 7692), as browsers do; the server decides. Switchboard compresses messages
        /// from 256 bytes up, which chat and notification JSON shrinks to a third or less of.
        public var compression = true

        public init(url: String, query: [String: String] = [:]) {
            self.url = url
            self.query = query
        }
    }

    public enum State: Sendable, Hashable {
        case connecting
        case connected
        /// Waiting before the attempt'th reconnect.
        case reconnecting(attempt: Int)
        /// Closed by `close()`, or out of reconnect attempts.
        case closed
    }

    public enum Event: Sendable, Hashable {
        case state(State)
        case joinedRoom(room: String, members: [String], offset: Int64)
        case message(room: String, message: JSONValue, sender: String, timestamp: Int64, offset: Int64)
        case userJoined(room: String, userId: String)
        case userLeft(room: String, userId: String)
        /// Messages after the last offset seen are gone: reload the room from your own store.
        case historyLost(room: String)
        case error(String)
        /// Any other JSON frame (integration replies, pushes from backends).
        case frame(JSONValue)
        case binary([UInt8])
        /// Frames sent while disconnected that did not fit the outbound buffer.
        case dropped(count: Int)
    }

    private enum Outgoing: Sendable {
        case text(String)
        case binary([UInt8])
    }

    private struct Shared {
        var state = State.connecting
        var rooms: [String: Int64] = [:]  // room → last offset seen
        var writer: AsyncStream<Outgoing>.Continuation?
        var buffer: [Outgoing] = []
        var closing = false
    }

    public let events: AsyncStream<Event>
    private let emit: AsyncStream<Event>.Continuation
    private let configuration: Configuration
    private let shared = Mutex(Shared())
    private let logger: Logger
    private let sleep: @Sendable (Duration) async throws -> Void
    private let random: @Sendable (ClosedRange<Double>) -> Double

    /// - Parameters:
    ///   - sleep: how backoff waits; tests inject one that records the delays.
    ///   - random: the jitter source; tests inject a fixed one.
    public init(
        configuration: Configuration,
        logger: Logger = Logger(label: "switchboard.client"),
        sleep: @escaping @Sendable (Duration) async throws -> Void = { try await Task.sleep(for: $0) },
        random: @escaping @Sendable (ClosedRange<Double>) -> Double = { Double.random(in: $0) }
    ) {
        self.configuration = configuration
        self.logger = logger
        self.sleep = sleep
        self.random = random
        (self.events, self.emit) = AsyncStream.makeStream(of: Event.self)
    }

    public var state: State { self.shared.withLock { $0.state } }

    // MARK: Commands

    /// Joins a room now (or as soon as connected) and after every reconnect, recovering missed messages.
    public func joinRoom(_ room: String) {
        // Recorded, then sent at once when connected; otherwise the next connection joins every recorded room.
        let writer = self.shared.withLock { shared -> AsyncStream<Outgoing>.Continuation? in
            guard shared.rooms[room] == nil else { return nil }
            shared.rooms[room] = 0
            return shared.writer
        }
        writer?.yield(.text(JSONValue.object(JSONObject([.init("action", "joinRoom"), .init("roomId", .string(room))])).jsonString))
    }

    public func leaveRoom(_ room: String) {
        guard self.shared.withLock({ $0.rooms.removeValue(forKey: room) }) != nil else { return }
        self.send(["action": "leaveRoom", "roomId": .string(room)])
    }

    public func sendMessage(_ message: JSONValue, to room: String) {
        self.send(["action": "sendMessage", "roomId": .string(room), "message": message])
    }

    /// Any JSON frame (custom routes).
    public func send(_ frame: JSONValue) {
        self.enqueue(.text(frame.jsonString))
    }

    public func send(binary: [UInt8]) {
        self.enqueue(.binary(binary))
    }

    /// Closes with 1000 and stops reconnecting.
    public func close() {
        let writer = self.shared.withLock { shared -> AsyncStream<Outgoing>.Continuation? in
            shared.closing = true
            return shared.writer
        }
        writer?.finish()
    }

    private func enqueue(_ frame: Outgoing) {
        var dropped = 0
        let writer = self.shared.withLock { shared -> AsyncStream<Outgoing>.Continuation? in
            if let writer = shared.writer { return writer }
            shared.buffer.append(frame)
            if shared.buffer.count > self.configuration.outboundBufferLimit {
                dropped = shared.buffer.count - self.configuration.outboundBufferLimit
                shared.buffer.removeFirst(dropped)
            }
            return nil
        }
        writer?.yield(frame)
        if dropped > 0 { self.emit.yield(.dropped(count: dropped)) }
    }

    private func setState(_ state: State) {
        let changed = self.shared.withLock { shared -> Bool in
            defer { shared.state = state }
            return shared.state != state
        }
        if changed { self.emit.yield(.state(state)) }
    }

    // MARK: Connection loop

    /// Connects and keeps connecting until `close()` or the reconnect policy gives up; then finishes `events`.
    public func run() async {
        var attempt = 0
        while !Task.isCancelled, !self.shared.withLock({ $0.closing }) {
            self.setState(.connecting)
            let connected = Mutex(false)
            do {
                try await self.connectOnce { connected.withLock { $0 = true } }
            } catch {
                self.logger.debug("connection ended", metadata: ["error": "\(error)"])
            }
            self.shared.withLock { $0.writer = nil }
            if self.shared.withLock({ $0.closing }) { break }
            attempt = connected.withLock { $0 } ? 1 : attempt + 1
            guard let delay = self.configuration.reconnect.delay(attempt: attempt, random: self.random) else { break }
            self.setState(.reconnecting(attempt: attempt))
            do { try await self.sleep(delay) } catch { break }
        }
        self.setState(.closed)
        self.emit.finish()
    }

    private func url() -> String {
        guard !self.configuration.query.isEmpty else { return self.configuration.url }
        let query = self.configuration.query.sorted { $0.key < $1.key }.map { "\(Self.encode($0.key))=\(Self.encode($0.value))" }
        return self.configuration.url + (self.configuration.url.contains("?") ? "&" : "?") + query.joined(separator: "&")
    }

    private static func encode(_ text: String) -> String {
        String(
            text.utf8.flatMap { byte -> [Character] in
                switch byte {
                case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                    UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
                    [Character(UnicodeScalar(byte))]
                default:
                    Array("%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2))
                }
            }
        )
    }

    private func connectOnce(onOpen: @escaping @Sendable () -> Void) async throws {
        var configuration = WebSocketClientConfiguration()
        configuration.autoPing = .enabled(timePeriod: self.configuration.heartbeat)
        configuration.maxFrameSize = self.configuration.maxMessageBytes
        if self.configuration.compression {
            let deflate = WebSocketExtensionFactory.perMessageDeflate(maxDecompressedFrameSize: self.configuration.maxMessageBytes)
            configuration.extensions = [deflate.build()]
        }
        try await WebSocketClient.connect(url: self.url(), configuration: configuration, logger: self.logger) { inbound, outbound, _ in
            let (stream, writer) = AsyncStream.makeStream(of: Outgoing.self)
            // Rejoin every room with the last offset seen, then flush what was sent while away, in order.
            let (rooms, buffered) = self.shared.withLock { shared -> ([String: Int64], [Outgoing]) in
                defer {
                    shared.buffer.removeAll()
                    shared.writer = writer
                }
                return (shared.rooms, shared.buffer)
            }
            onOpen()
            self.setState(.connected)
            for (room, offset) in rooms.sorted(by: { $0.key < $1.key }) {
                var join: [JSONObject.Member] = [.init("action", "joinRoom"), .init("roomId", .string(room))]
                if offset > 0 { join.append(.init("lastOffset", .number(String(offset)))) }
                try await outbound.writeTextMessage(JSONValue.object(JSONObject(join)).jsonString)
            }
            for frame in buffered { try await Self.write(frame, to: outbound) }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await frame in stream { try await Self.write(frame, to: outbound) }
                    try await outbound.close(.normalClosure, reason: nil)  // `close()` finished the stream
                }
                for try await message in inbound.messages(maxSize: self.configuration.maxMessageBytes) {
                    self.receive(message)
                }
                group.cancelAll()
            }
        }
    }

    private static func write(_ frame: Outgoing, to outbound: WebSocketOutboundWriter) async throws {
        switch frame {
        case .text(let text): try await outbound.writeTextMessage(text)
        case .binary(let bytes): try await outbound.writeBinaryMessage(ByteBuffer(bytes: bytes))
        }
    }

    // MARK: Inbound

    private func receive(_ message: WebSocketMessage) {
        guard case .text(let text) = message else {
            if case .binary(let buffer) = message { self.emit.yield(.binary(Array(buffer.readableBytesView))) }
            return
        }
        guard let frame = try? JSONValue.parse(text), let object = frame.objectValue else {
            self.emit.yield(.frame(.string(text)))
            return
        }
        let room = object["roomId"]?.stringValue ?? ""
        func int(_ key: String) -> Int64 { if case .number(let text) = object[key] { Int64(text) ?? 0 } else { 0 } }
        switch object["action"]?.stringValue {
        case "joinedRoom":
            let offset = int("offset")
            // A first join starts at the room's current offset; a rejoin keeps its own (the missed messages follow).
            self.shared.withLock { if $0.rooms[room] == 0 { $0.rooms[room] = offset } }
            var members: [String] = []
            if case .array(let values)? = object["members"] { members = values.compactMap(\.stringValue) }
            self.emit.yield(.joinedRoom(room: room, members: members, offset: offset))
        case "message":
            let offset = int("offset")
            // Messages around a rejoin may come twice (history and live): offsets tell which were seen.
            let fresh = self.shared.withLock { shared -> Bool in
                guard offset > 0, let last = shared.rooms[room] else { return true }
                guard offset > last else { return false }
                shared.rooms[room] = offset
                return true
            }
            guard fresh else { return }
            self.emit.yield(
                .message(
                    room: room,
                    message: object["message"] ?? .null,
                    sender: object["sender"]?.stringValue ?? "",
                    timestamp: int("timestamp"),
                    offset: offset
                )
            )
        case "userJoined": self.emit.yield(.userJoined(room: room, userId: object["userId"]?.stringValue ?? ""))
        case "userLeft": self.emit.yield(.userLeft(room: room, userId: object["userId"]?.stringValue ?? ""))
        case "historyLost":
            self.shared.withLock { if $0.rooms[room] != nil { $0.rooms[room] = int("oldestOffset") - 1 } }
            self.emit.yield(.historyLost(room: room))
        case "error": self.emit.yield(.error(object["message"]?.stringValue ?? text))
        default: self.emit.yield(.frame(frame))
        }
    }
}

/// Exponential backoff with full jitter (AWS's recommendation): the n-th wait is uniform in
/// `0 ... min(cap, base × 2^(n-1))`, so a fleet of clients does not reconnect in lockstep after an outage.
public struct ReconnectPolicy: Sendable, Hashable {
    public var base: Duration
    public var cap: Duration
    /// `nil`: never give up.
    public var maxAttempts: Int?

    public init(base: Duration = .milliseconds(500), cap: Duration = .seconds(30), maxAttempts: Int? = nil) {
        self.base = base
        self.cap = cap
        self.maxAttempts = maxAttempts
    }

    /// The wait before reconnect `attempt` (1-based), or `nil` when the attempts are used up.
    public func delay(attempt: Int, random: (ClosedRange<Double>) -> Double) -> Duration? {
        if let maxAttempts, attempt > maxAttempts { return nil }
        let ceiling = min(Self.seconds(self.cap), Self.seconds(self.base) * pow2(attempt - 1))
        return .milliseconds(Int64(random(0...ceiling) * 1000))
    }

    private static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}

private func pow2(_ exponent: Int) -> Double {
    Double(1 << min(max(exponent, 0), 30))
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        String(repeating: "0", count: max(0, width - self.count)) + self
    }
}
