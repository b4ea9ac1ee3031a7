import NIOCore
import Testing

@testable import SwitchboardRedis

@Suite struct ClusterTopologyTests {
    let queried = ClusterNode(host: "10.0.0.9", port: 7000)

    /// The spec's vectors: https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/
    @Test func hashSlotsFollowTheSpec() {
        #expect(HashSlot.crc16(Array("123456789".utf8)) == 0x31C3)
        #expect(HashSlot.of("123456789") == 0x31C3 % 16384)
        #expect(HashSlot.of("foo") == 12182)
        #expect(HashSlot.of("bar") == 5061)
        #expect(HashSlot.of("") == 0)
        #expect(HashSlot.of("{user1000}.following") == HashSlot.of("{user1000}.followers"))
        #expect(HashSlot.of("{user1000}.following") == HashSlot.of("user1000"))
        #expect(HashSlot.of("foo{}{bar}") == Int(HashSlot.crc16(Array("foo{}{bar}".utf8))) % 16384)
        #expect(HashSlot.of("foo{{bar}}zap") == HashSlot.of("{bar"))
        #expect(HashSlot.of("foo{bar}{zap}") == HashSlot.of("bar"))
        #expect(HashSlot.of("{") == HashSlot.of(Array("{".utf8)))
        #expect(HashSlot.of(Array("foo".utf8)[...]) == 12182)
    }

    @Test func commandsAreRoutedByTheirKey() {
        #expect(RedisClusterClient.slot(of: ["GET", "foo"]) == 12182)
        #expect(RedisClusterClient.slot(of: ["set", .bytes(Array("foo".utf8)), "1"]) == 12182)
        #expect(RedisClusterClient.slot(of: ["SPUBLISH", "foo", "x"]) == 12182)
        #expect(RedisClusterClient.slot(of: ["EVAL", "return 1", "2", "foo", "bar"]) == 12182)
        #expect(RedisClusterClient.slot(of: ["EVALSHA", "abc", "0"]) == nil)
        #expect(RedisClusterClient.slot(of: ["EVAL", "return 1", "0", "foo"]) == nil)
        #expect(RedisClusterClient.slot(of: ["FCALL", "f", "1", "{foo}.x"]) == 12182)
        for keyless: [RedisArgument] in [["PING"], ["PUBLISH", "foo", "x"], ["CLUSTER", "SHARDS"], ["SCRIPT", "LOAD", "x"], ["INFO", "foo"]] {
            #expect(RedisClusterClient.slot(of: keyless) == nil)
        }
    }

    static let shards2 =
        "*2\r\n*4\r\n$5\r\nslots\r\n*4\r\n:0\r\n:99\r\n:200\r\n:5460\r\n$5\r\nnodes\r\n*2\r\n"
        + "*14\r\n$2\r\nid\r\n$1\r\na\r\n$4\r\nport\r\n:7000\r\n$2\r\nip\r\n$8\r\n10.0.0.1\r\n$8\r\nendpoint\r\n$8\r\n10.0.0.1\r\n"
        + "$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n"
        + "*10\r\n$2\r\nid\r\n$1\r\nb\r\n$4\r\nport\r\n:7003\r\n$2\r\nip\r\n$8\r\n10.0.0.4\r\n$4\r\nrole\r\n$7\r\nreplica\r\n"
        + "$6\r\nhealth\r\n$6\r\nonline\r\n"
        + "*4\r\n$5\r\nslots\r\n*2\r\n:100\r\n:199\r\n$5\r\nnodes\r\n*1\r\n"
        + "*8\r\n$4\r\nport\r\n:7001\r\n$2\r\nip\r\n$8\r\n10.0.0.2\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$6\r\nhealth\r\n$6\r\nonline\r\n"

