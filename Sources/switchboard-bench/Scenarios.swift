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
        let (count, dialer) = (self.count, self.target.dialer())
        _ = try await open(count, rate: self.rate, urls: self.target.urls(), dialer: dialer, behaviour: tally.behaviour())
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
            tally.failures(),
            dialer.extensionFields()
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

struct Storm: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: """
            N connections with no rate limit, at most K handshakes in flight; admitted/s over the whole burst, handshake \
            latency (TCP connect start to the 101), failures by kind, the server's CPU.
            """
    )

    @OptionGroup var target: Target
    @Option var count = 10_000
    @Option(help: "Handshakes in flight at most: each one that ends, either way, starts the next.") var inFlight = 1000
    @Option(help: "Seconds the burst may take; handshakes still in flight then count as timed out.") var timeout = 60.0

    func run() async throws {
        let (dialer, urls, count) = (self.target.dialer(), try self.target.urls(), self.count)
        let tally = Tally()
        let lastEnd = Atomic<UInt64>(0)
        let channels = Mutex<[any Channel]>([])
        @Sendable func dialNext() {
            let index = tally.count.add(1, ordering: .relaxed).oldValue  // the next connection to dial
            guard index < count else { return }
            let started = nowMicros()
            let ended: @Sendable () -> Void = {
                lastEnd.store(nowMicros(), ordering: .relaxed)
                dialNext()
            }
            let behaviour = Behaviour(
                onOpen: { _ in
                    tally.record(since: started)
                    tally.opened.add(1, ordering: .relaxed)
                    ended()
                },
                onClose: { tally.closed.add(1, ordering: .relaxed) },
                onFailure: {
                    tally.fail($0)
                    ended()
                }
            )
            dialer.dial(urls[index % urls.count].adding("userId", "s\(index)"), index: index, behaviour: behaviour).whenSuccess { channel in
                channels.withLock { $0.append(channel) }
            }
        }
        let (cpuBefore, start) = (cpuSeconds(self.target.pid), nowMicros())
        for _ in 0..<min(self.inFlight, count) { dialNext() }
        let done = { tally.opened.load(ordering: .relaxed) + tally.failed.load(ordering: .relaxed) }
        try await waitUntil(seconds: self.timeout) { done() >= count }
        let (finished, opened, end) = (done(), tally.opened.load(ordering: .relaxed), lastEnd.load(ordering: .relaxed))
        let cpu = cpuSeconds(self.target.pid).flatMap { after in cpuBefore.map { (after - $0) * 1e6 / Double(nowMicros() - start) } }
        let wall = Double(max(end, start + 1) - start) / 1e6
        for channel in channels.withLock({ $0 }) { Dialer.run(on: channel) { $0.close() } }
        try await waitUntil(seconds: 10) { tally.closed.load(ordering: .relaxed) >= tally.opened.load(ordering: .relaxed) }
        report(
            [
                "scenario": "storm", "server": .string(self.target.server), "connections": number(count),
                "in_flight": number(self.inFlight), "admitted": number(opened), "burst_seconds": number(wall),
                "admitted_per_second": number(Double(opened) / wall), "timed_out": number(count - finished),
                "server_cpu_percent": cpu.map { number($0 * 100) } ?? .null,
                "failures_by_kind": tally.failuresByKind,
            ],
            tally.failures(),
            tally.percentiles()
        )
    }
}

