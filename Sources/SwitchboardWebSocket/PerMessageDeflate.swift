import CompressNIO
import NIOCore
import Synchronization

/// permessage-deflate (RFC 7692): the negotiation, and whole-message deflate and inflate.
///
/// Switchboard always answers with `server_no_context_takeover` and `client_no_context_takeover` (§7.1.1: a server
/// may add both to any accepted offer). Without server context, a message's compressed bytes depend only on the
/// message and the window, so a fan-out deflates a room message once and writes the same bytes to every member that
/// agreed to the same window. Without client context, nothing of a connection's inflate state outlives a message:
/// one inflater per event loop serves all its connections, and an idle connection holds no zlib memory at all.
public enum PerMessageDeflate {
    public static let extensionName = "permessage-deflate"

    /// What the handshake agreed to for one connection.
    public struct Agreement: Sendable, Equatable {
        /// The largest window the server may compress with (8–15, §7.1.2.1).
        public let serverMaxWindowBits: Int
        /// The `Sec-WebSocket-Extensions` answer.
        public let response: String
        public init(serverMaxWindowBits: Int, response: String) {
            (self.serverMaxWindowBits, self.response) = (serverMaxWindowBits, response)
        }
    }

    /// The first acceptable `permessage-deflate` offer among the request's `Sec-WebSocket-Extensions` values, or
    /// `nil` to decline the extension. An offer is declined (and the next one tried) when it has a parameter RFC
    /// 7692 does not define, a parameter twice, or a value out of range (§7.1).
    public static func negotiate(_ headerValues: [String]) -> Agreement? {
        for offer in headerValues.flatMap({ $0.split(separator: ",") }) {
            if let agreement = self.accept(offer) { return agreement }
        }
        return nil
    }

    private static func accept(_ offer: Substring) -> Agreement? {
        var parts = offer.split(separator: ";", omittingEmptySubsequences: false).map(\.trimmingOWS)
        guard parts.removeFirst().lowercased() == Self.extensionName else { return nil }
        var seen: Set<String> = []
        var serverMaxWindowBits: Int?
        for part in parts {
            let pair = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = pair[0].trimmingOWS.lowercased()
            let value = pair.count == 2 ? self.unquoted(pair[1].trimmingOWS) : nil
            guard seen.insert(name).inserted else { return nil }
            switch name {
            case "server_no_context_takeover", "client_no_context_takeover":
                guard value == nil else { return nil }
            case "server_max_window_bits":
                guard let bits = value.flatMap(self.windowBits) else { return nil }
                serverMaxWindowBits = bits
            case "client_max_window_bits":
                // A hint that the client can limit its window; inflating with the full window reads any smaller one.
                guard value == nil || value.flatMap(self.windowBits) != nil else { return nil }
            default:
                return nil
            }
        }
        var response = "\(Self.extensionName); server_no_context_takeover; client_no_context_takeover"
        if let serverMaxWindowBits { response += "; server_max_window_bits=\(serverMaxWindowBits)" }
        return Agreement(serverMaxWindowBits: serverMaxWindowBits ?? 15, response: response)
    }

    /// `8` to `15`, written without a leading zero (§7.1.2.1's ABNF).
    private static func windowBits(_ text: String) -> Int? {
        guard let first = text.first, first != "0", text.allSatisfy(\.isASCIIDigit), let bits = Int(text), (8...15).contains(bits) else {
            return nil
        }
        return bits
    }

    /// A quoted-string value (RFC 6455 §9.1 allows one), unquoted; `nil` when the quotes do not close.
    private static func unquoted(_ text: String) -> String? {
        guard text.hasPrefix("\"") else { return text }
        guard text.count >= 2, text.hasSuffix("\"") else { return nil }
        return String(text.dropFirst().dropLast())
    }

    /// The empty stored block a sync flush ends with (§7.2.1): dropped from every message sent, put back before
    /// inflating one received.
    static let flushTail: [UInt8] = [0x00, 0x00, 0xFF, 0xFF]
}

/// Deflates whole messages with one window size, from any thread. zlib streams are kept in a small pool, each used by
/// one thread at a time, so concurrent fan-outs on several event loops do not wait for one stream; the pool grows to
/// the number of threads that compress at once (about 256 KiB of zlib state each).
public final class MessageDeflater: Sendable {
    public let windowBits: Int
    public let level: Int
    private let pool = Mutex<[Stream]>([])