    @Test func readsClusterShardsInRESP2() throws {
        let topology = try ClusterTopology(shards: try Self.parse(Self.shards2), tls: false, queried: self.queried)
        let (a, b) = (ClusterNode(host: "10.0.0.1", port: 7000), ClusterNode(host: "10.0.0.2", port: 7001))
        #expect(topology.primaries == [a, b])
        #expect(topology.owner(of: 0) == a && topology.owner(of: 99) == a && topology.owner(of: 5460) == a)
        #expect(topology.owner(of: 100) == b && topology.owner(of: 199) == b)
        #expect(topology.owner(of: 5461) == nil && !topology.isComplete)
    }

    /// RESP3 maps; TLS: the hostname and the TLS port; a failed primary beside an online one; a primary whose slots
    /// are gone.
    @Test func readsClusterShardsInRESP3WithTLS() throws {
        let node = { (fields: [(String, RESPValue)]) in RESPValue.map(fields.map { (.bulkString(Array($0.0.utf8)), $0.1) }) }
        let text = { (text: String) in RESPValue.bulkString(Array(text.utf8)) }
        let reply = RESPValue.array([
            .map([
                (text("slots"), .array([.integer(0), .integer(16383)])),
                (
                    text("nodes"),
                    .array([
                        node([("port", .integer(6379)), ("ip", text("10.0.0.1")), ("role", text("master")), ("health", text("fail"))]),
                        node([
                            ("port", .integer(6379)), ("tls-port", .integer(6380)), ("ip", text("10.0.0.2")), ("endpoint", text("10.0.0.2")),
                            ("hostname", text("b.cache.example.com")), ("role", text("master")), ("health", text("online")),
                        ]),
                    ])
                ),
            ]),
            .map([
                (text("slots"), .array([])), (text("nodes"), .array([node([("port", .integer(1)), ("ip", text("x")), ("role", text("master"))])])),
            ]),
        ])
        let topology = try ClusterTopology(shards: reply, tls: true, queried: self.queried)
        let b = ClusterNode(host: "b.cache.example.com", port: 6380)
        #expect(topology.primaries == [b] && topology.isComplete && topology.owner(of: 16383) == b)
        // MOVED names the node by its ip: TLS connects by the hostname its certificate has.
        #expect(topology.address(of: ClusterNode(host: "10.0.0.2", port: 6380)) == b)
        #expect(topology.address(of: ClusterNode(host: "10.0.0.2", port: 6379)) == b)
        let plain = try ClusterTopology(shards: reply, tls: false, queried: self.queried)
        #expect(plain.primaries == [ClusterNode(host: "10.0.0.2", port: 6379)])
    }

    @Test func readsClusterSlotsInRESP2AndRESP3() throws {
        let resp2 =
            "*2\r\n*4\r\n:0\r\n:8191\r\n*4\r\n$9\r\n127.0.0.1\r\n:7100\r\n$2\r\nid\r\n*0\r\n*4\r\n$9\r\n127.0.0.1\r\n:7105\r\n$2\r\nid\r\n*0\r\n"
            + "*3\r\n:8192\r\n:16383\r\n*4\r\n$0\r\n\r\n:7101\r\n$2\r\nid\r\n*2\r\n$8\r\nhostname\r\n$6\r\nb.test\r\n"
        let topology = try ClusterTopology(slots: try Self.parse(resp2), tls: false, queried: self.queried)
        #expect(topology.owner(of: 0) == ClusterNode(host: "127.0.0.1", port: 7100))
        // An empty endpoint is the host that answered.
        #expect(topology.owner(of: 16383) == ClusterNode(host: "10.0.0.9", port: 7101) && topology.isComplete)
        let tls = try ClusterTopology(slots: try Self.parse(resp2), tls: true, queried: self.queried)
        #expect(tls.owner(of: 16383) == ClusterNode(host: "b.test", port: 7101))
        let resp3 = "*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n$1\r\nh\r\n:1\r\n$2\r\nid\r\n%1\r\n$8\r\nhostname\r\n$1\r\nn\r\n"
        #expect(try ClusterTopology(slots: try Self.parse(resp3), tls: true, queried: self.queried).owner(of: 5) == ClusterNode(host: "n", port: 1))
    }

