import NIOCore
import NIOWebSocket
import SwitchboardCore

/// The RFC 6455 rules for one server-side connection, as a value-type state machine: it takes decoded frames and
/// says what to do, and the channel handler does it. Reassembles fragmented messages within the size limit,
/// validates UTF-8 and close frames, and runs the close handshake. With permessage-deflate (RFC 7692) negotiated, a
/// message whose first frame has RSV1 set is compressed: the session joins its frames and asks for it to be inflated
/// (``Action/inflate(_:isText:)``), and checks the inflated message when it is handed back.
public struct WebSocketSession: Sendable {
    public enum Action: Equatable, Sendable {
        /// A complete message for the router.
        case deliver(ByteBuffer, isText: Bool)
        /// A complete compressed message: inflate it and hand the result to ``inflated(_:isText:)``.
        case inflate(ByteBuffer, isText: Bool)
        /// Answer a ping with this payload.
        case pong(ByteBuffer)
        /// Send a close frame; the session now waits for the peer's close (or the close timeout).
        case sendClose(code: UInt16, reason: String)
        /// Send a close frame (no code: an empty one) and drop the connection without waiting: the peer already
        /// sent its close, or the stream can no longer be read.
        case sendCloseAndDisconnect(code: UInt16?, reason: String)
        /// The peer answered our close frame: drop the connection.
        case disconnect
        case none
    }

    private enum State {
        case open
        /// Reassembling a fragmented message.
        case fragmented(ByteBuffer, isText: Bool, compressed: Bool)
        /// We sent a close frame and wait for the peer's.
        case closeSent
        case closed
    }

    public let maxMessageBytes: Int
    public let rejectBinary: Bool
    /// Whether permessage-deflate was negotiated: RSV1 then marks a compressed message.
    public let perMessageDeflate: Bool
    private var state = State.open
    /// The code and reason the connection ended with, as `$disconnect` reports them.
    public private(set) var closeStatus: (code: UInt16, reason: String)?

    public init(maxMessageBytes: Int, rejectBinary: Bool, perMessageDeflate: Bool = false) {
        self.maxMessageBytes = maxMessageBytes
        self.rejectBinary = rejectBinary
        self.perMessageDeflate = perMessageDeflate
    }

    /// The most compressed bytes a message may have: deflate can grow incompressible data by a few bytes per block,
    /// so a message that inflates within the limit may arrive slightly larger than it.
    private var maxCompressedBytes: Int { self.maxMessageBytes + self.maxMessageBytes / 1024 + 64 }

    public var isOpen: Bool {
        switch self.state {
        case .open, .fragmented: true
        case .closeSent, .closed: false
        }
    }

    public mutating func receive(_ frame: WebSocketFrame) -> Action {
        switch self.state {
        case .closed:
            return .none
        case .closeSent:
            // RFC 6455 §5.5.1: after sending close, data is discarded until the peer's close arrives.
            if frame.opcode == .connectionClose {
                self.state = .closed
                return .disconnect
            }
            return .none
        case .open, .fragmented:
            break
        }
        guard frame.rsv2 == false, frame.rsv3 == false, !frame.rsv1 || self.perMessageDeflate else {
            return self.fail(CloseCode.protocolError, "reserved bits set without a negotiated extension")
        }
        // RFC 7692 §6.1: RSV1 marks the first frame of a compressed message, and no other frame.
        guard !frame.rsv1 || frame.opcode == .text || frame.opcode == .binary else {
            return self.fail(CloseCode.protocolError, "RSV1 set on a control or continuation frame")
        }
        guard frame.maskKey != nil else { return self.fail(CloseCode.protocolError, "client frames must be masked") }

        switch frame.opcode {
        case .text, .binary:
            guard case .open = self.state else {
                return self.fail(CloseCode.protocolError, "new message started before the previous one finished")
            }
            let isText = frame.opcode == .text
            guard frame.fin else { return self.startFragments(frame.unmaskedData, isText: isText, compressed: frame.rsv1) }
            return self.complete(frame.unmaskedData, isText: isText, compressed: frame.rsv1)
        case .continuation:
            guard case .fragmented(var buffer, let isText, let compressed) = self.state else {
                return self.fail(CloseCode.protocolError, "continuation frame without a message to continue")
            }
            guard buffer.readableBytes + frame.length <= (compressed ? self.maxCompressedBytes : self.maxMessageBytes) else {
                return self.tooBig()
            }
            self.state = .open  // drop the buffer's second reference before appending, so it is not copied
            var data = frame.unmaskedData
            buffer.writeBuffer(&data)
            guard frame.fin else {
                self.state = .fragmented(buffer, isText: isText, compressed: compressed)
                return .none
            }
            return self.complete(buffer, isText: isText, compressed: compressed)
        case .ping:
            return .pong(frame.unmaskedData)
        case .pong:
            return .none
        case .connectionClose:
            return self.receiveClose(frame.unmaskedData)
        default:
            return self.fail(CloseCode.protocolError, "unknown opcode \(frame.opcode)")
        }
    }

