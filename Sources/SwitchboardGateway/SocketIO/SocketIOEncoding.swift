import NIOCore
import SwitchboardConfiguration
import SwitchboardCore
import SwitchboardSocketIO
import SwitchboardWebSocket

/// The seed JSON protocol as Socket.IO EVENT packets of one namespace on one Engine.IO transport: a frame with an
/// `action` is the event of that name with the frame as its one argument; any other JSON, text or binary is the
/// push event (`socketio.push_event`). One instance per namespace and transport on a node, so a fan-out encodes once
/// per kind. The frame's JSON is spliced in as it is (no re-serialisation: numbers and key order stay as sent).
final class SocketIOEncoding: FrameEncoding {
    let namespace: String
    let transport: EngineSession.Transport
    let pushEvent: String
    let maxFrameBytes: Int
    /// Connection state recovery is on: room messages carry `"<offset>@<room>"` as their last argument
    /// (``SocketIORecovery``), the same for every member.
    let offsets: Bool

    init(namespace: String, transport: EngineSession.Transport, pushEvent: String, maxFrameBytes: Int, offsets: Bool = false) {
        (self.namespace, self.transport, self.pushEvent, self.maxFrameBytes) = (namespace, transport, pushEvent, maxFrameBytes)
        self.offsets = offsets
    }

    func encode(_ kind: OutboundFrame.Kind, _ payload: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        self.wire(self.packet(kind, payload, ackID: nil), allocator: allocator)
    }

    /// The answer to an event the client sent with an ack id: ACK `3<id>[<reply>]` (a binary reply as BINARY_ACK).
    func encodeAck(_ ackID: Int, _ kind: OutboundFrame.Kind, _ payload: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        self.wire(self.packet(kind, payload, ackID: ackID), allocator: allocator)
    }

    /// `3<id>[]`: the answer to an event whose route answered nothing.
    func encodeEmptyAck(_ ackID: Int, allocator: ByteBufferAllocator) -> ByteBuffer {
        self.wire([.text("3" + (self.namespace == "/" ? "" : self.namespace + ",") + String(ackID) + "[]")], allocator: allocator)
    }

    /// The Socket.IO packet's Engine.IO messages: text packets by splicing, binary ones through ``SocketPacket``.
    private func packet(_ kind: OutboundFrame.Kind, _ payload: ByteBuffer, ackID: Int?) -> [EngineMessage] {
        let bytes = Array(payload.readableBytesView)
        let prefix = self.namespace == "/" ? "" : self.namespace + ","
        guard kind == .text else {
            let packet =
                if let ackID {
                    SocketPacket(.ack, namespace: self.namespace, ackID: ackID, data: .array([.binary(bytes)]))
                } else {
                    SocketPacket.event(self.pushEvent, [.binary(bytes)], namespace: self.namespace)
                }
            return packet.encode()
        }
        let json = try? JSONValue.parse(bytes)
        // Not JSON: the text as a string argument.
        let argument = json == nil ? JSONValue.string(String(decoding: bytes, as: UTF8.self)).jsonString : String(decoding: bytes, as: UTF8.self)
        if let ackID { return [.text("3" + prefix + String(ackID) + "[" + argument + "]")] }
        let object = json?.objectValue
        let name = object?["action"]?.stringValue ?? self.pushEvent
        var offset = ""
        if self.offsets, name == "message", let room = object?["roomId"]?.stringValue, case .number(let number)? = object?["offset"],
            let value = Int64(number)
        {
            offset = "," + JSONValue.string(SocketIORecovery.offset(value, in: room)).jsonString
        }
        return [.text("2" + prefix + "[" + JSONValue.string(name).jsonString + "," + argument + offset + "]")]
    }

    /// On a WebSocket, one RFC 6455 message per Engine.IO message; on polling, the payload records (`4…`, `b…`)
    /// joined by the record separator, which ``EngineConnection`` queues in the session.
    private func wire(_ messages: [EngineMessage], allocator: ByteBufferAllocator) -> ByteBuffer {
        switch self.transport {
        case .polling:
            return allocator.buffer(bytes: EnginePacket.encodePayload(messages.map(EnginePacket.message)))
        case .webSocket:
            var wire = allocator.buffer(capacity: 0)
            for message in messages {
                switch message {
                case .text(let text):
                    var frame = WireFrame.encode(.text, allocator.buffer(string: "4" + text), maxFrame: self.maxFrameBytes, allocator: allocator)
                    wire.writeBuffer(&frame)
                case .binary(let bytes):
                    var frame = WireFrame.encode(.binary, allocator.buffer(bytes: bytes), maxFrame: self.maxFrameBytes, allocator: allocator)
                    wire.writeBuffer(&frame)
                }
            }
            return wire
        }
    }
}
