import Foundation
import SwitchboardCore

/// API Gateway's WebSocket Lambda-proxy event, field for field and type for type, as the samples AWS publishes in
/// its Lambda event libraries show it: handlers written for API Gateway read it unchanged.
enum LambdaProxyEvent {
    enum Kind: String {
        case connect = "CONNECT"
        case message = "MESSAGE"
        case disconnect = "DISCONNECT"
    }

    /// The handshake of a `$connect`: its headers and query, in arrival order.
    struct Handshake: Sendable {
        var headers: [(name: String, value: String)]
        var query: [(name: String, value: String)]
    }

    /// - Parameters:
    ///   - kind: CONNECT, MESSAGE or DISCONNECT.
    ///   - routeKey: the route the event is for.
    ///   - connection: the connection's registry entry.
    ///   - apiId: the configured API id (`requestContext.apiId`).
    ///   - requestId: this event's id, also used as `extendedRequestId` and, for messages, `messageId`.
    ///   - now: milliseconds since 1970 (`requestTimeEpoch`, `requestTime`).
    ///   - handshake: CONNECT only: headers and query parameters.
    ///   - body: MESSAGE only: the frame's bytes and whether it was binary (sent base64).
    ///   - close: DISCONNECT only: the close code and reason.
    static func make(
        _ kind: Kind,
        routeKey: String,
        connection: ConnectionInfo,
        apiId: String,
        requestId: String,
        now: Int64,
        handshake: Handshake? = nil,
        body: (bytes: [UInt8], isBinary: Bool)? = nil,
        close: (code: UInt16, reason: String)? = nil
    ) -> JSONValue {
        var context: [JSONObject.Member] = [.init("routeKey", .string(routeKey))]
        if kind == .message { context.append(.init("messageId", .string(requestId))) }
        if let close { context.append(.init("disconnectStatusCode", .number(String(close.code)))) }
        context += [
            .init("eventType", .string(kind.rawValue)),
            .init("extendedRequestId", .string(requestId)),
            .init("requestTime", .string(self.requestTime(epochMilliseconds: now))),
            .init("messageDirection", "IN"),
        ]
        if let close { context.append(.init("disconnectReason", .string(close.reason))) }
        context += [
            .init("stage", .string(connection.stage ?? "$default")),
            .init("connectedAt", .number(String(connection.connectedAt))),
            .init("requestTimeEpoch", .number(String(now))),
            .init("identity", ["userAgent": .string(connection.userAgent), "sourceIp": .string(connection.sourceIp)]),
            .init("requestId", .string(requestId)),
            .init("domainName", .string(connection.domainName)),
            .init("connectionId", .string(connection.id.rawValue)),
            .init("apiId", .string(apiId)),
        ]
        if !connection.authorizer.isEmpty {
            let claims = connection.authorizer.sorted { $0.key < $1.key }.map { JSONObject.Member($0.key, .string($0.value)) }
            context.append(.init("authorizer", .object(JSONObject(claims))))
        }

        var event: [JSONObject.Member] = []
        switch kind {
        case .connect:
            let headers = handshake?.headers ?? []
            event += self.singleAndMulti(headers, single: "headers", multi: "multiValueHeaders")
            event += self.singleAndMulti(handshake?.query ?? [], single: "queryStringParameters", multi: "multiValueQueryStringParameters")
        case .disconnect:
            let headers = [("Host", connection.domainName), ("x-api-key", ""), ("X-Forwarded-For", connection.sourceIp), ("x-restapi", "")]
            event += self.singleAndMulti(headers, single: "headers", multi: "multiValueHeaders")
        case .message:
            break
        }
        event.append(.init("requestContext", .object(JSONObject(context))))
        if let body {
            let text = body.isBinary ? Data(body.bytes).base64EncodedString() : String(decoding: body.bytes, as: UTF8.self)
            event.append(.init("body", .string(text)))
        }
        event.append(.init("isBase64Encoded", .bool(body?.isBinary ?? false)))
        return .object(JSONObject(event))
    }

    /// API Gateway's pair of maps: the last value of each name, and every value. Both are left out when empty,
    /// as API Gateway leaves out `queryStringParameters` for a URL without a query.
    private static func singleAndMulti(_ pairs: [(name: String, value: String)], single: String, multi: String) -> [JSONObject.Member] {
        guard !pairs.isEmpty else { return [] }
        var order: [String] = []
        var values: [String: [String]] = [:]
        for (name, value) in pairs {
            if values[name] == nil { order.append(name) }
            values[name, default: []].append(value)
        }
        let singles = order.map { JSONObject.Member($0, .string(values[$0]!.last!)) }
        let multis = order.map { JSONObject.Member($0, .array(values[$0]!.map(JSONValue.string))) }
        return [.init(single, .object(JSONObject(singles))), .init(multi, .object(JSONObject(multis)))]
    }

    /// `20/Jan/2024:11:55:00 +0000`, API Gateway's `requestTime`.
    static func requestTime(epochMilliseconds ms: Int64) -> String {
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        let iso = ISO8601.string(epochMilliseconds: ms)  // 2024-01-20T11:55:00.000Z
        let parts = Array(iso.utf8)
        func text(_ range: Range<Int>) -> String { String(decoding: parts[range], as: UTF8.self) }
        let month = months[Int(text(5..<7))! - 1]
        return "\(text(8..<10))/\(month)/\(text(0..<4)):\(text(11..<19)) +0000"
    }
}
