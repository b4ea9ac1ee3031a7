import NIOHTTP1

/// A management API failure in AWS's wire shape: the status, the `x-amzn-ErrorType` header botocore maps to a typed
/// exception (`GoneException`, …), and a `{"message": …}` body.
struct ManagementError: Error {
    let status: HTTPResponseStatus
    let type: String
    let message: String

    static func gone(_ id: String) -> ManagementError {
        ManagementError(status: .gone, type: "GoneException", message: "Connection \(id) is gone")
    }

    static func badRequest(_ message: String) -> ManagementError {
        ManagementError(status: .badRequest, type: "BadRequestException", message: message)
    }

    static func forbidden(_ message: String) -> ManagementError {
        ManagementError(status: .forbidden, type: "ForbiddenException", message: message)
    }

    static func payloadTooLarge(limit: Int) -> ManagementError {
        ManagementError(status: .payloadTooLarge, type: "PayloadTooLargeException", message: "The data exceeds the \(limit)-byte message limit")
    }

    static func limitExceeded(_ message: String) -> ManagementError {
        ManagementError(status: .tooManyRequests, type: "LimitExceededException", message: message)
    }

    static func notFound(_ message: String) -> ManagementError {
        ManagementError(status: .notFound, type: "NotFoundException", message: message)
    }

    static func methodNotAllowed(_ method: HTTPMethod, _ path: String) -> ManagementError {
        ManagementError(status: .methodNotAllowed, type: "MethodNotAllowedException", message: "\(method) is not supported on \(path)")
    }

    var response: GatewayResponse {
        var response = GatewayResponse(self.status, json: ["message": .string(self.message)])
        response.headers.append(("x-amzn-ErrorType", self.type))
        return response
    }
}
