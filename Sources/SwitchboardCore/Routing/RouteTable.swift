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
    /// An HTTP backend that receives API Gateway's Lambda-proxy event. With `routeResponse`, the reply's `body`
    /// goes back to the client (API Gateway's two-way route).
    case integration(url: String, routeResponse: Bool)
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
        for (key, target) in routes where key == Self.connectKey || key == Self.disconnectKey {
            guard case .integration = target else {
                throw ConfigurationError(key: "routes", reason: "\(key) can be served by an HTTP integration only; built-in apps answer messages")
            }
        }
        for key in routes.keys where key.isEmpty || (key.hasPrefix("$") && ![Self.defaultKey, Self.connectKey, Self.disconnectKey].contains(key)) {
            throw ConfigurationError(key: "routes", reason: "'\(key)' is not a route key (use a name, $default, $connect or $disconnect)")
        }
        self.routes = routes
    }

    /// The table with `overrides` replacing or adding routes.
    public func merging(_ overrides: [String: RouteTarget]) throws(ConfigurationError) -> RouteTable {
        try RouteTable(self.routes.merging(overrides) { _, new in new })
    }

    /// The integration URL serving `$connect` or `$disconnect`, if any.
    public func integration(for key: String) -> (url: String, routeResponse: Bool)? {
        if case .integration(let url, let routeResponse) = self.routes[key] { return (url, routeResponse) }
        return nil
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
