import Dispatch
import NIOCore
import NIOEmbedded
import NIOPosix
import Prometheus
import SwitchboardConfiguration
import SwitchboardCore
import Synchronization
import Testing

@testable import SwitchboardGateway

/// The hub delivers to any ``Connection``: one encode per encoding per fan-out, one flush per recipient per loop turn.
@Suite struct LocalHubTests {
    /// Prefixes every frame with its tag, and counts how often it encoded.
    final class CountingEncoding: FrameEncoding {
        let tag: UInt8
        let encodes = Atomic<Int>(0)

        init(tag: UInt8) { self.tag = tag }

        func encode(_ kind: OutboundFrame.Kind, _ payload: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
            self.encodes.add(1, ordering: .relaxed)
            var bytes = allocator.buffer(bytes: [self.tag])
            bytes.writeImmutableBuffer(payload)
            return bytes
        }

        var count: Int { self.encodes.load(ordering: .relaxed) }
    }

    /// Records what the hub does to it; touched only on its loop.
    final class RecordingConnection: Connection, @unchecked Sendable {
        let id = ConnectionID.random()
        let userId: String
        let encoding: any FrameEncoding
        var written: [ByteBuffer] = []
        var flushes = 0
        var commands: [ConnectionCommand] = []
        var ticks: [NIODeadline] = []
        var room = true
        private var waitsForFlush = false

        init(_ userId: String, _ encoding: any FrameEncoding) { (self.userId, self.encoding) = (userId, encoding) }

        func write(_ encoded: ByteBuffer) -> Bool {
            self.written.append(encoded)
            defer { self.waitsForFlush = true }
            return !self.waitsForFlush
        }
        func flush() {
            self.flushes += 1
            self.waitsForFlush = false
        }
        func perform(_ command: ConnectionCommand) { self.commands.append(command) }
        func tick(now: NIODeadline) { self.ticks.append(now) }
        func hasRoom(for bytes: Int) -> Bool { self.room }
        var lastActiveAt: Int64 { 0 }
        var queuedBytes: Int { 0 }
    }

    func hub(_ group: any EventLoopGroup) -> LocalHub {
        LocalHub(group: group, metrics: GatewayMetrics(registry: PrometheusCollectorRegistry(), routes: GatewayConfiguration().routes))
    }

    let lobby = RoomID("lobby")!
    let frame = OutboundFrame(.text, Array("hi".utf8))

    @Test func aRoomFanOutEncodesOncePerEncodingAndFlushesOncePerTurn() {
        let loop = EmbeddedEventLoop()
        let hub = self.hub(loop)
        let shard = hub.shard(on: loop)
        let (json, other) = (CountingEncoding(tag: 1), CountingEncoding(tag: 2))
        let (a, b, c, sender) = (
            RecordingConnection("a", json), RecordingConnection("b", json), RecordingConnection("c", other), RecordingConnection("s", json)
        )
        for connection in [a, b, c, sender] {
            shard.add(connection)
            shard.join(self.lobby, connection)
        }
        hub.deliver(self.frame, to: .room(self.lobby, excluding: sender.id))
        loop.run()
        #expect(json.count == 1)
        #expect(other.count == 1)
        #expect(a.written == [ByteBuffer(bytes: [1] + self.frame.bytes)])
        #expect(b.written == a.written)
        #expect(c.written == [ByteBuffer(bytes: [2] + self.frame.bytes)])
        #expect(sender.written.isEmpty)
        #expect([a, b, c, sender].map(\.flushes) == [1, 1, 1, 0])

        // Two frames in one loop turn: each recipient is flushed once, after both.
        hub.deliver(self.frame, to: .room(self.lobby, excluding: sender.id))
        hub.deliver(self.frame, to: .room(self.lobby, excluding: sender.id))
        loop.run()
        #expect([a, b, c].map(\.written.count) == [3, 3, 3])
        #expect([a, b, c, sender].map(\.flushes) == [2, 2, 2, 0])
        hub.deliver(self.frame, to: .everyone)
        loop.run()
        #expect([a, b, c, sender].map(\.flushes) == [3, 3, 3, 1])
    }

    @Test func countsEachAudience() {
        let loop = EmbeddedEventLoop()
        let hub = self.hub(loop)
        let shard = hub.shard(on: loop)
        let encoding = CountingEncoding(tag: 1)
        let (a1, a2, b, loner) = (
            RecordingConnection("a", encoding), RecordingConnection("a", encoding), RecordingConnection("b", encoding),
            RecordingConnection("c", encoding)
        )
        for connection in [a1, a2, b, loner] { shard.add(connection) }
        for connection in [a1, a2, b] { shard.join(self.lobby, connection) }
        #expect(shard.count(.connection(a1.id)) == 1)
        #expect(shard.count(.connection(.random())) == 0)
        #expect(shard.count(.room(self.lobby)) == 3)
        #expect(shard.count(.room(self.lobby, excluding: b.id)) == 2)
        #expect(shard.count(.room(self.lobby, excluding: loner.id)) == 3)
        #expect(shard.count(.room(RoomID("empty")!)) == 0)
        #expect(shard.count(.user("a")) == 2)
        #expect(shard.count(.user("nobody")) == 0)
        #expect(shard.count(.everyone) == 4)
    }

