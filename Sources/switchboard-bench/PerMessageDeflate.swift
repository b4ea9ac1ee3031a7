import CompressNIO
import NIOCore
import SwitchboardCore
import Synchronization

/// The client side of permessage-deflate (RFC 7692) that the load generator needs: Chrome's offer, the checks of the
/// server's answer, and inflating what the server sends.
enum PerMessageDeflate {
    /// What Chrome offers: the extension, with the client's window negotiable.
    static let offer = "permessage-deflate; client_max_window_bits"

    enum Acceptance: Equatable {
        /// The server accepted; with `resetEachMessage` (it answered `server_no_context_takeover`) every message is
        /// inflated from an empty window.
        case accepted(resetEachMessage: Bool)
        /// The answer breaks RFC 7692 §7.1 or names what was not offered: a client must fail the connection.
        case refused(String)
    }

    /// Checks the server's `Sec-WebSocket-Extensions` answer to `offer`.
    static func accept(_ answer: String) -> Acceptance {
        let accepted = answer.split(separator: ",").map(trimmed).filter { !$0.isEmpty }
        guard accepted.count == 1 else { return .refused("\(accepted.count) extensions accepted, one offered") }
        let parts = accepted[0].split(separator: ";", omittingEmptySubsequences: false).map(trimmed)
        guard parts[0] == "permessage-deflate" else { return .refused("not offered: \(parts[0])") }
        var seen: Set<String> = []
        var resetEachMessage = false
        for parameter in parts.dropFirst() {
            let pair = parameter.split(separator: "=", maxSplits: 1).map(trimmed)
            let name = pair[0]
            var value = pair.count == 2 ? pair[1] : nil
            if let quoted = value, quoted.count >= 2, quoted.hasPrefix("\""), quoted.hasSuffix("\"") { value = String(quoted.dropFirst().dropLast()) }
            guard seen.insert(name).inserted else { return .refused("\(name) twice") }
            switch name {
            case "server_no_context_takeover", "client_no_context_takeover":
                guard value == nil else { return .refused("\(name) with a value") }
                resetEachMessage = resetEachMessage || name == "server_no_context_takeover"
            case "server_max_window_bits", "client_max_window_bits":
                // The server may limit its own window unasked; the client's only because it was offered. Either needs
                // a value from 8 to 15 in an answer. (The inflater's window of 15 reads any smaller one.)
                guard let bits = value.flatMap({ Int($0) }), (8...15).contains(bits) else { return .refused("\(name) needs a value 8...15") }
            default:
                return .refused("unknown parameter \(name)")
            }
        }
        return .accepted(resetEachMessage: resetEachMessage)
    }