struct PingPong: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pingpong",
        abstract: """
            C clients in a closed loop of ping and pong; round trips per second and latency. With --payload-bytes, each \
            client is alone in a room of its own and the round trip is a chat message of that size sent to the room and \
            delivered back to it, so the server's answer is big enough to compress.
            """
    )

    @OptionGroup var target: Target
    @Option var clients = 50
    @Option var seconds = 5.0
    @Option(help: "0: ping and pong. More: a sendMessage of about this many bytes, and the room's message back.") var payloadBytes = 0

    func run() async throws {
        let dialer = self.target.dialer()
        let loop: LoopResult
        if self.payloadBytes > 0 {
            let (chat, tag) = (ChatPayload(bytes: self.payloadBytes), UInt32.random(in: 0...UInt32.max))
            let sequence = Atomic<Int>(0)
            loop = try await closedLoop(
                self.target,
                on: dialer,
                clients: self.clients,
                seconds: self.seconds,
                room: { "ping-\(tag)-\($0)" },
                message: { link in
                    chat.frame(room: "ping-\(tag)-\(link.tag)", sentAt: link.mark, sequence: sequence.add(1, ordering: .relaxed).oldValue)
                },
                reply: #""action":"message""#
            )
        } else {
            loop = try await closedLoop(
                self.target,
                on: dialer,
                clients: self.clients,
                seconds: self.seconds,
                message: #"{"action":"ping"}"#,
                reply: "pong"
            )
        }
        let roundTrips = loop.tally.count.load(ordering: .relaxed)
        report(
            [
                "scenario": "pingpong", "server": .string(self.target.server), "clients": number(self.clients),
                "payload_bytes": number(self.payloadBytes),
                "round_trips_per_second": number(Double(roundTrips) / self.seconds),
                "server_cpu_us_per_round_trip": loop.serverCPUSeconds.map { number($0 * 1e6 / Double(max(roundTrips, 1))) } ?? .null,
                "generator_cpu_us_per_round_trip": loop.generatorCPUSeconds.map { number($0 * 1e6 / Double(max(roundTrips, 1))) } ?? .null,
            ],
            loop.tally.failures(),
            loop.tally.percentiles(),
            loop.tally.sizes(per: "reply"),
            dialer.extensionFields()
        )
    }
}

/// What a closed loop counted, and the CPU seconds the server and the generator used from the first send to the last
/// reply awaited.
struct LoopResult {
    var tally: Tally
    var serverCPUSeconds: Double?
    var generatorCPUSeconds: Double?
}

/// `closedLoop` with the same message every time.
func closedLoop(_ target: Target, on dialer: Dialer, clients: Int, seconds: Double, message: String, reply: StaticString) async throws -> LoopResult {
    try await closedLoop(target, on: dialer, clients: clients, seconds: seconds, room: nil, message: { _ in message }, reply: reply)
}