    @Test func refusesBadTopologiesWithoutTrapping() throws {
        for reply in [
            "+OK\r\n",
            "*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\nh\r\n:1\r\n",  // slot past the end
            "*1\r\n*3\r\n:-1\r\n:5\r\n*2\r\n$1\r\nh\r\n:1\r\n",
            "*1\r\n*3\r\n:9\r\n:5\r\n*2\r\n$1\r\nh\r\n:1\r\n",  // backwards
            "*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$1\r\nh\r\n:0\r\n",  // port 0
            "*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$1\r\nh\r\n:65536\r\n",
            "*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$1\r\nh\r\n:9223372036854775807\r\n",
            "*1\r\n*3\r\n:0\r\n:5\r\n*1\r\n$1\r\nh\r\n",  // no port
            "*1\r\n*2\r\n:0\r\n:5\r\n",
        ] {
            #expect(throws: RedisError.self) { try ClusterTopology(slots: try Self.parse(reply), tls: false, queried: self.queried) }
        }
        for reply in [
            "*1\r\n*4\r\n$5\r\nslots\r\n*1\r\n:0\r\n$5\r\nnodes\r\n*0\r\n",  // odd number of slot bounds
            "*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:1\r\n$5\r\nnodes\r\n*0\r\n",  // slots and no primary
            "*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:99999\r\n$5\r\nnodes\r\n*1\r\n*4\r\n$4\r\nport\r\n:1\r\n$4\r\nrole\r\n$6\r\nmaster\r\n",
            "*1\r\n*2\r\n$5\r\nslots\r\n*0\r\n",
            "*1\r\n*3\r\n$5\r\nslots\r\n*0\r\n$5\r\nnodes\r\n",  // not a map
        ] {
            #expect(throws: RedisError.self) { try ClusterTopology(shards: try Self.parse(reply), tls: false, queried: self.queried) }
        }
    }

    @Test func readsRedirects() {
        let node = ClusterNode(host: "10.0.0.9", port: 7000)
        #expect(ClusterRedirect("MOVED 3999 127.0.0.1:6381", from: node) == .moved(slot: 3999, to: ClusterNode(host: "127.0.0.1", port: 6381)))
        #expect(ClusterRedirect("ASK 0 h.example:1", from: node) == .ask(slot: 0, to: ClusterNode(host: "h.example", port: 1)))
        #expect(ClusterRedirect("MOVED 16383 :6380", from: node) == .moved(slot: 16383, to: ClusterNode(host: "10.0.0.9", port: 6380)))
        #expect(ClusterRedirect("MOVED 1 ::1:6380", from: node) == .moved(slot: 1, to: ClusterNode(host: "::1", port: 6380)))
        for malformed in [
            "MOVED", "MOVED 1", "MOVED 16384 h:1", "MOVED -1 h:1", "MOVED 1 h:0", "MOVED 1 h:65536", "MOVED 1 h", "MOVED 1 h:",
            "MOVED 1 h:x", "MOVED 99999999999999999999999 h:1", "MOVED 1 h:99999999999999999999999", "ASK 1 h:1 extra", "MOVED  1 h:1",
            "ERR MOVED 1 h:1", "CROSSSLOT Keys in request don't hash to the same slot", "",
        ] {
            #expect(ClusterRedirect(malformed, from: node) == nil, "\(malformed)")
        }
    }

    static func parse(_ text: String) throws -> RESPValue {
        var buffer = ByteBuffer(string: text)
        var decoder = RESPDecoder(maximumReplyBytes: 1 << 20)
        guard let value = try decoder.next(&buffer), buffer.readableBytes == 0 else { throw RedisError(.server, "incomplete test reply") }
        return value
    }
}