    private static func trimmed(_ text: some StringProtocol) -> String {
        String(text.drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}

/// Inflates one connection's compressed messages: raw deflate, each message's payload followed by the `00 00 ff ff`
/// its sender stripped, the window kept from message to message unless the server resets its own for each.
final class Inflater {
    private static let tail: ByteBuffer = ByteBuffer(bytes: [0x00, 0x00, 0xFF, 0xFF])
    private let resetEachMessage: Bool
    private let cache: InflateCache?
    /// Made on the first compressed message, so an idle connection holds no zlib state.
    private var decompressor: ZlibDecompressor?

    /// - Parameter cache: the event loop's last inflated messages, reused when the server resets its window for each
    ///   message (then the same compressed bytes always inflate to the same text).
    init(resetEachMessage: Bool, cache: InflateCache?) {
        self.resetEachMessage = resetEachMessage
        self.cache = resetEachMessage ? cache : nil
    }

    /// The message's text, and whether it was the cached one (the same compressed bytes as the last message inflated
    /// on this event loop without context: a fan-out's other members, when the server compressed once).
    func inflate(_ payload: ByteBuffer, allocator: ByteBufferAllocator) throws -> (text: ByteBuffer, reused: Bool) {
        if let text = self.cache?.text(for: payload) { return (text, true) }
        let text = try self.inflateAnew(payload, allocator: allocator)
        self.cache?.add(allocator.buffer(buffer: payload), text)
        return (text, false)
    }

    private func inflateAnew(_ payload: ByteBuffer, allocator: ByteBufferAllocator) throws -> ByteBuffer {
        let decompressor = try self.decompressor ?? ZlibDecompressor(algorithm: .deflate, windowSize: 15)
        self.decompressor = decompressor
        var output = allocator.buffer(capacity: max(1024, payload.readableBytes * 4))
        if payload.readableBytes > 0 {
            var input = payload
            try Self.run(decompressor, from: &input, to: &output)
        }
        var tail = Self.tail
        try Self.run(decompressor, from: &tail, to: &output)
        if self.resetEachMessage { try decompressor.reset() }
        return output
    }

    /// Feeds `input` to zlib until it is consumed and zlib has nothing more to give, growing `output` as needed.
    private static func run(_ decompressor: ZlibDecompressor, from input: inout ByteBuffer, to output: inout ByteBuffer) throws {
        var outputFull = false
        repeat {
            if output.writableBytes < 512 { output.reserveCapacity(minimumWritableBytes: max(output.capacity, 1024)) }
            do {
                try decompressor.inflate(from: &input, to: &output)
                outputFull = false
            } catch let error as CompressNIOError where error == .bufferOverflow {
                outputFull = true  // zlib may hold more output: call again with room, even with no input left
            } catch let error as CompressNIOError where error == .inputBufferOverflow {
                outputFull = false  // no input and nothing held back: done
            }
        } while input.readableBytes > 0 || outputFull
    }
}

/// One event loop's recent messages inflated without context: with a server that compresses a room message once,
/// every member after the first gets the same bytes, and finding them costs far less than inflating them again, which
/// keeps the generator's core from setting the fan-out's latency. It holds many, because when the server falls behind
/// each read holds several messages and members' reads interleave them. Looked up by length and a few bytes, then
/// compared whole. Used only on its event loop.
final class InflateCache: @unchecked Sendable {
    private static let size = 256
    private var entries: [UInt64: (compressed: ByteBuffer, text: ByteBuffer)] = [:]
    private var order: [UInt64] = []
    private var next = 0

    func text(for compressed: ByteBuffer) -> ByteBuffer? {
        guard let entry = self.entries[Self.key(compressed)], entry.compressed == compressed else { return nil }
        return entry.text
    }

    func add(_ compressed: ByteBuffer, _ text: ByteBuffer) {
        let key = Self.key(compressed)
        guard self.entries.updateValue((compressed, text), forKey: key) == nil else { return }
        if self.order.count < Self.size {
            self.order.append(key)
        } else {
            self.entries[self.order[self.next]] = nil
            self.order[self.next] = key
        }
        self.next = (self.next + 1) % Self.size
    }

    /// The length and the last eight bytes (where deflate output differs from message to message), or fewer.
    private static func key(_ buffer: ByteBuffer) -> UInt64 {
        let count = buffer.readableBytes
        let tail = count >= 8 ? buffer.getInteger(at: buffer.readerIndex + count - 8, as: UInt64.self) ?? 0 : 0
        return tail &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(count)
    }
}

/// What the servers answered to the connections' permessage-deflate offers, and how many messages came compressed.
final class ExtensionStats: Sendable {
    let negotiated = Atomic<Int>(0)
    /// Answered without `Sec-WebSocket-Extensions`: the connection runs uncompressed.
    let declined = Atomic<Int>(0)
    let compressedMessages = Atomic<Int>(0)
    /// Compressed messages whose bytes matched the event loop's last inflated one: their text was reused.
    let reusedInflations = Atomic<Int>(0)
    let uncompressedMessages = Atomic<Int>(0)
    private let answers = Mutex<[String: Int]>([:])

    func saw(_ answer: String) { self.answers.withLock { $0[answer, default: 0] += 1 } }

    /// Fields for a result line.
    func fields() -> KeyValuePairs<String, JSONValue> {
        let answers = self.answers.withLock { $0 }.sorted { $0.key < $1.key }.map { JSONObject.Member($0.key, number($0.value)) }
        return [
            "deflate_offered": .string(PerMessageDeflate.offer), "deflate_negotiated": number(self.negotiated.load(ordering: .relaxed)),
            "deflate_declined": number(self.declined.load(ordering: .relaxed)), "deflate_answers": .object(JSONObject(answers)),
            "compressed_messages": number(self.compressedMessages.load(ordering: .relaxed)),
            "inflations_reused": number(self.reusedInflations.load(ordering: .relaxed)),
            "uncompressed_messages": number(self.uncompressedMessages.load(ordering: .relaxed)),
        ]
    }
}
