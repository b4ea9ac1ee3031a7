import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import SwitchboardConfiguration
import SwitchboardCore

/// A backend's answer to an event, read the way API Gateway reads a Lambda-proxy response: a JSON object with
/// `statusCode`, `body` and `isBase64Encoded`. A reply that is not such an object counts as its HTTP status with
/// the raw bytes as body, so plain HTTP handlers work too. Beyond AWS, a `$connect` reply may carry a `context`
/// object whose string values reach later events as `requestContext.authorizer` (its `userId` names the user).
struct IntegrationReply: Sendable {
    var statusCode: Int
    var body: [UInt8]?
    /// The body came base64-encoded (`isBase64Encoded`), or as raw bytes that are not UTF-8: a binary frame.
    var bodyIsBinary: Bool
    var context: [String: String]

    var isSuccess: Bool { (200..<300).contains(self.statusCode) }

    init(httpStatus: Int, bytes: [UInt8]) throws(IntegrationError) {
        self.statusCode = httpStatus
        self.body = bytes.isEmpty ? nil : bytes
        self.bodyIsBinary = !UTF8Validation.isValid(bytes)
        self.context = [:]
        guard (200..<300).contains(httpStatus), let object = (try? JSONValue.parse(bytes))?.objectValue else { return }
        if object["errorType"] != nil || object["errorMessage"] != nil, object["statusCode"] == nil {
            // The Lambda runtime interface emulator's shape for a handler that raised.
            throw IntegrationError(.handlerFailed, object["errorMessage"]?.stringValue ?? "handler error")
        }
        guard case .number(let text) = object["statusCode"] else { return }
        // Becomes an HTTP status line (a refused `$connect`): anything else would trap or make a broken response.
        guard let status = Int(text), (100...599).contains(status) else {
            throw IntegrationError(.handlerFailed, "statusCode \(text.prefix(24)) is not an HTTP status (100...599)")
        }
        self.statusCode = status
        switch object["body"] {
        case .string(let body) where object["isBase64Encoded"] == .bool(true):
            guard let data = Data(base64Encoded: body) else { throw IntegrationError(.handlerFailed, "body is not valid base64") }
            self.body = Array(data)
            self.bodyIsBinary = true
        case .string(let body): (self.body, self.bodyIsBinary) = (Array(body.utf8), false)
        case .none, .null: (self.body, self.bodyIsBinary) = (nil, false)
        case .some(let other): (self.body, self.bodyIsBinary) = (other.jsonBytes, false)
        }
        for member in object["context"]?.objectValue?.members ?? [] {
            if let value = member.value.stringValue { self.context[member.key] = value }
        }
    }
}

/// Why an integration call produced no usable reply.
struct IntegrationError: Error, CustomStringConvertible {
    enum Code: Sendable {
        case unreachable
        case timedOut
        case badStatus
        case handlerFailed
    }

    let code: Code
    let detail: String

    init(_ code: Code, _ detail: String) {
        self.code = code
        self.detail = detail
    }

    var description: String { "integration \(self.code): \(self.detail)" }
}

/// Posts Lambda-proxy events to HTTP backends over pooled keep-alive connections.
final class IntegrationClient: Sendable {
    private let http: HTTPClient
    private let headers: [(String, String)]
    private let timeout: TimeAmount

    init(group: any EventLoopGroup, configuration: GatewayConfiguration) {
        var client = HTTPClient.Configuration()
        client.connectionPool = .init(
            idleTimeout: .seconds(60),
            concurrentHTTP1ConnectionsPerHostSoftLimit: configuration.integrationMaxConcurrency
        )
        client.timeout = .init(connect: .seconds(5))
        self.http = HTTPClient(eventLoopGroupProvider: .shared(group), configuration: client)
        self.headers = configuration.integrationHeaders.sorted { $0.key < $1.key }
        self.timeout = TimeAmount(configuration.integrationTimeout)
    }

    /// Posts `event` to `url`. A 5xx answer or any transport failure throws; other statuses come back as replies.
    func invoke(_ url: String, event: JSONValue) async throws(IntegrationError) -> IntegrationReply {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        for (name, value) in self.headers { request.headers.add(name: name, value: value) }
        request.body = .bytes(ByteBuffer(bytes: event.jsonBytes))
        let status: Int
        let bytes: [UInt8]
        do {
            let response = try await self.http.execute(request, timeout: self.timeout)
            status = Int(response.status.code)
            bytes = Array(buffer: try await response.body.collect(upTo: 16 << 20))
        } catch let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout {
            throw IntegrationError(.timedOut, "\(url) did not answer within \(self.timeout)")
        } catch {
            throw IntegrationError(.unreachable, "\(url): \(error)")
        }
        guard status < 500 else { throw IntegrationError(.badStatus, "\(url) answered \(status)") }
        return try IntegrationReply(httpStatus: status, bytes: bytes)
    }

    func shutdown() async {
        try? await self.http.shutdown()
    }
}
