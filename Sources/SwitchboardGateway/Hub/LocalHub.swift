import NIOCore
import Prometheus
import SwitchboardCore
import SwitchboardWebSocket
import Synchronization

/// This node's connections, sharded by event loop: each shard is owned by one loop and touched only there, so
/// delivery takes no lock. A frame for an audience costs one hop per loop, then one write per local recipient.
final class LocalHub: LocalDelivery {
    /// One event loop's connections and their room and user indexes. The indexes follow what each connection's
    /// state machine decides (``ConnectionStateMachine/rooms``); the shard only finds recipients.
    final class Shard {
        private(set) var connections: [ConnectionID: any Connection] = [:]
        private var rooms: [RoomID: [ConnectionID: any Connection]] = [:]
        private var users: [String: [ConnectionID: any Connection]] = [:]

        func add(_ connection: any Connection) {
            self.connections[connection.id] = connection
            self.users[connection.userId, default: [:]][connection.id] = connection
        }

        func remove(_ connection: any Connection, rooms: Set<RoomID>) {
            let (id, userId) = (connection.id, connection.userId)
            self.connections.removeValue(forKey: id)
            self.users[userId]?.removeValue(forKey: id)
            if self.users[userId]?.isEmpty == true { self.users.removeValue(forKey: userId) }
            for room in rooms { self.leave(room, connection) }
        }

        func join(_ room: RoomID, _ connection: any Connection) {
            self.rooms[room, default: [:]][connection.id] = connection
        }

        func leave(_ room: RoomID, _ connection: any Connection) {
            self.rooms[room]?.removeValue(forKey: connection.id)
            if self.rooms[room]?.isEmpty == true { self.rooms.removeValue(forKey: room) }
        }

        let metrics: GatewayMetrics
        let loop: any EventLoop
        /// The loop's one permessage-deflate inflater, reset for every message, so no connection keeps zlib memory
        /// between messages (``PerMessageDeflate``); `nil` when zlib could not allocate one.
        private(set) lazy var inflater = try? MessageInflater()
        /// Recipients written to but not flushed yet, and whether a flush of them is queued on the loop.
        private var unflushed: [any Connection] = []
        private var flushQueued = false

        init(metrics: GatewayMetrics, loop: any EventLoop) {
            (self.metrics, self.loop) = (metrics, loop)
        }

        func deliver(_ frame: EncodedFrame, to audience: Audience, allocator: ByteBufferAllocator) {
            let (recipients, wireBytes): (Int, Int)
            switch audience {
            case .connection(let id):
                guard let connection = self.connections[id] else { return }
                (recipients, wireBytes) = self.send(frame, to: CollectionOfOne(connection), excluding: nil, allocator: allocator)
            case .room(let room, let excluded):
                guard let members = self.rooms[room] else { return }
                (recipients, wireBytes) = self.send(frame, to: members.values, excluding: excluded, allocator: allocator)
            case .user(let userId):
                guard let connections = self.users[userId] else { return }
                (recipients, wireBytes) = self.send(frame, to: connections.values, excluding: nil, allocator: allocator)
            case .everyone:
                (recipients, wireBytes) = self.send(frame, to: self.connections.values, excluding: nil, allocator: allocator)
            }
            guard recipients > 0 else { return }
            self.metrics.messagesSent.increment(by: Int64(recipients))
            self.metrics.bytesSent.increment(by: Int64(recipients * frame.frame.bytes.count))
            self.metrics.wireBytesSent.increment(by: Int64(wireBytes))
        }

        /// Writes to every recipient now and flushes them once the loop has handled the rest of this turn's reads:
        /// under load a sender's frames arrive several to a read, and each recipient then gets them all in one
        /// syscall instead of one each, so the fan-out rate a core sustains grows with the load instead of
        /// collapsing. The frame is encoded once per encoding among the recipients of all shards (and only where
        /// there are recipients: a direct send visits every loop and is written on one). Returns how many recipients
        /// there were, and how many bytes they were written.
        private func send(
            _ frame: EncodedFrame,
            to connections: some Collection<any Connection>,
            excluding excluded: ConnectionID?,
            allocator: ByteBufferAllocator
        ) -> (recipients: Int, wireBytes: Int) {
            var encoded: [(encoding: ObjectIdentifier, bytes: ByteBuffer)] = []  // one or two entries
            var (recipients, wireBytes) = (0, 0)
            for connection in connections where connection.id != excluded {
                let key = ObjectIdentifier(connection.encoding)
                let bytes: ByteBuffer
                if let found = encoded.first(where: { $0.encoding == key }) {
                    bytes = found.bytes
                } else {
                    bytes = frame.bytes(for: connection.encoding, allocator: allocator)
                    encoded.append((key, bytes))
                }
                if connection.write(bytes) { self.unflushed.append(connection) }
                recipients += 1
                wireBytes += bytes.readableBytes
            }
            if recipients > 0, !self.flushQueued {
                self.flushQueued = true
                self.loop.assumeIsolated().execute { self.flushAll() }
            }
            return (recipients, wireBytes)
        }

        private func flushAll() {
            self.flushQueued = false
            let connections = self.unflushed
            self.unflushed = []
            for connection in connections { connection.flush() }
        }

        /// How many connections of this shard an audience reaches now.
        func count(_ audience: Audience) -> Int {
            switch audience {
            case .connection(let id): self.connections[id] == nil ? 0 : 1
            case .room(let room, let excluded): (self.rooms[room]?.count ?? 0) - (excluded.flatMap { self.rooms[room]?[$0] } == nil ? 0 : 1)
            case .user(let userId): self.users[userId]?.count ?? 0
            case .everyone: self.connections.count
            }
        }
    }