    /// `windowBits` 9–15 (zlib cannot write raw deflate with the 256-byte window of 8); `level` 1–9.
    public init(windowBits: Int, level: Int) {
        precondition((9...15).contains(windowBits) && (1...9).contains(level), "window bits 9–15, level 1–9")
        (self.windowBits, self.level) = (windowBits, level)
    }

    /// The message's compressed payload (without the flush tail), or `nil` when compressing would not make it smaller
    /// (or zlib failed): then it goes out as it is, which §6 allows for any message.
    public func compress(_ message: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer? {
        guard message.readableBytes > 0 else { return nil }  // deflate makes 2 bytes of nothing
        guard let stream = self.pool.withLock({ $0.popLast() }) ?? Stream(windowBits: self.windowBits, level: self.level) else {
            return nil
        }
        guard let compressed = stream.compress(message, allocator: allocator) else { return nil }  // a failed stream is dropped
        self.pool.withLock { $0.append(stream) }
        return compressed.readableBytes < message.readableBytes ? compressed : nil
    }

    /// One zlib deflate stream. Only ever used by the thread that took it out of the pool.
    private final class Stream: @unchecked Sendable {
        let compressor: ZlibCompressor

        init?(windowBits: Int, level: Int) {
            let configuration = ZlibConfiguration(windowSize: Int32(windowBits), compressionLevel: Int32(level), memoryLevel: 8)
            guard let compressor = try? ZlibCompressor(algorithm: .deflate, configuration: configuration) else { return nil }
            self.compressor = compressor
        }

        func compress(_ message: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer? {
            do {
                try self.compressor.reset()
                var input = message
                var output = allocator.buffer(capacity: self.compressor.maxSize(from: input))
                try self.compressor.deflate(from: &input, to: &output, flush: .sync)
                guard input.readableBytes == 0, output.readableBytes >= 4 else { return nil }
                output.moveWriterIndex(to: output.writerIndex - PerMessageDeflate.flushTail.count)
                return output
            } catch {
                return nil
            }
        }
    }
}

/// Inflates whole messages received with permessage-deflate, bounded: output stops one byte past the limit, so a
/// small message that would inflate to gigabytes (a zip bomb) costs no more than a message of the limit's size.
/// Not thread-safe: one per event loop, reset for every message (no client context is kept).
public final class MessageInflater {
    public enum Failure: Error, Equatable, Sendable {
        /// The message inflates past the limit.
        case tooBig
        /// Not a valid deflate stream.
        case corrupt
    }

    private let decompressor: ZlibDecompressor

    public init() throws {
        self.decompressor = try ZlibDecompressor(algorithm: .deflate, windowSize: 15)
    }

    /// - Parameters:
    ///   - message: the message's payload as received, all its frames joined.
    ///   - limit: the largest inflated size accepted.
    public func inflate(_ message: ByteBuffer, limit: Int, allocator: ByteBufferAllocator) -> Result<ByteBuffer, Failure> {
        guard (try? self.decompressor.reset()) != nil else { return .failure(.corrupt) }
        var input = message
        input.writeBytes(PerMessageDeflate.flushTail)
        var output = allocator.buffer(capacity: min(limit + 1, max(1024, input.readableBytes * 4)))
        while true {
            let before = (input.readableBytes, output.readableBytes)
            do {
                try self.decompressor.inflate(from: &input, to: &output)
                break  // all of it inflated (or the stream ended: §7.2.3.6 allows BFINAL, and the tail is then ignored)
            } catch let error as CompressNIOError where error == .bufferOverflow {
                // The output is full; zlib may still hold output even when all the input is read.
                guard output.readableBytes <= limit else { return .failure(.tooBig) }
                guard (input.readableBytes, output.readableBytes) != before else { return .failure(.corrupt) }
                output.reserveCapacity(minimumWritableBytes: min(limit + 1 - output.readableBytes, max(output.readableBytes, 1024)))
            } catch let error as CompressNIOError where error == .inputBufferOverflow {
                break  // no progress is possible: everything there is has been inflated
            } catch {
                return .failure(.corrupt)
            }
        }
        return output.readableBytes > limit ? .failure(.tooBig) : .success(output)
    }
}

extension Substring {
    /// Without the optional whitespace (spaces and tabs) HTTP allows around list items and parameters.
    fileprivate var trimmingOWS: String {
        String(self.drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { ("0"..."9").contains(self) }
}
