import SwitchboardConfiguration
import SwitchboardCore
import Testing

@testable import SwitchboardGateway

@Suite struct LambdaProxyEventTests {
    let connection = ConnectionInfo(
        id: ConnectionID("R1kmxc2VNjMCFIA=")!,
        userId: "alice",
        connectedAt: 1_705_751_697_419,
        sourceIp: "49.105.91.154",
        userAgent: "Mozilla/5.0",
        stage: "prod",
        domainName: "example.com:8080"
    )

    /// The keys and order of AWS's own sample MESSAGE event (aws-lambda-go `apigw-websocket-request-send-message.json`).
    @Test func messageEventMatchesAWSsSample() {
        let event = LambdaProxyEvent.make(
            .message,
            routeKey: "$default",
            connection: self.connection,
            apiId: "gy415nuibc",
            requestId: "R1knPH17NjMFftw=",
            now: 1_705_751_700_453,
            body: (Array("{\"a\": 1}".utf8), false)
        )
        let object = event.objectValue!
        #expect(object.members.map(\.key) == ["requestContext", "body", "isBase64Encoded"])
        let context = object["requestContext"]!.objectValue!
        #expect(
            context.members.map(\.key) == [
                "routeKey", "messageId", "eventType", "extendedRequestId", "requestTime", "messageDirection", "stage", "connectedAt",
                "requestTimeEpoch", "identity", "requestId", "domainName", "connectionId", "apiId",
            ]
        )
        #expect(context["requestTime"] == "20/Jan/2024:11:55:00 +0000")
        #expect(context["requestTimeEpoch"] == .number("1705751700453"))
        #expect(context["identity"] == ["userAgent": "Mozilla/5.0", "sourceIp": "49.105.91.154"])
        #expect(object["body"] == "{\"a\": 1}")
    }

    @Test func disconnectEventCarriesTheCloseStatusAndHostHeaders() {
        let event = LambdaProxyEvent.make(
            .disconnect,
            routeKey: "$disconnect",
            connection: self.connection,
            apiId: "x",
            requestId: "r",
            now: 1_705_751_708_326,
            close: (1001, "server draining")
        )
        let object = event.objectValue!
        #expect(object.members.map(\.key) == ["headers", "multiValueHeaders", "requestContext", "isBase64Encoded"])
        let context = object["requestContext"]!.objectValue!
        #expect(context["disconnectStatusCode"] == .number("1001"))
        #expect(context["disconnectReason"] == "server draining")
        #expect(context["eventType"] == "DISCONNECT")
        #expect(object["headers"]?.objectValue?["Host"] == "example.com:8080")
    }

    @Test func binaryBodiesAreBase64AndClaimsBecomeTheAuthorizer() {
        var connection = self.connection
        connection.authorizer = ["sub": "alice", "plan": "pro"]
        let event = LambdaProxyEvent.make(
            .message,
            routeKey: "chat",
            connection: connection,
            apiId: "x",
            requestId: "r",
            now: 0,
            body: ([0, 1, 255], true)
        )
        #expect(event.objectValue?["body"] == "AAH/")
        #expect(event.objectValue?["isBase64Encoded"] == true)
        #expect(event[path: ["requestContext", "authorizer"]] == ["plan": "pro", "sub": "alice"])
    }
}

@Suite struct IntegrationReplyTests {
    @Test func readsLambdaProxyResponses() throws {
        let reply = try IntegrationReply(httpStatus: 200, bytes: Array(#"{"statusCode":401,"body":"Unauthorized"}"#.utf8))
        #expect(reply.statusCode == 401 && reply.body == Array("Unauthorized".utf8) && !reply.isSuccess)
        let binary = try IntegrationReply(httpStatus: 200, bytes: Array(#"{"statusCode":200,"body":"AAH/","isBase64Encoded":true}"#.utf8))
        #expect(binary.body == [0, 1, 255] && binary.bodyIsBinary)
        let context = try IntegrationReply(httpStatus: 200, bytes: Array(#"{"statusCode":200,"context":{"userId":"u","n":1}}"#.utf8))
        #expect(context.context == ["userId": "u"])
    }

    /// A statusCode becomes an HTTP status line: a negative or huge one used to trap converting it to `UInt`.
    @Test func statusCodesOutsideHTTPAreAHandlerFailure() {
        for code in ["-1", "0", "99", "600", "9223372036854775807", "1e3", "200.5"] {
            #expect(throws: IntegrationError.self) {
                try IntegrationReply(httpStatus: 200, bytes: Array(#"{"statusCode":\#(code)}"#.utf8))
            }
        }
    }

    @Test func plainHTTPRepliesCountAsTheirStatus() throws {
        let plain = try IntegrationReply(httpStatus: 403, bytes: Array("no".utf8))
        #expect(plain.statusCode == 403 && plain.body == Array("no".utf8))
        let text = try IntegrationReply(httpStatus: 200, bytes: Array("hello".utf8))
        #expect(text.isSuccess && text.body == Array("hello".utf8) && !text.bodyIsBinary)
    }

    @Test func aRaisedHandlerIsAFailure() {
        #expect(throws: IntegrationError.self) {
            try IntegrationReply(httpStatus: 200, bytes: Array(#"{"errorMessage":"boom","errorType":"KeyError"}"#.utf8))
        }
    }

    @Test func integrationsJoinTheRouteTable() throws {
        let configuration = try ConfigurationLoader.load(
            yaml: "integrations:\n  $connect: http://a/\n  sendMessage: http://b/\nintegration:\n  route_responses: [sendMessage]",
            environment: [:],
            arguments: []
        )
        #expect(configuration.routes.integration(for: "$connect")?.url == "http://a/")
        #expect(configuration.routes.resolve(selectedKey: "sendMessage").target == .integration(url: "http://b/", routeResponse: true))
        #expect(configuration.routes.resolve(selectedKey: "ping").target == .builtin(.ping))
        #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.load(yaml: nil, environment: [:], arguments: ["--integrations", "$default=ftp://x"])
        }
        #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.load(yaml: nil, environment: [:], arguments: ["--integration-route-responses", "chat"])
        }
    }
}
