import SwitchboardCore
import Testing

@testable import SwitchboardRedis

@Suite struct EnvelopeTests {
    @Test func relayedBytesTravelUntouched() throws {
        let payload = Array("Q\t7\tPOST\tnode0~AAAAAAAAAAAAAAA=\n".utf8) + [0, 0x0A, 0x09, 0xFF]
        let decoded = try #require(Envelope(decoding: Envelope(origin: "node1", relay: payload).encoded))
        #expect(decoded.origin == "node1")
        guard case .relay(let bytes) = decoded.body else {
            Issue.record("not a relay: \(decoded.body)")
            return
        }
        #expect(bytes == payload)
    }

    /// A registry entry keeps a Socket.IO socket's recovery identity, which a survivor needs when it sweeps the node.
    @Test func aRegistryEntryKeepsWhatRecoveryNeeds() throws {
        var info = ConnectionInfo(id: .random(), userId: "u", connectedAt: 5, sourceIp: "10.0.0.1", userAgent: "ua", stage: nil)
        #expect(RedisBroker.decode(RedisBroker.encode(info)) == info)
        info.recoverable = .init(pid: "p.x", namespace: "/chat")
        #expect(RedisBroker.decode(RedisBroker.encode(info)) == info)
    }
}