    @Test func removeDropsTheConnectionFromItsRoomsAndUser() {
        let loop = EmbeddedEventLoop()
        let hub = self.hub(loop)
        let shard = hub.shard(on: loop)
        let encoding = CountingEncoding(tag: 1)
        let (gone, stays) = (RecordingConnection("a", encoding), RecordingConnection("b", encoding))
        let other = RoomID("other")!
        for connection in [gone, stays] {
            shard.add(connection)
            shard.join(self.lobby, connection)
        }
        shard.join(other, gone)
        shard.remove(gone, rooms: [self.lobby, other])
        #expect(shard.count(.room(self.lobby)) == 1)
        #expect(shard.count(.room(other)) == 0)
        #expect(shard.count(.user("a")) == 0)
        #expect(shard.count(.everyone) == 1)
        hub.deliver(self.frame, to: .room(self.lobby))
        hub.deliver(self.frame, to: .room(other))
        hub.perform(.join(other), on: gone.id)
        loop.run()
        #expect(gone.written.isEmpty)
        #expect(gone.commands.isEmpty)
        #expect(stays.written.count == 1)
    }

    @Test func tickAndCloseAllReachEveryConnection() {
        let loop = EmbeddedEventLoop()
        let hub = self.hub(loop)
        let encoding = CountingEncoding(tag: 1)
        let connections = (0..<3).map { RecordingConnection("u\($0)", encoding) }
        for connection in connections { hub.shard(on: loop).add(connection) }
        let now = NIODeadline.uptimeNanoseconds(42)
        hub.tick(on: loop, now: now)
        #expect(connections.map(\.ticks) == [[now], [now], [now]])
        hub.closeAll(code: 1001, reason: "server draining")
        loop.run()
        #expect(connections.allSatisfy { $0.commands == [.close(code: 1001, reason: "server draining")] })
    }

    /// On real loops: the direct send and the count ask every shard and wait for their answers.
    @Test func deliverDirectAndCountGatherEveryShard() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let hub = self.hub(group)
        let loops = Array(group.makeIterator())
        let encoding = CountingEncoding(tag: 1)
        let (ready, busy) = (RecordingConnection("a", encoding), RecordingConnection("b", encoding))
        busy.room = false
        try await loops[0].submit { hub.shard(on: loops[0]).add(ready) }.get()
        try await loops[1].submit { hub.shard(on: loops[1]).add(busy) }.get()
        #expect(await hub.count(.everyone) == 2)
        #expect(await hub.deliverDirect(self.frame, to: ready.id) == .delivered)
        #expect(await hub.deliverDirect(self.frame, to: busy.id) == .busy)
        #expect(await hub.deliverDirect(self.frame, to: .random()) == .notHere)
        #expect(try await loops[0].submit { ready.written.count }.get() == 1)
        #expect(try await loops[1].submit { busy.written.count }.get() == 0)
        try await group.shutdownGracefully()
    }

    /// A room's offsets are assigned under its lock, then handed to every loop. A frame handed over on a loop while
    /// deliveries queued there by other threads have not run yet goes behind them, never inline ahead: clients drop a
    /// message whose offset is not above the last they saw.
    @Test func aDeliveryOnALoopGoesBehindWhatOtherThreadsQueuedThere() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let hub = self.hub(group)
        let member = RecordingConnection("m", CountingEncoding(tag: 1))
        try await loop.submit {
            hub.shard(on: loop).add(member)
            hub.shard(on: loop).join(self.lobby, member)
        }.get()
        let (five, six) = (OutboundFrame(.text, Array("5".utf8)), OutboundFrame(.text, Array("6".utf8)))
        let (running, queued, done) = (DispatchSemaphore(value: 0), DispatchSemaphore(value: 0), DispatchSemaphore(value: 0))
        loop.execute {
            // A connection of this loop publishes offset 6 just after another thread queued offset 5 here.
            running.signal()
            queued.wait()
            hub.deliver(six, to: .room(self.lobby))
            done.signal()
        }
        running.wait()
        hub.deliver(five, to: .room(self.lobby))
        queued.signal()
        done.wait()
        let written = try await loop.submit { member.written.map { String(buffer: $0) } }.get()
        #expect(written == ["\u{1}5", "\u{1}6"])
        try await group.shutdownGracefully()
    }

    @Test func withNothingQueuedADeliveryOnItsOwnLoopIsWrittenAtOnce() {
        let loop = EmbeddedEventLoop()
        let hub = self.hub(loop)
        let member = RecordingConnection("m", CountingEncoding(tag: 1))
        hub.shard(on: loop).add(member)
        hub.deliver(self.frame, to: .connection(member.id))
        #expect(member.written.count == 1)  // before the loop runs: a sender's reply cannot overtake it
    }

    /// Deflating is the costly encoding: a fan-out over several loops encodes once, and every loop writes those bytes.
    @Test func aFanOutOverSeveralLoopsEncodesOnce() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 3)
        let hub = self.hub(group)
        let encoding = CountingEncoding(tag: 1)
        var members: [(any EventLoop, RecordingConnection)] = []
        for loop in group.makeIterator() {
            let member = RecordingConnection("m", encoding)
            try await loop.submit {
                hub.shard(on: loop).add(member)
                hub.shard(on: loop).join(self.lobby, member)
            }.get()
            members.append((loop, member))
        }
        hub.deliver(self.frame, to: .room(self.lobby))
        for (loop, member) in members {
            let written = try await loop.submit { member.written }.get()
            #expect(written == [ByteBuffer(bytes: [1] + self.frame.bytes)])
        }
        #expect(encoding.count == 1)
        try await group.shutdownGracefully()
    }
}
