import NIOCore
import SwitchboardCore

/// Server frames as bytes on the wire (RFC 6455 §5.2). A server's frames are never masked, so one encoding serves
/// every recipient: the hub encodes a room message once and each member's socket writes the same buffer, with no
/// per-recipient header allocation and one iovec per frame.
public enum WireFrame: Sendable {
    public static let continuation: UInt8 = 0x0
    public static let text: UInt8 = 0x1
    public static let binary: UInt8 = 0x2
    public static let close: UInt8 = 0x8
    public static let ping: UInt8 = 0x9
    public static let pong: UInt8 = 0xA

    /// A text or binary message, fragmented past `maxFrame` bytes; `compressed` when `payload` is deflated.
    public static func encode(
        _ kind: OutboundFrame.Kind,
        _ payload: ByteBuffer,
        maxFrame: Int,
        compressed: Bool = false,
        allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        Self.encode(kind == .text ? Self.text : Self.binary, payload, maxFrame: maxFrame, compressed: compressed, allocator: allocator)
    }

    /// `payload` as one frame, or as fragments of at most `maxFrame` bytes when it is larger (clients may cap the
    /// frame size they accept below the message size). A compressed message (RFC 7692) sets RSV1 on its first frame.
    public static func encode(
        _ opcode: UInt8,
        _ payload: ByteBuffer,
        maxFrame: Int = .max,
        compressed: Bool = false,
        allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        var payload = payload
        let fragment = max(maxFrame, 1)
        var wire = allocator.buffer(capacity: payload.readableBytes + 10 * (payload.readableBytes / fragment + 1))
        var opcode = opcode | (compressed ? 0x40 : 0)
        repeat {
            var slice = payload.readSlice(length: min(fragment, payload.readableBytes))!
            wire.writeInteger((payload.readableBytes == 0 ? 0x80 : 0) | opcode)
            switch slice.readableBytes {
            case ..<126: wire.writeInteger(UInt8(slice.readableBytes))
            case ...0xFFFF: wire.writeMultipleIntegers(UInt8(126), UInt16(slice.readableBytes))
            default: wire.writeMultipleIntegers(UInt8(127), UInt64(slice.readableBytes))
            }
            wire.writeBuffer(&slice)
            opcode = Self.continuation
        } while payload.readableBytes > 0
        return wire
    }
}
