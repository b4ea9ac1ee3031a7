/// The Redis Cluster slot of a key (https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/):
/// CRC16-XMODEM of the key modulo 16384, where a key with a hash tag (the text between its first `{` and the first
/// `}` after it, when not empty) hashes only the tag, so related keys can be put in one slot.
public enum HashSlot {
    public static let count = 16384

    public static func of(_ key: some Collection<UInt8>) -> Int {
        if let open = key.firstIndex(of: UInt8(ascii: "{")) {
            let rest = key[key.index(after: open)...]
            if let close = rest.firstIndex(of: UInt8(ascii: "}")), close != rest.startIndex {
                return Int(self.crc16(rest[..<close])) % self.count
            }
        }
        return Int(self.crc16(key)) % self.count
    }

    public static func of(_ key: String) -> Int {
        self.of(key.utf8)
    }

    static func of(_ key: RedisArgument) -> Int {
        switch key {
        case .string(let text): self.of(text.utf8)
        case .bytes(let bytes): self.of(bytes)
        }
    }

    /// CRC16-XMODEM (polynomial 0x1021, initial value 0), a bit at a time: keys are short.
    static func crc16(_ bytes: some Collection<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc ^= UInt16(byte) << 8
            for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        }
        return crc
    }
}

/// A cluster node as the client connects to it.
struct ClusterNode: Hashable, Sendable, CustomStringConvertible {
    var host: String
    var port: Int

    var description: String { "\(self.host):\(self.port)" }
}

/// Which primary serves each slot, as `CLUSTER SHARDS` or `CLUSTER SLOTS` tell it. Replicas are left out: the
/// client reads and writes on primaries only.
struct ClusterTopology: Sendable, Equatable {
    private(set) var primaries: [ClusterNode] = []
    /// For each slot, its owner's index in `primaries`; -1 while no primary serves it.
    private var owners = [Int16](repeating: -1, count: HashSlot.count)
    /// The node to connect to for each address a node announces (its ip and endpoint, with its port and TLS port):
    /// MOVED and ASK name a node by its preferred endpoint, usually the ip, which is not what TLS can verify.
    private var addresses: [ClusterNode: ClusterNode] = [:]

    var isComplete: Bool { !self.owners.contains(-1) }

    /// The same owner for every slot, whatever order the nodes were listed in.
    static func == (lhs: Self, rhs: Self) -> Bool {
        (0..<HashSlot.count).allSatisfy { lhs.owner(of: $0) == rhs.owner(of: $0) }
    }

    func owner(of slot: Int) -> ClusterNode? {
        let index = self.owners[slot]
        return index < 0 ? nil : self.primaries[Int(index)]
    }

    func address(of announced: ClusterNode) -> ClusterNode {
        self.addresses[announced] ?? announced
    }

    /// `slots` are within 0..<16384 (callers parse them with `slot(_:)` or take them from `HashSlot`).
    mutating func assign(_ slots: ClosedRange<Int>, to node: ClusterNode) {
        var index = self.primaries.firstIndex(of: node)
        if index == nil, self.primaries.count < Int(Int16.max) {
            self.primaries.append(node)
            index = self.primaries.count - 1
        }
        let owner = Int16(index ?? -1)
        for slot in slots { self.owners[slot] = owner }
    }

    /// A `CLUSTER SHARDS` reply (Redis 7), RESP2 or RESP3. With TLS a node is reached by its `hostname` when it has
    /// one (what its certificate names) and its `tls-port`; otherwise by its `endpoint`, then its `ip`.
    /// - Parameter queried: the node that answered: a node with no usable address is on the same host.
    init(shards reply: RESPValue, tls: Bool, queried: ClusterNode) throws(RedisError) {
        guard let shards = reply.elements else { throw Self.bad("CLUSTER SHARDS", "not an array") }
        for shard in shards {
            let fields = try Self.fields(shard)
            guard let ranges = fields["slots"]?.elements, ranges.count % 2 == 0, let nodes = fields["nodes"]?.elements else {
                throw Self.bad("CLUSTER SHARDS", "a shard without slots or nodes")
            }
            var primary: (node: ClusterNode, online: Bool)?
            for node in nodes {
                let info = try Self.fields(node)
                let announced = try self.announce(
                    hostname: info["hostname"]?.string,
                    endpoint: info["endpoint"]?.string,
                    ip: info["ip"]?.string,
                    port: try info["port"].map(Self.port),
                    tlsPort: try info["tls-port"].map(Self.port),
                    tls: tls,
                    queried: queried
                )
                let online = info["health"]?.string == "online"
                if info["role"]?.string == "master", primary == nil || (online && primary?.online == false) {
                    primary = (announced, online)
                }
            }
            guard !ranges.isEmpty else { continue }  // a primary that lost its slots (failed over, or emptied)
            guard let primary else { throw Self.bad("CLUSTER SHARDS", "a shard with slots and no primary") }
            for pair in stride(from: 0, to: ranges.count, by: 2) {
                let (first, last) = (try Self.slot(ranges[pair]), try Self.slot(ranges[pair + 1]))
                guard first <= last else { throw Self.bad("CLUSTER SHARDS", "slot range \(first)-\(last)") }
                self.assign(first...last, to: primary.node)
            }
        }
    }

