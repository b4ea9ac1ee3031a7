import NIOCore
import Prometheus
import SwitchboardCore
import SwitchboardWebSocket

/// This node's connections, sharded by event loop: each shard is owned by one loop and touched only there, so
/// delivery takes no lock. A frame for an audience costs one hop per loop, then one write per local recipient.
final class LocalHub: LocalDelivery {
    /// One event loop's connections and their room and user indexes.
    final class Shard {
        var connections: [ConnectionID: WebSocketConnectionHandler] = [:]
        var rooms: [RoomID: [ConnectionID: WebSocketConnectionHandler]] = [:]
        var users: [String: [ConnectionID: WebSocketConnectionHandler]] = [:]

        func add(_ handler: WebSocketConnectionHandler) {
            self.connections[handler.info.id] = handler
            self.users[handler.info.userId, default: [:]][handler.info.id] = handler
        }

        func remove(_ handler: WebSocketConnectionHandler) {
            let id = handler.info.id
            self.connections.removeValue(forKey: id)
            self.users[handler.info.userId]?.removeValue(forKey: id)
            if self.users[handler.info.userId]?.isEmpty == true { self.users.removeValue(forKey: handler.info.userId) }
            for room in handler.rooms { self.leave(room, handler) }
        }

        func join(_ room: RoomID, _ handler: WebSocketConnectionHandler) {
            self.rooms[room, default: [:]][handler.info.id] = handler
        }

        func leave(_ room: RoomID, _ handler: WebSocketConnectionHandler) {
            self.rooms[room]?.removeValue(forKey: handler.info.id)
            if self.rooms[room]?.isEmpty == true { self.rooms.removeValue(forKey: room) }
        }

        let metrics: GatewayMetrics
        let loop: any EventLoop
        let maxFrameBytes: Int
        /// Recipients written to but not flushed yet, and whether a flush of them is queued on the loop.
        private var unflushed: [WebSocketConnectionHandler] = []
        private var flushQueued = false

        init(metrics: GatewayMetrics, loop: any EventLoop, maxFrameBytes: Int) {
            (self.metrics, self.loop, self.maxFrameBytes) = (metrics, loop, maxFrameBytes)
        }

        func deliver(_ frame: OutboundFrame, to audience: Audience, allocator: ByteBufferAllocator) {
            // Encoded only on a shard with recipients: a direct send visits every loop and is written on one.
            func wire() -> ByteBuffer {
                WireFrame.encode(frame.kind, allocator.buffer(bytes: frame.bytes), maxFrame: self.maxFrameBytes, allocator: allocator)
            }
            switch audience {
            case .connection(let id):
                guard let handler = self.connections[id] else { return }
                handler.write(wire(), flush: true)
                self.count(1, frame)
            case .room(let room, let excluded):
                guard let members = self.rooms[room] else { return }
                self.count(self.send(wire(), to: members.values, excluding: excluded), frame)
            case .user(let userId):
                guard let connections = self.users[userId] else { return }
                self.count(self.send(wire(), to: connections.values, excluding: nil), frame)
            case .everyone:
                guard !self.connections.isEmpty else { return }
                self.count(self.send(wire(), to: self.connections.values, excluding: nil), frame)
            }
        }

        private func count(_ recipients: Int, _ frame: OutboundFrame) {
            guard recipients > 0 else { return }
            self.metrics.messagesSent.increment(by: Int64(recipients))
            self.metrics.bytesSent.increment(by: Int64(recipients * frame.bytes.count))
        }

        /// Writes to every recipient now and flushes them once the loop has handled the rest of this turn's reads:
        /// under load a sender's frames arrive several to a read, and each recipient then gets them all in one
        /// syscall instead of one each, so the fan-out rate a core sustains grows with the load instead of
        /// collapsing. Returns how many recipients there were.
        private func send(
            _ wire: ByteBuffer,
            to handlers: some Collection<WebSocketConnectionHandler>,
            excluding excluded: ConnectionID?
        ) -> Int {
            var recipients = 0
            for handler in handlers where handler.info.id != excluded {
                handler.write(wire, flush: false)
                if !handler.awaitsFlush {
                    handler.awaitsFlush = true
                    self.unflushed.append(handler)
                }
                recipients += 1
            }
            if recipients > 0, !self.flushQueued {
                self.flushQueued = true
                self.loop.assumeIsolated().execute { self.flushAll() }
            }
            return recipients
        }

        private func flushAll() {
            self.flushQueued = false
            let handlers = self.unflushed
            self.unflushed = []
            for handler in handlers {
                handler.awaitsFlush = false
                handler.flush()
            }
        }
    }

    private let shards: [ObjectIdentifier: NIOLoopBoundBox<Shard>]
    let group: any EventLoopGroup

    init(group: any EventLoopGroup, metrics: GatewayMetrics, maxFrameBytes: Int) {
        var shards: [ObjectIdentifier: NIOLoopBoundBox<Shard>] = [:]
        for loop in group.makeIterator() {
            shards[ObjectIdentifier(loop)] = .makeBoxSendingValue(Shard(metrics: metrics, loop: loop, maxFrameBytes: maxFrameBytes), eventLoop: loop)
        }
        self.shards = shards
        self.group = group
    }

    /// The shard of the loop the caller runs on.
    func shard(on loop: any EventLoop) -> Shard {
        self.shards[ObjectIdentifier(loop)]!.value
    }

    func deliver(_ frame: OutboundFrame, to audience: Audience) {
        self.forEachShard { shard, allocator in shard.deliver(frame, to: audience, allocator: allocator) }
    }

    func perform(_ command: ConnectionCommand, on connection: ConnectionID) {
        self.forEachShard { shard, _ in shard.connections[connection]?.perform(command) }
    }

    /// What happened to a frame sent straight to one connection of this node.
    enum DirectDelivery: Sendable {
        case delivered
        /// Its outbound queue is full (API Gateway's `LimitExceededException`).
        case busy
        /// No such connection on this node.
        case notHere
    }

    func deliverDirect(_ frame: OutboundFrame, to id: ConnectionID) async -> DirectDelivery {
        let results = await self.gather { shard -> DirectDelivery in
            guard let handler = shard.connections[id] else { return .notHere }
            guard handler.hasRoom(for: frame.bytes.count) else { return .busy }
            shard.deliver(frame, to: .connection(id), allocator: ByteBufferAllocator())
            return .delivered
        }
        return results.first { if case .notHere = $0 { false } else { true } } ?? .notHere
    }

    /// How many connections of this node an audience reaches now.
    func count(_ audience: Audience) async -> Int {
        await self.gather { shard in
            switch audience {
            case .connection(let id): shard.connections[id] == nil ? 0 : 1
            case .room(let room, let excluded): (shard.rooms[room]?.count ?? 0) - (excluded.flatMap { shard.rooms[room]?[$0] } == nil ? 0 : 1)
            case .user(let userId): shard.users[userId]?.count ?? 0
            case .everyone: shard.connections.count
            }
        }.reduce(0, +)
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

    /// Runs `body` on every shard's loop (inline for the caller's own loop).
    func forEachShard(_ body: @escaping @Sendable (Shard, ByteBufferAllocator) -> Void) {
        for bound in self.shards.values {
            let loop = bound.eventLoop
            if loop.inEventLoop {
                body(bound.value, ByteBufferAllocator())
            } else {
                loop.execute { body(bound.value, ByteBufferAllocator()) }
            }
        }
    }
}
