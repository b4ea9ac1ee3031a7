/// What the broker needs of Redis for commands: one endpoint (``RedisClient``) or a cluster (``RedisClusterClient``).
public protocol RedisCommands: Sendable {
    /// Sends a command and returns its reply; error replies throw `.server`.
    func send(_ command: [RedisArgument]) async throws(RedisError) -> RESPValue
    /// Replies in the order of `commands`; an error reply is returned, not thrown.
    func pipeline(_ commands: [[RedisArgument]]) async throws(RedisError) -> [RESPValue]
    /// The same, with each command's own outcome: on a cluster a shard that failed fails only its commands, so a
    /// caller can retry exactly those without running the others twice.
    func pipelineEach(_ commands: [[RedisArgument]]) async -> [Result<RESPValue, RedisError>]
    /// Whether Redis answered the last command or probe (on a cluster: every slot's owner did).
    var isConnected: Bool { get }
    /// Checks that Redis answers; run every second, it is what makes an unreachable Redis usable again.
    func probe() async -> RedisClient.Probe
    func close()
}

extension RedisCommands {
    /// One endpoint: all the commands succeed or fail together.
    public func pipelineEach(_ commands: [[RedisArgument]]) async -> [Result<RESPValue, RedisError>] {
        do {
            return try await self.pipeline(commands).map { .success($0) }
        } catch {
            return Array(repeating: .failure(error), count: commands.count)
        }
    }

    @discardableResult
    public func send(_ command: RedisArgument...) async throws(RedisError) -> RESPValue {
        try await self.send(command)
    }
}

/// What the broker needs of pub/sub: one endpoint (``RedisSubscriber``) or sharded pub/sub on a cluster
/// (``RedisShardedSubscriber``).
public protocol RedisPubSub: Sendable {
    /// Keeps the subscriptions up until `stop()`.
    func run() async
    /// Subscribes (remembered across reconnects); returns once Redis confirmed, when connected.
    func subscribe(_ channel: String) async throws(RedisError)
    func unsubscribe(_ channel: String) async throws(RedisError)
    var isConnected: Bool { get }
    /// Drops the connections (Redis stopped answering); the next ones subscribe again to everything.
    func reset()
    func stop()
}

extension RedisClient: RedisCommands {}

/// On a cluster, a classic `PUBLISH` reaches every node, so a subscriber connected to any one node still serves the
/// channels that are published that way (broadcast, ingress).
extension RedisSubscriber: RedisPubSub {}
