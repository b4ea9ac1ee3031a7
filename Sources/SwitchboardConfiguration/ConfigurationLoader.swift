import SwitchboardCore
import Yams

/// Builds a ``GatewayConfiguration`` from defaults, a YAML file, `SWITCHBOARD_*` variables and flags, in that
/// order. Any key it does not know, and any value it cannot use, stops the start with the key and the reason.
public enum ConfigurationLoader {
    /// The variable that names the YAML file when `--config` is absent.
    public static let configFileVariable = "SWITCHBOARD_CONFIG"
    /// The variable that names the directory of the gateway's resource files (OpenAPI document, dashboard, browser
    /// client), when they are not in the resource bundle beside the executable. Not a configuration key: the
    /// gateway reads it when it starts.
    public static let resourcesVariable = "SWITCHBOARD_RESOURCES"

    public static func load(
        yaml: String?,
        environment: [String: String],
        arguments: [String]
    ) throws(ConfigurationError) -> GatewayConfiguration {
        var configuration = GatewayConfiguration()
        if let yaml {
            for (key, value) in try self.flatten(yaml: yaml) {
                try self.option(named: key).apply(value, to: &configuration)
            }
        }
        for (name, text) in environment.sorted(by: { $0.key < $1.key }) where name.hasPrefix("SWITCHBOARD_") {
            if name == self.configFileVariable || name == self.resourcesVariable { continue }
            guard let option = ConfigurationSchema.options.first(where: { $0.environmentVariable == name }) else {
                throw ConfigurationError(key: name, reason: "unknown environment variable; see switchboard serve --help")
            }
            try option.apply(option.value(fromString: text), to: &configuration)
        }
        var remaining = arguments[...]
        while let argument = remaining.popFirst() {
            let (flag, inline) = self.split(argument)
            guard let option = ConfigurationSchema.options.first(where: { $0.flag == flag }) else {
                throw ConfigurationError(key: argument, reason: "unknown option; see switchboard serve --help")
            }
            let text: String
            if let inline {
                text = inline
            } else if let next = remaining.first, !next.hasPrefix("--") {
                text = remaining.removeFirst()
            } else if option.defaultText == "false" || option.defaultText == "true" {
                text = "true"  // a bare boolean flag switches it on
            } else {
                throw ConfigurationError(key: option.key, reason: "\(flag) needs a value")
            }
            try option.apply(option.value(fromString: text), to: &configuration)
        }
        try configuration.resolveIntegrations()
        try configuration.validate()
        return configuration
    }

    private static func split(_ argument: String) -> (flag: String, value: String?) {
        guard let equals = argument.firstIndex(of: "=") else { return (argument, nil) }
        return (String(argument[..<equals]), String(argument[argument.index(after: equals)...]))
    }

    private static func option(named key: String) throws(ConfigurationError) -> ConfigurationOption {
        guard let option = ConfigurationSchema.options.first(where: { $0.key == key }) else {
            throw ConfigurationError(key: key, reason: "unknown key; known keys: \(ConfigurationSchema.options.map(\.key).joined(separator: ", "))")
        }
        return option
    }

    /// YAML mappings become dotted keys (`heartbeat: {ping_interval: 5s}` → `heartbeat.ping_interval`) until a key
    /// names an option; that option takes the node whole, as a scalar, a list or a map.
    static func flatten(yaml: String) throws(ConfigurationError) -> [(String, ConfigurationValue)] {
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch {
            throw ConfigurationError(key: "(file)", reason: "not valid YAML: \(error)")
        }
        guard let root else { return [] }
        guard root.mapping != nil else { throw ConfigurationError(key: "(file)", reason: "the top level must be a mapping of keys") }
        var result: [(String, ConfigurationValue)] = []
        try self.flatten(root, prefix: "", into: &result)
        return result
    }

    private static func flatten(_ node: Node, prefix: String, into result: inout [(String, ConfigurationValue)]) throws(ConfigurationError) {
        if let option = ConfigurationSchema.options.first(where: { $0.key == prefix }) {
            result.append((prefix, try self.value(of: node, for: option)))
            return
        }
        guard let mapping = node.mapping else {
            throw ConfigurationError(
                key: prefix,
                reason: "unknown key; known keys: \(ConfigurationSchema.options.map(\.key).joined(separator: ", "))"
            )
        }
        for (keyNode, child) in mapping {
            guard let key = keyNode.string else { throw ConfigurationError(key: prefix, reason: "keys must be strings") }
            try self.flatten(child, prefix: prefix.isEmpty ? key : prefix + "." + key, into: &result)
        }
    }

    private static func value(of node: Node, for option: ConfigurationOption) throws(ConfigurationError) -> ConfigurationValue {
        switch (option.shape, node) {
        case (.scalar, .scalar(let scalar)): return .scalar(scalar.string)
        case (.list, .sequence(let sequence)):
            var items: [String] = []
            for item in sequence {
                guard let string = item.string else { throw ConfigurationError(key: option.key, reason: "list items must be scalars") }
                items.append(string)
            }
            return .list(items)
        case (.list, .scalar(let scalar)): return option.value(fromString: scalar.string)
        case (.map, .mapping(let mapping)):
            var map: [String: String] = [:]
            for (key, value) in mapping {
                guard let key = key.string, let value = value.string else {
                    throw ConfigurationError(key: option.key, reason: "map keys and values must be scalars")
                }
                map[key] = value
            }
            return .map(map)
        default:
            throw ConfigurationError(key: option.key, reason: "expected a \(option.shape)")
        }
    }
}
