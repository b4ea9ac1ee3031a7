/// A configuration value the gateway refuses, named by its key so the operator knows what to fix.
public struct ConfigurationError: Error, Hashable, CustomStringConvertible {
    /// The configuration key (`heartbeat.ping_interval`), as written in the YAML file.
    public let key: String
    public let reason: String

    public init(key: String, reason: String) {
        self.key = key
        self.reason = reason
    }

    public var description: String { "invalid configuration '\(self.key)': \(self.reason)" }
}
