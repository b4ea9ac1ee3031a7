/// The apps built into the gateway, each serving one action of the seed protocol (DESIGN §3).
public enum BuiltinApp: String, CaseIterable, Sendable, Hashable {
    /// `{"action":"ping"}` → `{"action":"pong","timestamp":…}`.
    case ping
    /// Sends every frame back unchanged: same bytes, same opcode.
    case echo
    case joinRoom
    case leaveRoom
    case sendMessage
    /// Answers `{"action":"error","message":"Unknown action: X"}`, the seed's `$default`.
    case unknownAction
}

/// What serves a route.
public enum RouteTarget: Sendable, Hashable {
    case builtin(BuiltinApp)
}

/// Route keys to targets, with API Gateway's special keys.
public struct RouteTable: Sendable, Hashable {
    public static let connectKey = "$connect"
    public static let disconnectKey = "$disconnect"
    public static let defaultKey = "$default"

    public private(set) var routes: [String: RouteTarget]

    /// The seed protocol on a fresh install.
    public static let seedProtocol = RouteTable(unchecked: [
        "ping": .builtin(.ping),
        "joinRoom": .builtin(.joinRoom),
        "leaveRoom": .builtin(.leaveRoom),
        "sendMessage": .builtin(.sendMessage),
        defaultKey: .builtin(.unknownAction),
    ])

    private init(unchecked routes: [String: RouteTarget]) {
        self.routes = routes
    }

    /// Validates a route map read from configuration.
    public init(_ routes: [String: RouteTarget]) throws(ConfigurationError) {
        for (key, _) in routes where key == Self.connectKey || key == Self.disconnectKey {
            throw ConfigurationError(
                key: "routes",
                reason: "\(key) is served by the gateway itself; built-in apps answer messages only"
            )
        }
        for key in routes.keys where key.isEmpty || (key.hasPrefix("$") && key != Self.defaultKey) {
            throw ConfigurationError(key: "routes", reason: "'\(key)' is not a route key (use a name or $default)")
        }
        self.routes = routes
    }

    /// The route a message takes: its selected key when a route has that key, `$default` otherwise.
    /// Keys starting with `$` are never selected by a message, as on API Gateway.
    public func resolve(selectedKey: String?) -> (key: String, target: RouteTarget?) {
        if let selectedKey, !selectedKey.hasPrefix("$"), let target = self.routes[selectedKey] {
            return (selectedKey, target)
        }
        return (Self.defaultKey, self.routes[Self.defaultKey])
    }
}
