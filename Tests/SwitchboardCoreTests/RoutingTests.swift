import SwitchboardCore
import Testing

@Suite struct RoutingTests {
    @Test func selectsTheStringAtTheExpressionPath() throws {
        let expression = try RouteSelectionExpression("$request.body.meta.type")
        #expect(expression.routeKey(for: try JSONValue.parse(#"{"meta":{"type":"chat"}}"#)) == "chat")
        #expect(expression.routeKey(for: try JSONValue.parse(#"{"meta":{"type":1}}"#)) == nil)
        #expect(expression.routeKey(for: try JSONValue.parse(#"{"meta":"x"}"#)) == nil)
        #expect(expression.routeKey(for: nil) == nil)
        #expect(RouteSelectionExpression.default.routeKey(for: ["action": "ping"]) == "ping")
    }

    @Test(arguments: ["$request.header.x", "action", "$request.body.", "$request.body.a..b"])
    func refusesExpressionsItCannotEvaluate(_ text: String) {
        #expect(throws: ConfigurationError.self) { try RouteSelectionExpression(text) }
    }

    @Test func unknownAndSpecialKeysFallToDefault() {
        let table = RouteTable.seedProtocol
        #expect(table.resolve(selectedKey: "ping").key == "ping")
        #expect(table.resolve(selectedKey: "nope") == ("$default", .builtin(.unknownAction)))
        #expect(table.resolve(selectedKey: "$connect").key == "$default")
        #expect(table.resolve(selectedKey: nil).key == "$default")
    }

    @Test func tablesCannotServeConnectOrDisconnectWithApps() {
        #expect(throws: ConfigurationError.self) { try RouteTable(["$connect": .builtin(.echo)]) }
        #expect(throws: ConfigurationError.self) { try RouteTable(["$weird": .builtin(.echo)]) }
        #expect(throws: Never.self) { try RouteTable(["$default": .builtin(.echo), "chat": .builtin(.sendMessage)]) }
    }
}
