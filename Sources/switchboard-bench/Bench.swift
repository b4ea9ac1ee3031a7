import ArgumentParser
import Foundation
import Histogram
import Logging
import NIOCore
import NIOWebSocket
import SwitchboardCore
import Synchronization
import WSClient

/// Scenarios against any server speaking the seed protocol, one JSON line each (bench/run adds the table and ratios).
/// Every run is bounded in time.
@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchboard-bench",
        abstract: "Load scenarios for Switchboard and its peers; prints one JSON line per run.",
        subcommands: [Connections.self, PingPong.self, RoomFanout.self]
    )
}

struct Target: ParsableArguments {
    @Option(help: "WebSocket URLs (several: connections are spread over them, as over cluster nodes).")
    var url: [String] = ["ws://127.0.0.1:8080/ws"]

    @Option(help: "Server PID, for resident memory (/proc/PID/status).")
    var pid: Int32?

    @Option(help: "Label for the output.")
    var server = "switchboard"
}

/// One scenario's result line.
func report(_ fields: KeyValuePairs<String, JSONValue>) {
    var members: [JSONObject.Member] = []
    for (key, value) in fields { members.append(.init(key, value)) }
    print(JSONValue.object(JSONObject(members)).jsonString)
}

func number(_ value: some BinaryInteger) -> JSONValue { .number(String(value)) }
func number(_ value: Double) -> JSONValue { .number(String(format: "%.3f", value)) }

func residentKiB(_ pid: Int32?) -> Int? {
    guard let pid, let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
    return status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }.flatMap {
        Int($0.split(separator: " ", omittingEmptySubsequences: true)[1])
    }
}

let logger = Logger(label: "bench")

/// Shared counters and latencies across the client tasks (`Atomic` and `Mutex` cannot be captured by escaping closures).
final class Tally: Sendable {
    let count = Atomic<Int>(0)
    let extra = Atomic<Int>(0)
    private let histogram = Mutex(Histogram<UInt64>(highestTrackableValue: 60_000_000))  // microseconds

    func record(micros: Int64) { _ = self.histogram.withLock { $0.record(UInt64(max(0, micros))) } }
    var latencies: Histogram<UInt64> { self.histogram.withLock { $0 } }
}

func microseconds(_ duration: Duration) -> Int64 {
    duration.components.seconds * 1_000_000 + duration.components.attoseconds / 1_000_000_000_000
}

/// Opens a WebSocket that stays open until `until` completes; `onMessage` sees every text message.
func session(
    url: String,
    onOpen: @escaping @Sendable (WebSocketOutboundWriter) async throws -> Void = { _ in },
    onMessage: @escaping @Sendable (String, WebSocketOutboundWriter) async throws -> Bool
) async throws {
    var configuration = WebSocketClientConfiguration()
    configuration.autoPing = .disabled
    try await WebSocketClient.connect(url: url, configuration: configuration, logger: logger) { inbound, outbound, _ in
        try await onOpen(outbound)
        for try await message in inbound.messages(maxSize: 1 << 20) {
            guard case .text(let text) = message else { continue }
            if try await !onMessage(text, outbound) { break }
        }
        try? await outbound.close(.normalClosure, reason: nil)
    }
}

struct Connections: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Open N idle connections at a bounded rate; server memory per connection.")

    @OptionGroup var target: Target
    @Option var count = 1000
    @Option(help: "New connections per second.") var rate = 2000
    @Option(help: "Seconds to hold them before measuring.") var hold = 2.0

    func run() async throws {
        let before = residentKiB(self.target.pid)
        let tally = Tally()
        let (count, rate, hold, urls, pid, server) = (self.count, self.rate, self.hold, self.target.url, self.target.pid, self.target.server)
        let started = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<count {
                let url = urls[index % urls.count]
                group.addTask {
                    try? await session(url: url, onOpen: { _ in tally.count.add(1, ordering: .relaxed) }) { _, _ in true }
                }
                if index % 100 == 99 {
                    let due = started + .milliseconds(Int64(index + 1) * 1000 / Int64(rate))
                    if ContinuousClock.now < due { try await Task.sleep(until: due) }
                }
            }
            let deadline = ContinuousClock.now + .seconds(60)
            while tally.count.load(ordering: .relaxed) < count, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
            try await Task.sleep(for: .seconds(hold))
            let after = residentKiB(pid)
            let open = tally.count.load(ordering: .relaxed)
            report([
                "scenario": "connections", "server": .string(server), "connections": number(open),
                "rss_before_kib": before.map(number) ?? .null, "rss_after_kib": after.map(number) ?? .null,
                "kib_per_connection": before.flatMap { b in after.map { number(Double($0 - b) / Double(max(open, 1))) } } ?? .null,
            ])
            group.cancelAll()
        }
    }
}