    /// A `CLUSTER SLOTS` reply (Redis 3 to 6, and servers without `CLUSTER SHARDS`), RESP2 or RESP3: per range, its
    /// first and last slot, then the primary as `[endpoint, port, id, {hostname: …}]`, then the replicas.
    init(slots reply: RESPValue, tls: Bool, queried: ClusterNode) throws(RedisError) {
        guard let ranges = reply.elements else { throw Self.bad("CLUSTER SLOTS", "not an array") }
        for range in ranges {
            guard let parts = range.elements, parts.count >= 3, let node = parts[2].elements, node.count >= 2 else {
                throw Self.bad("CLUSTER SLOTS", "a range without a primary")
            }
            let (first, last) = (try Self.slot(parts[0]), try Self.slot(parts[1]))
            guard first <= last else { throw Self.bad("CLUSTER SLOTS", "slot range \(first)-\(last)") }
            let hostname = node.count > 3 ? try Self.fields(node[3])["hostname"]?.string : nil
            let port = try Self.port(node[1])  // the TLS port when asked over TLS
            let primary = try self.announce(
                hostname: hostname,
                endpoint: node[0].string,
                ip: nil,
                port: port,
                tlsPort: port,
                tls: tls,
                queried: queried
            )
            self.assign(first...last, to: primary)
        }
    }

    /// The address to connect to among those a node announces, remembered for each of them; an empty or unknown
    /// (`?`) host is the queried node's.
    private mutating func announce(
        hostname: String?,
        endpoint: String?,
        ip: String?,
        port: Int?,
        tlsPort: Int?,
        tls: Bool,
        queried: ClusterNode
    ) throws(RedisError) -> ClusterNode {
        let hosts = [hostname, endpoint, ip].map { $0.flatMap { $0.isEmpty || $0 == "?" ? nil : $0 } }
        guard let chosen = tls ? tlsPort ?? port : port ?? tlsPort else { throw Self.bad("cluster reply", "a node without a port") }
        let address = ClusterNode(host: (tls ? hosts[0] : nil) ?? hosts[1] ?? hosts[2] ?? queried.host, port: chosen)
        for host in hosts.compactMap({ $0 }) + [address.host] {
            for port in [port, tlsPort].compactMap({ $0 }) { self.addresses[ClusterNode(host: host, port: port)] = address }
        }
        return address
    }

    /// Keys and values of a map, or of RESP2's flat array of them.
    private static func fields(_ value: RESPValue) throws(RedisError) -> [String: RESPValue] {
        guard let elements = value.elements, elements.count % 2 == 0 else { throw Self.bad("cluster reply", "not a map") }
        var fields: [String: RESPValue] = [:]
        for pair in stride(from: 0, to: elements.count, by: 2) {
            if let key = elements[pair].string { fields[key] = elements[pair + 1] }
        }
        return fields
    }

    static func slot(_ value: RESPValue) throws(RedisError) -> Int {
        guard let slot = value.int, (0..<Int64(HashSlot.count)).contains(slot) else { throw Self.bad("cluster reply", "slot \(value)") }
        return Int(slot)
    }

    static func port(_ value: RESPValue) throws(RedisError) -> Int {
        guard let port = value.int, (1...65535).contains(port) else { throw Self.bad("cluster reply", "port \(value)") }
        return Int(port)
    }

    private static func bad(_ reply: String, _ what: String) -> RedisError {
        RedisError(.server, "bad \(reply) reply: \(what)")
    }
}

/// A `-MOVED slot host:port` or `-ASK slot host:port` error reply: the slot is served elsewhere, for good or while
/// it migrates. Every number is checked, so a malformed redirect is an ordinary error reply, never a trap.
enum ClusterRedirect: Equatable {
    case moved(slot: Int, to: ClusterNode)
    case ask(slot: Int, to: ClusterNode)

    /// `nil` for any other error, and for a redirect that does not parse.
    /// - Parameter node: the node that answered: an empty host (an endpoint Redis does not know) means its host.
    init?(_ message: String, from node: ClusterNode) {
        let parts = message.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "MOVED" || parts[0] == "ASK", let slot = Int(parts[1]), (0..<HashSlot.count).contains(slot),
            let colon = parts[2].lastIndex(of: ":"), let port = Int(parts[2][parts[2].index(after: colon)...]), (1...65535).contains(port)
        else { return nil }
        let host = parts[2][..<colon]
        let target = ClusterNode(host: host.isEmpty ? node.host : String(host), port: port)
        self = parts[0] == "MOVED" ? .moved(slot: slot, to: target) : .ask(slot: slot, to: target)
    }
}