/// `clients` connections each sending `message` and, on the frame containing `reply`, recording the round trip and
/// sending again, for `seconds` from when all are open. A frame containing `"error"` counts as a failure. With `room`,
/// client i first joins room `room(i)`, and the loop starts when all have joined. `message` gets the client's link:
/// its `mark` is the send time, its `tag` the client's index.
func closedLoop(
    _ target: Target,
    on dialer: Dialer,
    clients: Int,
    seconds: Double,
    room: (@Sendable (Int) -> String)?,
    message: @escaping @Sendable (Link) -> String,
    reply: StaticString
) async throws -> LoopResult {
    let tally = Tally()
    let joined = Atomic<Int>(0)
    let until = Atomic<UInt64>(.max)
    let channels = try await open(clients, rate: 5000, urls: target.urls(), dialer: dialer) { index in
        tally.behaviour(
            onOpen: { link in
                link.tag = index
                if let room { link.send(#"{"action":"joinRoom","roomId":"\#(room(index))"}"#) }
            },
            onText: { frame, link in
                if contains(frame, reply) {
                    tally.record(since: link.mark)
                    tally.count.add(1, ordering: .relaxed)
                    tally.bytes(wire: link.wireBytes, message: frame.readableBytes)
                } else if contains(frame, #""action":"connected""#) {
                    return  // the welcome frame
                } else if room != nil, contains(frame, #""joinedRoom""#) {
                    joined.add(1, ordering: .relaxed)
                    return
                } else {
                    tally.fail(String(buffer: frame))  // an error frame, say: counted, and the loop goes on
                }
                let now = nowMicros()
                if now < until.load(ordering: .relaxed) {
                    link.mark = now
                    link.send(message(link))
                }
            }
        )
    }
    try await waitUntil(seconds: 30) { tally.opened.load(ordering: .relaxed) + tally.failed.load(ordering: .relaxed) >= clients }
    if room != nil {
        guard try await waitUntil(seconds: 30, { joined.load(ordering: .relaxed) >= tally.opened.load(ordering: .relaxed) }) else {
            throw BenchError("\(tally.opened.load(ordering: .relaxed) - joined.load(ordering: .relaxed)) clients could not join their rooms")
        }
    }
    let (cpuBefore, generatorBefore) = (cpuSeconds(target.pid), cpuSeconds(getpid()))
    until.store(nowMicros() + UInt64(seconds * 1_000_000), ordering: .relaxed)
    for channel in channels {
        Dialer.run(on: channel) { link in
            link.mark = nowMicros()
            link.send(message(link))
        }
    }
    try await Task.sleep(for: .milliseconds(Int64(seconds * 1000) + 1000))  // the last replies too
    return LoopResult(
        tally: tally,
        serverCPUSeconds: cpuSeconds(target.pid).flatMap { after in cpuBefore.map { after - $0 } },
        generatorCPUSeconds: cpuSeconds(getpid()).flatMap { after in generatorBefore.map { after - $0 } }
    )
}

struct FanoutOptions: ParsableArguments {
    @Option var members = 1000
    @Option(help: "Messages per second from the sender (from each, with several rooms).") var rate = 100
    @Option var seconds = 5.0
    @Option(help: "New member connections per second.") var connectRate = 2000
    @Option(help: "0: each message is just its send time. More: a chat message (ChatPayload) of about this many bytes.")
    var payloadBytes = 0
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

struct ManyRooms: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "many-rooms",
        abstract: "room-fanout in R rooms of N members, one sender per room at R messages/s each, the rooms' sends interleaved."
    )

    @OptionGroup var target: Target
    @OptionGroup var options: FanoutOptions
    @Option var rooms = 1000

    func run() async throws { try await fanout(scenario: "many-rooms", target: self.target, options: self.options, rooms: self.rooms) }
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

/// Members join `rooms` rooms (member i room i % rooms); when all have joined, one sender per room sends `rate` messages a
/// second carrying their send time, the rooms' sends interleaved evenly and each scheduled on its sender's event loop so
/// pacing does not depend on the delivery work.
func fanout(scenario: String, target: Target, options: FanoutOptions, rooms: Int = 1) async throws {
    let (dialer, urls, members, rate) = (target.dialer(), try target.urls(), options.members * rooms, options.rate)
    let tag = UInt32.random(in: 0...UInt32.max)
    let roomIds = (0..<rooms).map { "bench-\(tag)-\($0)" }
    let joins = roomIds.map { #"{"action":"joinRoom","roomId":"\#($0)"}"# }
    let joined = Tally()
    let delivered = Tally()
    let lastDelivery = Atomic<UInt64>(0)
    let onText: @Sendable (ByteBuffer, Link) -> Void = { frame, link in
        if let sentAt = integer(after: #""t":"#, in: frame) {
            delivered.record(since: sentAt)
            delivered.count.add(1, ordering: .relaxed)
            delivered.bytes(wire: link.wireBytes, message: frame.readableBytes)
            lastDelivery.store(nowMicros(), ordering: .relaxed)
        } else if contains(frame, "joinedRoom") {
            joined.count.add(1, ordering: .relaxed)
        }
    }
    // Member i joins room i % rooms; over several nodes, a room's members alternate between them (with URLs taken
    // round-robin by index, an even number of rooms over two nodes would put each room wholly on one node).
    _ = try await open(members, rate: options.connectRate, urls: urls, dialer: dialer, block: rooms) { index in
        joined.behaviour(onOpen: { $0.send(joins[index % rooms]) }, onText: onText)
    }
    try await waitUntil(seconds: 60) { joined.count.load(ordering: .relaxed) + joined.failed.load(ordering: .relaxed) >= members }
    let senderJoined = Tally()
    let senders = try await open(rooms, rate: options.connectRate, urls: urls, dialer: dialer, userPrefix: "sender") { index in
        senderJoined.behaviour(
            onOpen: { $0.send(joins[index]) },
            onText: { frame, _ in
                if contains(frame, "joinedRoom") { senderJoined.count.add(1, ordering: .relaxed) }
            }
        )
    }
    guard try await waitUntil(seconds: 30, { senderJoined.count.load(ordering: .relaxed) == rooms }), senders.count == rooms else {
        throw BenchError("\(rooms - senderJoined.count.load(ordering: .relaxed)) senders could not join: \(senderJoined.failure ?? "no joinedRoom")")
    }
    let total = Int(Double(rate * rooms) * options.seconds)
    let start = NIODeadline.now() + .milliseconds(100)
    let chat = options.payloadBytes > 0 ? ChatPayload(bytes: options.payloadBytes) : nil
    for index in 0..<total {
        let (channel, room) = (senders[index % rooms], roomIds[index % rooms])
        channel.eventLoop.scheduleTask(deadline: start + .nanoseconds(Int64(index) * 1_000_000_000 / Int64(rate * rooms))) {
            Dialer.run(on: channel) { link in
                let now = nowMicros()
                link.send(
                    chat?.frame(room: room, sentAt: now, sequence: index) ?? #"{"action":"sendMessage","roomId":"\#(room)","message":{"t":\#(now)}}"#
                )
            }
        }
    }
    let expected = total * joined.count.load(ordering: .relaxed) / rooms
    let (nodePids, redisPids) = ([target.pid] + target.nodePid.map(Optional.some), target.redisPid.map(Optional.some))
    let (startMicros, cpuBefore, cpuFrom) = (start.uptimeNanoseconds / 1000, cpuSeconds(target.pid), nowMicros())
    let generatorBefore = cpuSeconds(getpid())
    let (nodesBefore, redisBefore) = (totalCPUSeconds(nodePids), totalCPUSeconds(redisPids))
    try await Task.sleep(for: .milliseconds(Int64(options.seconds * 1000) + 100))
    try await waitUntil(seconds: 10) { delivered.count.load(ordering: .relaxed) >= expected }
    let got = delivered.count.load(ordering: .relaxed)
    // Over the time the deliveries took, which is longer than the sending when the server falls behind.
    let seconds = max(options.seconds, Double(lastDelivery.load(ordering: .relaxed) &- startMicros) / 1e6)
    let cpuUsed = cpuSeconds(target.pid).flatMap { after in cpuBefore.map { after - $0 } }
    let cpu = cpuUsed.map { $0 * 1e6 / Double(nowMicros() - cpuFrom) }
    // The generator's own share of its core over the same time: near 100 % it, not the server, may set the latency.
    let generator = cpuSeconds(getpid()).flatMap { after in generatorBefore.map { (after - $0) * 1e6 / Double(nowMicros() - cpuFrom) } }
    let window = Double(nowMicros() - cpuFrom) / 1e6
    let nodesCPU = target.nodePid.isEmpty ? nil : totalCPUSeconds(nodePids).flatMap { after in nodesBefore.map { (after - $0) / window } }
    let redisCPU = redisPids.isEmpty ? nil : totalCPUSeconds(redisPids).flatMap { after in redisBefore.map { (after - $0) / window } }
    report(
        [
            "scenario": .string(scenario), "server": .string(target.server), "nodes": number(urls.count), "rooms": number(rooms),
            "members": number(options.members), "rate": number(rate), "payload_bytes": number(options.payloadBytes),
            "delivered_per_second": number(Double(got) / seconds),
            "loss_percent": number(Double(expected - got) * 100 / Double(max(expected, 1))),
            "server_cpu_percent": cpu.map { number($0 * 100) } ?? .null,  // from the first send to the last delivery awaited
            "server_cpu_us_per_delivery": cpuUsed.map { number($0 * 1e6 / Double(max(got, 1))) } ?? .null,
            "generator_cpu_percent": generator.map { number($0 * 100) } ?? .null,
            "nodes_cpu_percent": nodesCPU.map { number($0 * 100) } ?? .null,  // every node (--pid and --node-pid), same window
            "redis_cpu_percent": redisCPU.map { number($0 * 100) } ?? .null,  // every --redis-pid, same window
        ],
        joined.failures(),
        delivered.percentiles(),
        delivered.sizes(per: "delivery"),
        dialer.extensionFields()
    )
}

/// CPU seconds used by all of `pids`; nil if one cannot be read.
func totalCPUSeconds(_ pids: [Int32?]) -> Double? {
    var total = 0.0
    for pid in pids {
        guard let seconds = cpuSeconds(pid) else { return nil }
        total += seconds
    }
    return total
}

/// Prints one result line made of several groups of fields.
func report(_ first: KeyValuePairs<String, JSONValue>, _ rest: KeyValuePairs<String, JSONValue>...) {
    var members: [JSONObject.Member] = []
    for group in [first] + rest { for (key, value) in group { members.append(.init(key, value)) } }
    print(JSONValue.object(JSONObject(members)).jsonString)
}
