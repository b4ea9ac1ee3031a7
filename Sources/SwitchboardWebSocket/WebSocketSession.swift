import NIOCore
import NIOWebSocket
import SwitchboardCore

/// The RFC 6455 rules for one server-side connection, as a value-type state machine: it takes decoded frames and
/// says what to do, and the channel handler does it. Reassembles fragmented messages within the size limit,
/// validates UTF-8 and close frames, and runs the close handshake.
public struct WebSocketSession: Sendable {
    public enum Action: Equatable, Sendable {
        /// A complete message for the router.
        case deliver(ByteBuffer, isText: Bool)
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
        case fragmented(ByteBuffer, isText: Bool)
        /// We sent a close frame and wait for the peer's.
        case closeSent
        case closed
    }

    public let maxMessageBytes: Int
    public let rejectBinary: Bool
    private var state = State.open
    /// The code and reason the connection ended with, as `$disconnect` reports them.
    public private(set) var closeStatus: (code: UInt16, reason: String)?

    public init(maxMessageBytes: Int, rejectBinary: Bool) {
        self.maxMessageBytes = maxMessageBytes
        self.rejectBinary = rejectBinary
    }

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
        guard frame.rsv1 == false, frame.rsv2 == false, frame.rsv3 == false else {
            return self.fail(CloseCode.protocolError, "reserved bits set without a negotiated extension")
        }
        guard frame.maskKey != nil else { return self.fail(CloseCode.protocolError, "client frames must be masked") }

        switch frame.opcode {
        case .text, .binary:
            guard case .open = self.state else {
                return self.fail(CloseCode.protocolError, "new message started before the previous one finished")
            }
            let isText = frame.opcode == .text
            guard frame.fin else { return self.startFragments(frame.unmaskedData, isText: isText) }
            return self.complete(frame.unmaskedData, isText: isText)
        case .continuation:
            guard case .fragmented(var buffer, let isText) = self.state else {
                return self.fail(CloseCode.protocolError, "continuation frame without a message to continue")
            }
            guard buffer.readableBytes + frame.length <= self.maxMessageBytes else { return self.tooBig() }
            self.state = .open  // drop the buffer's second reference before appending, so it is not copied
            var data = frame.unmaskedData
            buffer.writeBuffer(&data)
            guard frame.fin else {
                self.state = .fragmented(buffer, isText: isText)
                return .none
            }
            return self.complete(buffer, isText: isText)
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

    private mutating func startFragments(_ data: ByteBuffer, isText: Bool) -> Action {
        guard data.readableBytes <= self.maxMessageBytes else { return self.tooBig() }
        self.state = .fragmented(data, isText: isText)
        return .none
    }

    private mutating func complete(_ data: ByteBuffer, isText: Bool) -> Action {
        guard data.readableBytes <= self.maxMessageBytes else { return self.tooBig() }
        self.state = .open
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
