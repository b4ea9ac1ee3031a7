import ArgumentParser
import NIOCore
import NIOPosix
import SwitchboardCore
import Synchronization

struct Connections: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Open N idle connections at a bounded rate; server memory per connection.")

    @OptionGroup var target: Target
    @Option var count = 1000
    @Option(help: "New connections per second.") var rate = 2000
    @Option(help: "Seconds to hold them before measuring.") var hold = 2.0

    func run() async throws {
        let before = residentKiB(self.target.pid)
        let tally = Tally()
        let count = self.count
        _ = try await open(count, rate: self.rate, urls: self.target.urls(), dialer: self.target.dialer(), behaviour: tally.behaviour())
        try await waitUntil(seconds: 60) { tally.opened.load(ordering: .relaxed) + tally.failed.load(ordering: .relaxed) >= count }
        try await Task.sleep(for: .milliseconds(Int64(self.hold * 1000)))
        let after = residentKiB(self.target.pid)
        let opened = tally.opened.load(ordering: .relaxed) - tally.closed.load(ordering: .relaxed)
        report(
            [
                "scenario": "connections", "server": .string(self.target.server), "connections": number(opened),
                "rss_before_kib": before.map(number) ?? .null, "rss_after_kib": after.map(number) ?? .null,
                "kib_per_connection": before.flatMap { b in after.map { number(Double($0 - b) / Double(max(opened, 1))) } } ?? .null,
            ],
            tally.failures()
        )
    }
}

struct Churn: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Rounds of N connects then N clean closes; the server's resident memory after each round."
    )

    @OptionGroup var target: Target
    @Option var rounds = 10
    @Option var count = 10_000
    @Option(help: "New connections per second.") var rate = 5000

    func run() async throws {
        let (dialer, urls, count) = (self.target.dialer(), try self.target.urls(), self.count)
        var withConnections: [Int] = []
        var idle: [Int] = []
        var failed = 0
        for round in 0..<self.rounds {
            let tally = Tally()
            let channels = try await open(count, rate: self.rate, urls: urls, dialer: dialer, userPrefix: "r\(round)u", behaviour: tally.behaviour())
            try await waitUntil(seconds: 60) { tally.opened.load(ordering: .relaxed) + tally.failed.load(ordering: .relaxed) >= count }
            withConnections.append(residentKiB(self.target.pid) ?? 0)
            for channel in channels { Dialer.run(on: channel) { $0.close() } }
            try await waitUntil(seconds: 60) { tally.closed.load(ordering: .relaxed) >= tally.opened.load(ordering: .relaxed) }
            try await Task.sleep(for: .seconds(1))
            idle.append(residentKiB(self.target.pid) ?? 0)
            failed += tally.failed.load(ordering: .relaxed)
        }
        let growth = idle.first.flatMap { first in idle.last.map { Double($0 - first) * 100 / Double(max(first, 1)) } }
        report([
            "scenario": "churn", "server": .string(self.target.server), "rounds": number(self.rounds), "connections": number(count),
            "failed": number(failed), "rss_open_kib": .array(withConnections.map(number)), "rss_idle_kib": .array(idle.map(number)),
            "idle_growth_percent": growth.map(number) ?? .null,
        ])
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
        let tally = try await closedLoop(
            self.target,
            on: self.target.dialer(),
            clients: self.clients,
            seconds: self.seconds,
            message: #"{"action":"ping"}"#,
            reply: "pong"
        )
        report(
            [
                "scenario": "pingpong", "server": .string(self.target.server), "clients": number(self.clients),
                "round_trips_per_second": number(Double(tally.count.load(ordering: .relaxed)) / self.seconds),
            ],
            tally.failures(),
            tally.percentiles()
        )
    }
}

/// `clients` connections each sending `message` and, on the frame containing `reply`, recording the round trip and
/// sending again, for `seconds` from when all are open. A frame containing `"error"` counts as a failure.
func closedLoop(_ target: Target, on dialer: Dialer, clients: Int, seconds: Double, message: String, reply: StaticString) async throws -> Tally {
    let tally = Tally()
    let until = Atomic<UInt64>(.max)
    let channels = try await open(
        clients,
        rate: 5000,
        urls: target.urls(),
        dialer: dialer,
        behaviour: tally.behaviour(onText: { frame, link in
            if contains(frame, reply) {
                tally.record(since: link.mark)
                tally.count.add(1, ordering: .relaxed)
            } else if contains(frame, #""action":"connected""#) {
                return  // the welcome frame
            } else {
                tally.fail(String(buffer: frame))  // an error frame, say: counted, and the loop goes on
            }
            let now = nowMicros()
            if now < until.load(ordering: .relaxed) {
                link.mark = now
                link.send(message)
            }
        })
    )
    try await waitUntil(seconds: 30) { tally.opened.load(ordering: .relaxed) + tally.failed.load(ordering: .relaxed) >= clients }
    until.store(nowMicros() + UInt64(seconds * 1_000_000), ordering: .relaxed)
    for channel in channels {
        Dialer.run(on: channel) { link in
            link.mark = nowMicros()
            link.send(message)
        }
    }
    try await Task.sleep(for: .milliseconds(Int64(seconds * 1000) + 1000))  // the last replies too
    return tally
}

