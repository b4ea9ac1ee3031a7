/// API Gateway's route selection expression, restricted to what a WebSocket message can select on:
/// `$request.body.<path>` with a dotted path of JSON object keys (`$request.body.action`, `$request.body.meta.type`).
public struct RouteSelectionExpression: Sendable, Hashable, CustomStringConvertible {
    public let path: [String]

    public static let `default` = try! RouteSelectionExpression("$request.body.action")

    public init(_ expression: String) throws(ConfigurationError) {
        let prefix = "$request.body."
        guard expression.hasPrefix(prefix) else {
            throw ConfigurationError(
                key: "route_selection_expression",
                reason: "'\(expression)' must start with \(prefix), e.g. $request.body.action"
            )
        }
        let path = expression.dropFirst(prefix.count).split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard !path.contains(where: \.isEmpty) else {
            throw ConfigurationError(key: "route_selection_expression", reason: "'\(expression)' has an empty path segment")
        }
        self.path = path
    }

    public var description: String { "$request.body." + self.path.joined(separator: ".") }

    /// The route key a message selects: the string at the path, or `nil` (→ `$default`) when the body is not a
    /// JSON object, the path is missing, or the value there is not a string.
    public func routeKey(for body: JSONValue?) -> String? {
        body?[path: self.path]?.stringValue
    }
}
