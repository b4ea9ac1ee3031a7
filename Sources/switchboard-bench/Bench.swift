import ArgumentParser
import Foundation
import Histogram
import NIOCore
import NIOPosix
import SwitchboardCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Scenarios against any server speaking the seed protocol, one JSON line each (bench/run adds the table and ratios).
/// Every run is bounded in time.
@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchboard-bench",
        abstract: "Load scenarios for Switchboard and its peers; prints one JSON line per run.",
        subcommands: [
            Connections.self, Churn.self, Storm.self, PingPong.self, RoomFanout.self, ManyRooms.self, ClusterFanout.self, ManagementPost.self,
            Integration.self, SocketIOFanout.self,
        ]
    )
}

struct Target: ParsableArguments {
    @Option(help: "WebSocket URLs (several: connections are spread over them, as over cluster nodes).")
    var url: [String] = ["ws://127.0.0.1:8080/ws"]

    @Option(help: "Server PID, for resident memory (/proc/PID/status).")
    var pid: Int32?

    @Option(help: "PIDs of a cluster's other nodes: their CPU is added to the first's in nodes_cpu_percent (fan-out scenarios).")
    var nodePid: [Int32] = []

    @Option(help: "PIDs of the Redis servers behind a cluster, for redis_cpu_percent (fan-out scenarios).")
    var redisPid: [Int32] = []

    @Option(help: "Label for the output.")
    var server = "switchboard"

    @Option(help: "Event loop threads of the load generator.")
    var threads = 1

    @Option(help: "Local source addresses to spread connections over: 127.0.0.1 up to 127.0.0.N.")
    var sources = 8

    @Flag(
        help: """
            Offer permessage-deflate as Chrome does (RFC 7692) and inflate what comes compressed; the generator's own \
            messages go out uncompressed.
            """
    )
    var deflate = false

    func urls() throws -> [WebSocketURL] { try self.url.map(WebSocketURL.init) }

    func dialer() -> Dialer {
        Dialer(
            group: MultiThreadedEventLoopGroup(numberOfThreads: self.threads),
            sources: self.sources,
            extensions: self.deflate ? ExtensionStats() : nil
        )
    }
}

extension Dialer {
    /// The permessage-deflate fields for a result line; none when nothing was offered.
    func extensionFields() -> KeyValuePairs<String, JSONValue> { self.extensions?.fields() ?? [:] }
}

func number(_ value: some BinaryInteger) -> JSONValue { .number(String(value)) }
func number(_ value: Double) -> JSONValue { .number(String(format: "%.3f", value)) }
func milliseconds(_ micros: UInt64) -> JSONValue { number(Double(micros) / 1000) }

func residentKiB(_ pid: Int32?) -> Int? {
    guard let pid, let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
    return status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }.flatMap {
        Int($0.split(separator: " ", omittingEmptySubsequences: true)[1])
    }
}

