import NIOCore
import SwitchboardCore
import SwitchboardWebSocket

/// A client connection as the hub delivers to it, whatever its wire protocol or transport: a WebSocket speaking the
/// seed JSON protocol today, a Socket.IO socket or a long-polling session (no socket of its own) next. Every method is
/// called on the event loop the connection lives on, by that loop's ``LocalHub/Shard``.
protocol Connection: AnyObject {
    var id: ConnectionID { get }
    var userId: String { get }
    /// How this connection puts a frame on its wire: a fan-out encodes a frame once per encoding, not per recipient.
    var encoding: any FrameEncoding { get }
    /// Queues frames made by ``encoding``, unflushed; returns whether it now waits for a flush it did not wait for.
    func write(_ encoded: ByteBuffer) -> Bool
    func flush()
    /// Runs a backend's command (join, leave, close) in order with the client's own messages.
    func perform(_ command: ConnectionCommand)
    /// The heartbeat sweep of its loop.
    func tick(now: NIODeadline)
    /// Whether `bytes` more fit in its outbound queue: a backend's direct send that would not fit is refused (429).
    func hasRoom(for bytes: Int) -> Bool
    /// When the client last sent a message (milliseconds since 1970), for `GET @connections`.
    var lastActiveAt: Int64 { get }
    /// Bytes written and not yet taken by the kernel (or by a poll).
    var queuedBytes: Int { get }
}

/// One way of putting frames on a wire. Instances are shared by every connection that encodes alike, and a fan-out
/// encodes once per instance: two connections with the same wire bytes must share one.
protocol FrameEncoding: AnyObject, Sendable {
    /// A message's wire bytes.
    func encode(_ kind: OutboundFrame.Kind, _ payload: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer
}

extension FrameEncoding {
    func encode(_ frame: OutboundFrame, allocator: ByteBufferAllocator) -> ByteBuffer {
        self.encode(frame.kind, allocator.buffer(bytes: frame.bytes), allocator: allocator)
    }
}

/// The seed JSON protocol on a WebSocket: the frame's bytes as one RFC 6455 message, fragmented past the frame limit.
final class WebSocketEncoding: FrameEncoding {
    let maxFrameBytes: Int

    init(maxFrameBytes: Int) {
        self.maxFrameBytes = maxFrameBytes
    }

    func encode(_ kind: OutboundFrame.Kind, _ payload: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        WireFrame.encode(kind, payload, maxFrame: self.maxFrameBytes, allocator: allocator)
    }
}

/// The seed JSON protocol on a WebSocket with permessage-deflate: messages from the threshold up are deflated once
/// per fan-out (no context takeover: the same bytes suit every member with the same window), smaller ones and those
/// deflate would not shrink go out as they are. One instance per window size on a node.
final class DeflateEncoding: FrameEncoding {
    let maxFrameBytes: Int
    let thresholdBytes: Int
    let deflater: MessageDeflater

    init(maxFrameBytes: Int, thresholdBytes: Int, deflater: MessageDeflater) {
        (self.maxFrameBytes, self.thresholdBytes, self.deflater) = (maxFrameBytes, thresholdBytes, deflater)
    }

    func encode(_ kind: OutboundFrame.Kind, _ payload: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        if payload.readableBytes >= self.thresholdBytes, let compressed = self.deflater.compress(payload, allocator: allocator) {
            return WireFrame.encode(kind, compressed, maxFrame: self.maxFrameBytes, compressed: true, allocator: allocator)
        }
        return WireFrame.encode(kind, payload, maxFrame: self.maxFrameBytes, allocator: allocator)
    }
}
