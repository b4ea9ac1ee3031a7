import NIOCore
import SwitchboardCore

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

        func deliver(_ frame: OutboundFrame, to audience: Audience, allocator: ByteBufferAllocator) {
            let buffer = allocator.buffer(bytes: frame.bytes)
            switch audience {
            case .connection(let id):
                self.connections[id]?.send(buffer, kind: frame.kind, flush: true)
            case .room(let room, let excluded):
                guard let members = self.rooms[room] else { return }
                Self.send(buffer, kind: frame.kind, to: members.values, excluding: excluded)
            case .user(let userId):
                guard let connections = self.users[userId] else { return }
                Self.send(buffer, kind: frame.kind, to: connections.values, excluding: nil)
            case .everyone:
                Self.send(buffer, kind: frame.kind, to: self.connections.values, excluding: nil)
            }
        }

        /// Writes to every recipient first and flushes after, so one syscall batch serves the whole fan-out.
        private static func send(
            _ buffer: ByteBuffer,
            kind: OutboundFrame.Kind,
            to handlers: some Collection<WebSocketConnectionHandler>,
            excluding excluded: ConnectionID?
        ) {
            for handler in handlers where handler.info.id != excluded { handler.send(buffer, kind: kind, flush: false) }
            for handler in handlers where handler.info.id != excluded { handler.flush() }
        }
    }

    private let shards: [ObjectIdentifier: NIOLoopBoundBox<Shard>]

    init(group: any EventLoopGroup) {
        var shards: [ObjectIdentifier: NIOLoopBoundBox<Shard>] = [:]
        for loop in group.makeIterator() {
            shards[ObjectIdentifier(loop)] = .makeBoxSendingValue(Shard(), eventLoop: loop)
        }
        self.shards = shards
    }

    /// The shard of the loop the caller runs on.
    func shard(on loop: any EventLoop) -> Shard {
        self.shards[ObjectIdentifier(loop)]!.value
    }

    func deliver(_ frame: OutboundFrame, to audience: Audience) {
        self.forEachShard { shard, allocator in shard.deliver(frame, to: audience, allocator: allocator) }
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