    /// The inflated form of the message ``Action/inflate(_:isText:)`` asked for: checked like any message.
    public mutating func inflated(_ result: Result<ByteBuffer, MessageInflater.Failure>, isText: Bool) -> Action {
        guard self.isOpen else { return .none }
        switch result {
        case .success(let message): return self.complete(message, isText: isText, compressed: false)
        case .failure(.tooBig): return self.tooBig()
        case .failure(.corrupt): return self.fail(CloseCode.invalidPayload, "compressed message is not valid deflate data")
        }
    }

    /// The gateway decided to close (timeout, slow consumer, drain, kick).
    public mutating func close(code: UInt16, reason: String) -> Action {
        guard self.isOpen else { return .none }
        return self.fail(code, reason)
    }

    /// The connection ends without a handshake (lost, or dropped as dead): `1006` unless a status was recorded.
    public mutating func abandon(reason: String) {
        self.state = .closed
        if self.closeStatus == nil { self.closeStatus = (CloseCode.abnormal, reason) }
    }

    /// A decoder error: the frame could not be read, and neither can anything after it.
    public mutating func decodingFailed(_ error: NIOWebSocketError) -> Action {
        let status: (UInt16, String) =
            switch error {
            case .invalidFrameLength: (CloseCode.messageTooBig, "frame exceeds the frame size limit")
            default: (CloseCode.protocolError, "malformed frame: \(error)")
            }
        guard self.isOpen else { return .none }
        self.state = .closed
        self.closeStatus = status
        return .sendCloseAndDisconnect(code: status.0, reason: status.1)
    }

    private mutating func startFragments(_ data: ByteBuffer, isText: Bool, compressed: Bool) -> Action {
        guard data.readableBytes <= (compressed ? self.maxCompressedBytes : self.maxMessageBytes) else { return self.tooBig() }
        self.state = .fragmented(data, isText: isText, compressed: compressed)
        return .none
    }

    private mutating func complete(_ data: ByteBuffer, isText: Bool, compressed: Bool) -> Action {
        guard data.readableBytes <= (compressed ? self.maxCompressedBytes : self.maxMessageBytes) else { return self.tooBig() }
        self.state = .open
        if compressed { return .inflate(data, isText: isText) }
        if isText {
            guard data.withUnsafeReadableBytes(UTF8Validation.isValid) else {
                return self.fail(CloseCode.invalidPayload, "text message is not valid UTF-8")
            }
        } else if self.rejectBinary {
            return self.fail(CloseCode.unsupportedData, "binary frames are not accepted")
        }
        return .deliver(data, isText: isText)
    }

    private mutating func tooBig() -> Action {
        self.fail(CloseCode.messageTooBig, "message exceeds \(self.maxMessageBytes) bytes")
    }

    private mutating func fail(_ code: UInt16, _ reason: String) -> Action {
        self.state = .closeSent
        self.closeStatus = (code, reason)
        return .sendClose(code: code, reason: reason)
    }

    private mutating func receiveClose(_ payload: ByteBuffer) -> Action {
        var payload = payload
        switch payload.readableBytes {
        case 0:
            self.state = .closed
            self.closeStatus = (CloseCode.noStatus, "")
            return .sendCloseAndDisconnect(code: nil, reason: "")
        case 1:
            return self.fail(CloseCode.protocolError, "close frame with a one-byte payload")
        default:
            let code = payload.readInteger(as: UInt16.self)!
            guard CloseCode.isValidOnWire(code) else { return self.fail(CloseCode.protocolError, "invalid close code \(code)") }
            guard UTF8Validation.isValid(payload.readableBytesView) else {
                return self.fail(CloseCode.invalidPayload, "close reason is not valid UTF-8")
            }
            self.state = .closed
            self.closeStatus = (code, payload.readString(length: payload.readableBytes) ?? "")
            return .sendCloseAndDisconnect(code: code, reason: "")
        }
    }
}
