import FuzzDriver
import NIOCore
import NIOEmbedded
import NIOWebSocket
import SwitchboardCore
import SwitchboardWebSocket

@testable import SwitchboardGateway

/// Bytes a client sends after the upgrade → NIO's `WebSocketFrameDecoder` (fed in fuzz-chosen chunks) →
/// `WebSocketSession`, checking every action against what RFC 6455 and the gateway's limits allow.
///
/// Input: byte 0 picks the session's limits, the chunk size and whether permessage-deflate was negotiated (then
/// compressed messages go through a real `MessageInflater`); the rest is the stream of frames.
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard size > 0, let data else { return 0 }
    let input = UnsafeBufferPointer(start: data, count: size)
    let control = input[0]
    let maxMessageBytes = [16, 125, 256, 4096][Int(control & 0b11)]
    let rejectBinary = control & 0b100 != 0
    let chunk = [1, 2, 7, 64, 1 << 20][Int((control >> 3) & 0xF) % 5]
    let deflate = control & 0x80 != 0
    let stream = input.dropFirst()

    let collector = FrameCollector()
    let channel = EmbeddedChannel()
    do {
        try channel.pipeline.syncOperations.addHandlers(
            ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: 1024)),
            collector
        )
    } catch {
        fatalError("pipeline setup failed: \(error)")
    }
    var session = WebSocketSession(maxMessageBytes: maxMessageBytes, rejectBinary: rejectBinary, perMessageDeflate: deflate)
    var start = stream.startIndex
    var closed = false
    while start < stream.endIndex, !closed {
        let end = min(start + chunk, stream.endIndex)
        let buffer = ByteBuffer(bytes: UnsafeBufferPointer(rebasing: stream[start..<end]))
        start = end
        do {
            try channel.writeInbound(buffer)
        } catch {
            // Errors reach `errorCaught` of the collector first; the decoder is unusable afterwards.
        }
        for event in collector.drain() {
            let wasOpen = session.isOpen
            var action: WebSocketSession.Action
            switch event {
            case .frame(let frame): action = session.receive(frame)
            case .error(let error):
                action = session.decodingFailed(error)
                closed = true  // the decoder cannot read past a bad frame; the connection handler closes here too
            }
            if case .inflate(let compressed, let isText) = action {
                precondition(deflate, "asked to inflate without permessage-deflate")
                let inflated = inflater.inflate(compressed, limit: maxMessageBytes, allocator: ByteBufferAllocator())
                if case .success(let message) = inflated {
                    precondition(message.readableBytes <= maxMessageBytes, "inflated \(message.readableBytes) bytes, limit \(maxMessageBytes)")
                }
                action = session.inflated(inflated, isText: isText)
            }
            check(action, after: event, wasOpen: wasOpen, maxMessageBytes: maxMessageBytes, rejectBinary: rejectBinary)
            switch action {
            case .sendCloseAndDisconnect, .disconnect: closed = true
            default: break
            }
        }
    }
    _ = try? channel.finish()
    return 0
}

/// One inflater for the whole run, reset by every message, as one event loop's is.
nonisolated(unsafe) let inflater = try! MessageInflater()

func check(_ action: WebSocketSession.Action, after event: FrameCollector.Event, wasOpen: Bool, maxMessageBytes: Int, rejectBinary: Bool) {
    switch action {
    case .deliver(let buffer, let isText):
        precondition(wasOpen, "delivered a message after the close handshake began")
        precondition(buffer.readableBytes <= maxMessageBytes, "delivered \(buffer.readableBytes) bytes, limit \(maxMessageBytes)")
        if isText {
            precondition(UTF8Validation.isValid(buffer.readableBytesView), "delivered a text message that is not UTF-8")
        } else {
            precondition(!rejectBinary, "delivered a binary message although binary is rejected")
        }
    case .pong(let payload):
        precondition(wasOpen, "answered a ping after the close handshake began")
        guard case .frame(let frame) = event else { preconditionFailure("pong for a decoding error") }
        precondition(frame.opcode == .ping, "pong for a \(frame.opcode) frame")
        precondition(payload.readableBytes == frame.length, "pong payload differs in length from the ping's")
    case .sendClose(let code, _):
        precondition(wasOpen, "sent a second close frame")
        precondition(CloseCode.isValidOnWire(code), "close code \(code) may not be sent")
    case .sendCloseAndDisconnect(let code, _):
        precondition(wasOpen, "sent a close frame after the close handshake began")
        if let code { precondition(CloseCode.isValidOnWire(code), "close code \(code) may not be sent") }
    case .disconnect:
        precondition(!wasOpen, "disconnected an open session without a close frame")
    case .inflate:
        preconditionFailure("asked to inflate an inflated message")
    case .none:
        break
    }
}

/// Collects what the decoder produced, so the session can be driven outside the pipeline.
final class FrameCollector: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame

    enum Event {
        case frame(WebSocketFrame)
        case error(NIOWebSocketError)
    }

    private var events: [Event] = []

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.events.append(.frame(self.unwrapInboundIn(data)))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? NIOWebSocketError {
            self.events.append(.error(error))
        } else if case .dataReceivedInErrorState? = error as? ByteToMessageDecoderError {
            return  // bytes after a decoding error, in the same read: already reported
        } else {
            fatalError("unexpected decoder error: \(error)")
        }
    }

    func drain() -> [Event] {
        defer { self.events = [] }
        return self.events
    }
}

switchboard_fuzz_run(CommandLine.argc, CommandLine.unsafeArgv, fuzzOne)