struct FanoutOptions: ParsableArguments {
    @Option var members = 1000
    @Option(help: "Messages per second from the sender.") var rate = 100
    @Option var seconds = 5.0
    @Option(help: "New member connections per second.") var connectRate = 2000
}

struct RoomFanout: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "room-fanout",
        abstract: "N members in one room, one sender at R messages/s; delivery latency from an embedded send time, loss."
    )

    @OptionGroup var target: Target
    @OptionGroup var options: FanoutOptions

    func run() async throws { try await fanout(scenario: "room-fanout", target: self.target, options: self.options) }
}

struct ClusterFanout: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster-fanout",
        abstract: "room-fanout with the members spread over several nodes (one --url each) and the sender on the first."
    )

    @OptionGroup var target: Target
    @OptionGroup var options: FanoutOptions

    func run() async throws {
        guard self.target.url.count > 1 else { throw ValidationError("cluster-fanout needs a --url for each of at least two nodes") }
        try await fanout(scenario: "cluster-fanout", target: self.target, options: self.options)
    }
}

/// Members join one room; when all have joined, one sender sends `rate` messages a second carrying their send time,
/// each scheduled on the sender's event loop so pacing does not depend on the delivery work.
func fanout(scenario: String, target: Target, options: FanoutOptions) async throws {
    let (dialer, urls, members, rate) = (target.dialer(), try target.urls(), options.members, options.rate)
    let room = "bench-\(UInt32.random(in: 0...UInt32.max))"
    let join = #"{"action":"joinRoom","roomId":"\#(room)"}"#
    let joined = Tally()
    let delivered = Tally()
    let lastDelivery = Atomic<UInt64>(0)
    _ = try await open(
        members,
        rate: options.connectRate,
        urls: urls,
        dialer: dialer,
        behaviour: joined.behaviour(
            onOpen: { $0.send(join) },
            onText: { frame, _ in
                if let sentAt = integer(after: #""t":"#, in: frame) {
                    delivered.record(since: sentAt)
                    delivered.count.add(1, ordering: .relaxed)
                    lastDelivery.store(nowMicros(), ordering: .relaxed)
                } else if contains(frame, "joinedRoom") {
                    joined.count.add(1, ordering: .relaxed)
                }
            }
        )
    )
    try await waitUntil(seconds: 60) { joined.count.load(ordering: .relaxed) + joined.failed.load(ordering: .relaxed) >= members }
    let senderJoined = Tally()
    let sender = try await open(
        1,
        rate: 1,
        urls: urls,
        dialer: dialer,
        userPrefix: "sender",
        behaviour: senderJoined.behaviour(
            onOpen: { $0.send(join) },
            onText: { frame, _ in
                if contains(frame, "joinedRoom") { senderJoined.count.add(1, ordering: .relaxed) }
            }
        )
    )
    guard try await waitUntil(seconds: 10, { senderJoined.count.load(ordering: .relaxed) == 1 }), let channel = sender.first else {
        throw BenchError("the sender could not join: \(senderJoined.failure ?? "no joinedRoom")")
    }
    let total = Int(Double(rate) * options.seconds)
    let start = NIODeadline.now() + .milliseconds(100)
    for index in 0..<total {
        channel.eventLoop.scheduleTask(deadline: start + .nanoseconds(Int64(index) * 1_000_000_000 / Int64(rate))) {
            Dialer.run(on: channel) { $0.send(#"{"action":"sendMessage","roomId":"\#(room)","message":{"t":\#(nowMicros())}}"#) }
        }
    }
    let expected = total * joined.count.load(ordering: .relaxed)
    let startMicros = start.uptimeNanoseconds / 1000
    try await Task.sleep(for: .milliseconds(Int64(options.seconds * 1000) + 100))
    try await waitUntil(seconds: 10) { delivered.count.load(ordering: .relaxed) >= expected }
    let got = delivered.count.load(ordering: .relaxed)
    report(
        [
            "scenario": .string(scenario), "server": .string(target.server), "nodes": number(urls.count), "members": number(members),
            "rate": number(rate),
            // Over the time the deliveries took, which is longer than the sending when the server falls behind.
            "delivered_per_second": number(Double(got) / max(options.seconds, Double(lastDelivery.load(ordering: .relaxed) &- startMicros) / 1e6)),
            "loss_percent": number(Double(expected - got) * 100 / Double(max(expected, 1))),
        ],
        joined.failures(),
        delivered.percentiles()
    )
}

/// Prints one result line made of several groups of fields.
func report(_ first: KeyValuePairs<String, JSONValue>, _ rest: KeyValuePairs<String, JSONValue>...) {
    var members: [JSONObject.Member] = []
    for group in [first] + rest { for (key, value) in group { members.append(.init(key, value)) } }
    print(JSONValue.object(JSONObject(members)).jsonString)
}