    private let shards: [ObjectIdentifier: NIOLoopBoundBox<Shard>]
    /// Per loop, how many deliveries other threads queued there that have not run yet (see ``forEachShard(_:)``).
    private let queued: [ObjectIdentifier: Queued]

    private final class Queued: Sendable {
        let count = Atomic<Int>(0)
    }
    let group: any EventLoopGroup

    init(group: any EventLoopGroup, metrics: GatewayMetrics) {
        var shards: [ObjectIdentifier: NIOLoopBoundBox<Shard>] = [:]
        for loop in group.makeIterator() {
            shards[ObjectIdentifier(loop)] = .makeBoxSendingValue(Shard(metrics: metrics, loop: loop), eventLoop: loop)
        }
        self.shards = shards
        self.queued = shards.mapValues { _ in Queued() }
        self.group = group
    }

    /// The shard of the loop the caller runs on.
    func shard(on loop: any EventLoop) -> Shard {
        self.shards[ObjectIdentifier(loop)]!.value
    }

    func deliver(_ frame: OutboundFrame, to audience: Audience) {
        let frame = EncodedFrame(frame)
        self.forEachShard { shard, allocator in shard.deliver(frame, to: audience, allocator: allocator) }
    }

    func perform(_ command: ConnectionCommand, on connection: ConnectionID) {
        self.forEachShard { shard, _ in shard.connections[connection]?.perform(command) }
    }

    func deliverDirect(_ frame: OutboundFrame, to id: ConnectionID) async -> DirectDelivery {
        let results = await self.gather { shard -> DirectDelivery in
            guard let connection = shard.connections[id] else { return .notHere }
            guard connection.hasRoom(for: frame.bytes.count) else { return .busy }
            shard.deliver(EncodedFrame(frame), to: .connection(id), allocator: ByteBufferAllocator())
            return .delivered
        }
        return results.first { $0 != .notHere } ?? .notHere
    }

    func count(_ audience: Audience) async -> Int {
        await self.gather { $0.count(audience) }.reduce(0, +)
    }

    /// The heartbeat sweep of one loop: every connection of its shard asks its state machine what is due.
    func tick(on loop: any EventLoop, now: NIODeadline) {
        for connection in self.shard(on: loop).connections.values { connection.tick(now: now) }
    }

    /// Closes every connection of this node (the drain).
    func closeAll(code: UInt16, reason: String) {
        self.forEachShard { shard, _ in
            for connection in shard.connections.values { connection.perform(.close(code: code, reason: reason)) }
        }
    }

    /// When each of these connections of this node last sent a message (milliseconds since 1970).
    func lastActive(_ ids: [ConnectionID]) async -> [ConnectionID: Int64] {
        let maps = await self.gather { shard in
            Dictionary(uniqueKeysWithValues: ids.compactMap { id in shard.connections[id].map { (id, $0.lastActiveAt) } })
        }
        return maps.reduce(into: [:]) { $0.merge($1) { first, _ in first } }
    }

    /// Bytes queued in connections' outbound buffers, summed over this node.
    func queuedBytes() async -> Int {
        await self.gather { shard in shard.connections.values.reduce(0) { $0 + $1.queuedBytes } }.reduce(0, +)
    }

    /// Runs `body` on every shard's loop and collects the results.
    private func gather<T: Sendable>(_ body: @escaping @Sendable (Shard) -> T) async -> [T] {
        var results: [T] = []
        for bound in self.shards.values {
            let result = try? await bound.eventLoop.submit { body(bound.value) }.get()
            if let result { results.append(result) }
        }
        return results
    }

    /// Runs `body` on every shard's loop: queued on the others, inline on the caller's own unless deliveries queued
    /// there by other threads have not run yet. Then it is queued behind them: what threads hand over in one order (a
    /// room's offsets, assigned under its lock, which the counter is raised inside) runs in that order on every loop,
    /// and clients drop a message whose offset is not above the last they saw. Inline otherwise, so a sender's own
    /// room message still reaches it before its next reply.
    func forEachShard(_ body: @escaping @Sendable (Shard, ByteBufferAllocator) -> Void) {
        for (key, bound) in self.shards {
            let (loop, queued) = (bound.eventLoop, self.queued[key]!)
            if loop.inEventLoop, queued.count.load(ordering: .sequentiallyConsistent) == 0 {
                body(bound.value, ByteBufferAllocator())
            } else {
                queued.count.add(1, ordering: .sequentiallyConsistent)
                loop.execute {
                    body(bound.value, ByteBufferAllocator())
                    queued.count.subtract(1, ordering: .sequentiallyConsistent)
                }
            }
        }
    }
}

/// A frame on its way to the shards of several loops, with each encoding of it made once: the first shard that needs
/// an encoding makes it while the others wait for its bytes instead of encoding again. A deflated room message is
/// compressed once per fan-out, not once per loop.
final class EncodedFrame: Sendable {
    let frame: OutboundFrame
    private let encoded = Mutex<[(encoding: ObjectIdentifier, bytes: ByteBuffer)]>([])

    init(_ frame: OutboundFrame) {
        self.frame = frame
    }

    func bytes(for encoding: any FrameEncoding, allocator: ByteBufferAllocator) -> ByteBuffer {
        let key = ObjectIdentifier(encoding)
        return self.encoded.withLock { encoded in
            if let found = encoded.first(where: { $0.encoding == key }) { return found.bytes }
            let bytes = encoding.encode(self.frame, allocator: allocator)
            encoded.append((key, bytes))
            return bytes
        }
    }
}