struct PingPong: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pingpong",
        abstract: "C clients in a closed loop of ping and pong; round trips per second and latency."
    )

    @OptionGroup var target: Target
    @Option var clients = 50
    @Option var seconds = 5.0

    func run() async throws {
        let tally = Tally()
        let deadline = ContinuousClock.now + .milliseconds(Int64(self.seconds * 1000))
        let ping = #"{"action":"ping"}"#
        let urls = self.target.url
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<self.clients {
                let url = urls[index % urls.count]
                group.addTask {
                    // One outstanding ping per client: the sent time lives in an atomic as microseconds since `epoch`.
                    let epoch = ContinuousClock.now
                    let sent = Tally()
                    try await session(
                        url: url,
                        onOpen: { outbound in
                            sent.count.store(Int(microseconds(.now - epoch)), ordering: .relaxed)
                            try await outbound.writeTextMessage(ping)
                        }
                    ) { text, outbound in
                        guard text.contains("pong") else { return true }
                        tally.record(micros: microseconds(.now - epoch) - Int64(sent.count.load(ordering: .relaxed)))
                        guard ContinuousClock.now < deadline else { return false }
                        sent.count.store(Int(microseconds(.now - epoch)), ordering: .relaxed)
                        try await outbound.writeTextMessage(ping)
                        return true
                    }
                }
            }
            try await group.waitForAll()
        }
        let result = tally.latencies
        report([
            "scenario": "pingpong", "server": .string(self.target.server), "clients": number(self.clients),
            "round_trips_per_second": number(Double(result.totalCount) / self.seconds),
            "p50_ms": number(Double(result.valueAtPercentile(50)) / 1000), "p99_ms": number(Double(result.valueAtPercentile(99)) / 1000),
            "max_ms": number(Double(result.max) / 1000),
        ])
    }
}

struct RoomFanout: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "room-fanout",
        abstract: "N members in one room, one sender at R messages/s; delivery latency from an embedded send time, loss."
    )

    @OptionGroup var target: Target
    @Option var members = 1000
    @Option(help: "Messages per second from the sender.") var rate = 100
    @Option var seconds = 5.0

    func run() async throws {
        let tally = Tally()  // count: delivered; extra: joined
        let epoch = ContinuousClock.now
        let urls = self.target.url
        let (rate, members) = (self.rate, self.members)
        let total = Int(Double(self.rate) * self.seconds)
        let room = "bench-\(UInt32.random(in: 0...UInt32.max))"
        let join = #"{"action":"joinRoom","roomId":"\#(room)"}"#
        let done = ContinuousClock.now + .milliseconds(Int64(self.seconds * 1000)) + .seconds(60)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<members {
                let url = urls[index % urls.count]
                group.addTask {
                    let received = Tally()
                    try? await session(url: url, onOpen: { try await $0.writeTextMessage(join) }) { text, _ in
                        if text.contains("joinedRoom") {
                            tally.extra.add(1, ordering: .relaxed)
                        } else if text.contains(#""action":"message""#), let sentAt = RoomFanout.sentAt(text) {
                            tally.record(micros: microseconds(.now - epoch) - sentAt)
                            tally.count.add(1, ordering: .relaxed)
                            received.count.add(1, ordering: .relaxed)
                        }
                        return received.count.load(ordering: .relaxed) < total && ContinuousClock.now < done
                    }
                }
            }
            while tally.extra.load(ordering: .relaxed) < members, ContinuousClock.now < done { try await Task.sleep(for: .milliseconds(20)) }
            try await session(
                url: urls[0],
                onOpen: { outbound in
                    try await outbound.writeTextMessage(join)
                    let start = ContinuousClock.now
                    for n in 0..<total {
                        let due = start + .microseconds(Int64(n) * 1_000_000 / Int64(rate))
                        if ContinuousClock.now < due { try await Task.sleep(until: due) }
                        let micros = microseconds(.now - epoch)
                        try await outbound.writeTextMessage(#"{"action":"sendMessage","roomId":"\#(room)","message":{"t":\#(micros)}}"#)
                    }
                    try await Task.sleep(for: .seconds(2))
                    try await outbound.close(.normalClosure, reason: nil)
                }
            ) { _, _ in true }
            let settle = ContinuousClock.now + .seconds(10)
            while tally.count.load(ordering: .relaxed) < total * members, ContinuousClock.now < settle {
                try await Task.sleep(for: .milliseconds(50))
            }
            group.cancelAll()
        }
        let result = tally.latencies
        let expected = total * self.members
        let got = tally.count.load(ordering: .relaxed)
        report([
            "scenario": "room-fanout", "server": .string(self.target.server), "members": number(self.members), "rate": number(self.rate),
            "delivered_per_second": number(Double(got) / self.seconds),
            "loss_percent": number(Double(expected - got) * 100 / Double(max(expected, 1))),
            "p50_ms": number(Double(result.valueAtPercentile(50)) / 1000), "p99_ms": number(Double(result.valueAtPercentile(99)) / 1000),
            "max_ms": number(Double(result.max) / 1000),
        ])
    }

    /// The `t` the sender embedded, without a full JSON parse on the hot path.
    static func sentAt(_ text: String) -> Int64? {
        guard let range = text.range(of: #"{"t":"#) else { return nil }
        return Int64(text[range.upperBound...].prefix { $0.isNumber })
    }
}
