import FuzzDriver
import NIOCore

@testable import SwitchboardRedis

/// The RESP2/RESP3 decoder (`RESPDecoder`, resumable and bounded) on arbitrary replies, fed whole and then split in two at a fuzz-chosen point: nothing may
/// trap, and both ways must decode the same values and fail (or run out of bytes) the same way.
///
/// Input: byte 0 picks the split point (as a fraction of the rest), byte 1 the reply size bound; the rest is what the
/// server sent.
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard size > 1, let data else { return 0 }
    let input = UnsafeBufferPointer(start: data, count: size)
    let stream = Array(input.dropFirst(2))
    let split = stream.count * Int(input[0]) / 255
    let bound = [64, 1024, 64 << 20][Int(input[1]) % 3]
    let whole = decode([stream[...]], bound: bound)
    let parts = decode([stream[..<split], stream[split...]], bound: bound)
    precondition(
        String(reflecting: whole) == String(reflecting: parts),
        "decoding whole and split at \(split) disagree:\n\(whole)\n\(parts)"
    )
    return 0
}

/// What the decoder made of the chunks: every value, and whether it stopped at an error.
struct Outcome: CustomStringConvertible {
    var values: [RESPValue] = []
    var failed = false
    var unread = 0

    var description: String { "\(self.values.count) values \(self.values), failed: \(self.failed), unread: \(self.unread)" }
}

func decode(_ chunks: [ArraySlice<UInt8>], bound: Int) -> Outcome {
    var outcome = Outcome()
    var decoder = RESPDecoder(maximumReplyBytes: bound)
    var buffer = ByteBuffer()
    for chunk in chunks {
        buffer.writeBytes(chunk)
        do {
            while let value = try decoder.next(&buffer) {
                outcome.values.append(value)
                readAsCluster(value)
            }
        } catch {
            outcome.failed = true
            return outcome
        }
    }
    outcome.unread = buffer.readableBytes
    return outcome
}

/// The Redis Cluster parsers read what a server sent too: the slot map (`CLUSTER SHARDS`, `CLUSTER SLOTS`) and
/// redirects (`-MOVED`, `-ASK`). They may refuse any value, never trap on one.
func readAsCluster(_ value: RESPValue) {
    let node = ClusterNode(host: "h", port: 1)
    for tls in [false, true] {
        _ = try? ClusterTopology(shards: value, tls: tls, queried: node)
        _ = try? ClusterTopology(slots: value, tls: tls, queried: node)
    }
    if case .error(let message) = value { _ = ClusterRedirect(message, from: node) }
}

switchboard_fuzz_run(CommandLine.argc, CommandLine.unsafeArgv, fuzzOne)