/// CPU seconds the process has used, user and system (`/proc/PID/stat` fields 14 and 15, after the command name).
func cpuSeconds(_ pid: Int32?) -> Double? {
    guard let pid, let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let fields = stat.split(separator: ")").last?.split(separator: " "), fields.count > 12,
        let user = Double(fields[11]), let system = Double(fields[12])
    else { return nil }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// Microseconds on the system's monotonic clock: comparable across threads and processes on this machine.
func nowMicros() -> UInt64 { NIODeadline.now().uptimeNanoseconds / 1000 }

/// Counters and one latency histogram shared by every connection of a run.
final class Tally: Sendable {
    let opened = Atomic<Int>(0)
    let closed = Atomic<Int>(0)
    let failed = Atomic<Int>(0)
    let count = Atomic<Int>(0)
    /// Frame bytes on the wire (headers and payloads as received) and message bytes (inflated) of the counted messages.
    let wireBytes = Atomic<Int>(0)
    let messageBytes = Atomic<Int>(0)
    private let histogram = Mutex(Histogram<UInt64>(highestTrackableValue: 60_000_000))  // microseconds
    private let firstFailure = Mutex<String?>(nil)
    private let kinds = Mutex<[String: Int]>([:])

    func record(since start: UInt64) {
        let elapsed = nowMicros() &- start
        self.histogram.withLock { _ = $0.record(elapsed < 60_000_000 ? elapsed : 60_000_000) }
    }

    func fail(_ reason: String) {
        self.failed.add(1, ordering: .relaxed)
        self.firstFailure.withLock { $0 = $0 ?? reason }
        self.kinds.withLock { $0[String(reason.prefix(80)), default: 0] += 1 }
    }

    /// How many failed for each reason (its first 80 characters: the reasons name no connection).
    var failuresByKind: JSONValue {
        .object(JSONObject(self.kinds.withLock { $0 }.sorted { $0.key < $1.key }.map { JSONObject.Member($0.key, number($0.value)) }))
    }

    var latencies: Histogram<UInt64> { self.histogram.withLock { $0 } }
    var failure: String? { self.firstFailure.withLock { $0 } }

    /// A behaviour that counts opens, closes and failures, plus what the scenario adds.
    func behaviour(
        onOpen: @escaping @Sendable (Link) -> Void = { _ in },
        onText: @escaping @Sendable (ByteBuffer, Link) -> Void = { _, _ in }
    )
        -> Behaviour
    {
        Behaviour(
            onOpen: { link in
                self.opened.add(1, ordering: .relaxed)
                onOpen(link)
            },
            onText: onText,
            onClose: { self.closed.add(1, ordering: .relaxed) },
            onFailure: { self.fail($0) }
        )
    }

    /// Counts one message of the scenario's: what it took on the wire and what it carried.
    func bytes(wire: Int, message: Int) {
        self.wireBytes.add(wire, ordering: .relaxed)
        self.messageBytes.add(message, ordering: .relaxed)
    }

    /// Bytes per counted message (`per`: what the scenario calls one), on the wire and inflated, for the result line.
    func sizes(per: String) -> KeyValuePairs<String, JSONValue> {
        let count = Double(max(self.count.load(ordering: .relaxed), 1))
        return [
            "wire_bytes_per_\(per)": number(Double(self.wireBytes.load(ordering: .relaxed)) / count),
            "message_bytes_per_\(per)": number(Double(self.messageBytes.load(ordering: .relaxed)) / count),
        ]
    }

    /// Failure fields for the result line: how many, and the first one's reason.
    func failures() -> KeyValuePairs<String, JSONValue> {
        ["failed": number(self.failed.load(ordering: .relaxed)), "first_failure": self.failure.map(JSONValue.string) ?? .null]
    }

    /// Latency fields for the result line.
    func percentiles() -> KeyValuePairs<String, JSONValue> {
        let result = self.latencies
        return [
            "p50_ms": milliseconds(result.valueAtPercentile(50)), "p99_ms": milliseconds(result.valueAtPercentile(99)),
            "max_ms": milliseconds(result.max),
        ]
    }
}

/// Polls `condition` every 20 ms until it holds or `seconds` pass; returns whether it held.
@discardableResult
func waitUntil(seconds: Double, _ condition: () -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
    while !condition() {
        guard ContinuousClock.now < deadline else { return false }
        try await Task.sleep(for: .milliseconds(20))
    }
    return true
}

/// Dials `count` connections at `rate` per second, round-robin over `urls`, each with a `userId` of its own; returns
/// the channels that connected (once every dial has finished). With `block` above 1, runs of `block` consecutive
/// connections go to the same URL (connection i to URL (i / block) % urls.count).
func open(
    _ count: Int,
    rate: Int,
    urls: [WebSocketURL],
    dialer: Dialer,
    userPrefix: String = "u",
    block: Int = 1,
    behaviour: Behaviour
) async throws -> [any Channel] {
    try await open(count, rate: rate, urls: urls, dialer: dialer, userPrefix: userPrefix, block: block) { _ in behaviour }
}

/// `open` with each connection's behaviour made from its index.
func open(
    _ count: Int,
    rate: Int,
    urls: [WebSocketURL],
    dialer: Dialer,
    userPrefix: String = "u",
    block: Int = 1,
    behaviours: (Int) -> Behaviour
) async throws -> [any Channel] {
    var dials: [EventLoopFuture<any Channel>] = []
    let started = ContinuousClock.now
    for index in 0..<count {
        let url = urls[index / max(block, 1) % urls.count]
        dials.append(dialer.dial(url.adding("userId", "\(userPrefix)\(index)"), index: index, behaviour: behaviours(index)))
        if index % 50 == 49 {
            let due = started + .milliseconds(Int64(index + 1) * 1000 / Int64(rate))
            if ContinuousClock.now < due { try await Task.sleep(until: due) }
        }
    }
    var channels: [any Channel] = []
    for dial in dials { if let channel = try? await dial.get() { channels.append(channel) } }
    return channels
}

/// Where `needle` ends in `frame` (a byte offset from the reader index), by `memchr` and `memcmp`: the generic
/// `firstRange(of:)` costs microseconds a call and made the generator the bottleneck.
func end(of needle: StaticString, in frame: ByteBuffer) -> Int? {
    frame.withUnsafeReadableBytes { haystack in
        let length = needle.utf8CodeUnitCount
        guard let base = haystack.baseAddress, length > 0 else { return nil }
        var offset = 0
        while offset + length <= haystack.count {
            guard let hit = memchr(base + offset, Int32(needle.utf8Start.pointee), haystack.count - offset - length + 1) else { return nil }
            let at = base.distance(to: UnsafeRawPointer(hit))
            if memcmp(hit, needle.utf8Start, length) == 0 { return at + length }
            offset = at + 1
        }
        return nil
    }
}

func contains(_ frame: ByteBuffer, _ needle: StaticString) -> Bool { end(of: needle, in: frame) != nil }

/// Finds `key` (such as `"t":`) in a frame and reads the number after it, without a JSON parse on the hot path.
func integer(after key: StaticString, in frame: ByteBuffer) -> UInt64? {
    guard let start = end(of: key, in: frame) else { return nil }
    var value: UInt64 = 0
    var any = false
    for byte in frame.readableBytesView.dropFirst(start) {
        guard byte >= 0x30, byte <= 0x39 else { break }
        value = value * 10 + UInt64(byte - 0x30)
        any = true
    }
    return any ? value : nil
}
