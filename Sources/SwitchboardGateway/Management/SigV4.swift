import Crypto
import SwitchboardCore

/// Verifies AWS Signature Version 4 on management requests, the way API Gateway's `@connections` endpoint does, so
/// that boto3's `apigatewaymanagementapi` client and every other AWS SDK sign requests that Switchboard accepts.
///
/// The canonical request follows botocore for `execute-api`: the path is URI-encoded once more (so `%3D` in a
/// connection id signs as `%253D` and `@` as `%40`), the signed headers are lower-cased with trimmed values, and the
/// payload hash is SHA-256 of the body as received, never the client's word for it (`x-amz-content-sha256` must
/// agree), so a captured request cannot be replayed with another body. The query is checked in two forms, either
/// of which the signature may cover (see `canonicalQueries(_:)`).
struct SigV4Verifier: Sendable {
    /// Secret access keys by access key id.
    let keys: [String: String]
    /// How far the request's `X-Amz-Date` may be from the server's clock.
    let maxClockSkewSeconds: Int64
    /// The service the credential must be scoped to: `execute-api` for the management API.
    var service = "execute-api"

    struct Request {
        var method: String
        /// The request target exactly as received: raw path and raw query.
        var uri: String
        /// Header names in any case.
        var headers: [(name: String, value: String)]
        var body: [UInt8]
    }

    /// `nil` when the signature is valid, otherwise why not, in words fit for the 403 body.
    func problem(with request: Request, nowEpochSeconds now: Int64) -> String? {
        guard let authorization = self.header("authorization", in: request) else { return "Missing Authentication Token" }
        guard authorization.hasPrefix("AWS4-HMAC-SHA256 ") else { return "Authorization header is not AWS4-HMAC-SHA256" }
        var fields: [String: String] = [:]
        for part in authorization.dropFirst("AWS4-HMAC-SHA256 ".count).split(separator: ",") {
            let pair = part.trimmingWhitespace().split(separator: "=", maxSplits: 1)
            if pair.count == 2 { fields[String(pair[0])] = String(pair[1]) }
        }
        guard let credential = fields["Credential"], let signedHeaders = fields["SignedHeaders"], let signature = fields["Signature"] else {
            return "Authorization header needs Credential, SignedHeaders and Signature"
        }
        let scope = credential.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard scope.count == 5, scope[4] == "aws4_request" else { return "Credential scope is malformed" }
        let (accessKey, date, region, service) = (scope[0], scope[1], scope[2], scope[3])
        guard service == self.service else { return "Credential should be scoped to the \(self.service) service, not \(service)" }
        guard let secret = self.keys[accessKey] else { return "The security token included in the request is invalid" }
        guard let amzDate = self.header("x-amz-date", in: request), amzDate.utf8.prefix(8).elementsEqual(date.utf8),
            let requestTime = Self.epochSeconds(amzDate)
        else {
            return "X-Amz-Date is missing or does not match the credential date"
        }
        // `requestTime` is bounded by its four-digit year, but `now` and the skew are only trusted, not bounded.
        let (offset, overflow) = requestTime.subtractingReportingOverflow(now)
        guard !overflow, offset.magnitude <= UInt64(max(0, self.maxClockSkewSeconds)) else {
            return "Signature expired: X-Amz-Date \(amzDate) is more than \(self.maxClockSkewSeconds) s from the server's time"
        }
        let signedNames = signedHeaders.split(separator: ";").map(String.init)
        guard signedNames.contains("host") else { return "SignedHeaders must include host" }
        var canonicalHeaders = ""
        for name in signedNames {
            let values = request.headers.filter { $0.name.lowercased() == name }.map { Self.trimHeaderValue($0.value) }
            canonicalHeaders += "\(name):\(values.joined(separator: ","))\n"
        }
        let payloadHash: String
        switch Self.payloadHash(declared: self.header("x-amz-content-sha256", in: request), body: request.body) {
        case .success(let hash): payloadHash = hash
        case .failure(let problem): return problem.reason
        }
        let (path, query) = Self.splitURI(request.uri)
        guard let queries = Self.canonicalQueries(query) else {
            return "The query string has a % not followed by two hex digits: encode a literal % as %25"
        }
        let credentialScope = "\(date)/\(region)/\(service)/aws4_request"
        var key = SymmetricKey(data: Array("AWS4\(secret)".utf8))
        for step in [date, region, service, "aws4_request"] {
            key = SymmetricKey(data: Array(HMAC<SHA256>.authenticationCode(for: Array(step.utf8), using: key)))
        }
        for canonicalQuery in queries {
            let canonicalRequest = [
                request.method, Self.uriEncode(path, keepSlash: true), canonicalQuery, canonicalHeaders, signedHeaders, payloadHash,
            ].joined(separator: "\n")
            let stringToSign = ["AWS4-HMAC-SHA256", amzDate, credentialScope, Self.hex(SHA256.hash(data: Array(canonicalRequest.utf8)))]
                .joined(separator: "\n")
            let expected = Self.hex(HMAC<SHA256>.authenticationCode(for: Array(stringToSign.utf8), using: key))
            if Self.constantTimeEqual(expected, signature) { return nil }
        }
        return "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method."
    }

    /// Why a payload hash is refused, in words for the 403 body.
    struct PayloadProblem: Error, Equatable {
        let reason: String
    }

    /// The payload hash for the canonical request: SHA-256 of `body` as received.
    ///
    /// A declared `x-amz-content-sha256` must equal it (lowercase hex, as every SDK writes it): taking the header's
    /// word would let a captured request be replayed, within the clock skew, with any other body. `UNSIGNED-PAYLOAD`
    /// (which SDKs send over HTTPS for some services, never for `execute-api`) signs nothing about the body, so it is
    /// accepted only for a request without one.
    static func payloadHash(declared: String?, body: [UInt8]) -> Result<String, PayloadProblem> {
        let computed = Self.hex(SHA256.hash(data: body))
        switch declared {
        case nil:
            return .success(computed)
        case "UNSIGNED-PAYLOAD"?:
            guard body.isEmpty else {
                return .failure(PayloadProblem(reason: "UNSIGNED-PAYLOAD is refused for a request with a body: sign the payload"))
            }
            return .success("UNSIGNED-PAYLOAD")
        case let declared?:
            guard declared == computed else {
                return .failure(
                    PayloadProblem(reason: "x-amz-content-sha256 does not match the body (expected the lowercase hex SHA-256 of the body)")
                )
            }
            return .success(computed)
        }
    }

    private func header(_ name: String, in request: Request) -> String? {
        request.headers.first { $0.name.lowercased() == name }?.value
    }

    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let (x, y) = (Array(a.utf8), Array(b.utf8))
        guard x.count == y.count else { return false }
        var difference: UInt8 = 0
        for index in x.indices { difference |= x[index] ^ y[index] }
        return difference == 0
    }

    static func hex(_ digest: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for byte in digest {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func trimHeaderValue(_ value: String) -> String {
        value.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
    }

    static func splitURI(_ uri: String) -> (path: String, query: String) {
        let parts = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        return (String(parts[0]), parts.count == 2 ? String(parts[1]) : "")
    }

    /// The canonical query strings a signature over `query` (raw, as received) may cover, or `nil` when the query has
    /// a `%` without two hex digits after it.
    ///
    /// First SigV4's form, which every SDK that builds its query from parameters signs: split on `&` and the first
    /// `=`, percent-decode names and values to bytes (invalid UTF-8 such as `%FF` included), encode them again with
    /// only `A-Z a-z 0-9 - . _ ~` left as they are, and sort by name, then value. A `+` decodes to a space, as
    /// `Admission` reads the query, so the signature covers the meaning the server acts on (botocore sends a space as
    /// `+` and signs it as `%20`). Second, botocore's form for a URL it was given with its query already encoded: the
    /// raw `name=value` pairs sorted unchanged (so `%0d%0a` signs in lower case and `+` as itself). Both forms change
    /// when the query's meaning does, so accepting either lets no one alter a signed request; a bad `%` escape, which
    /// the server would drop, is refused, since dropping it would let two queries share a canonical form.
    static func canonicalQueries(_ query: String) -> [String]? {
        var strict: [(name: [UInt8], value: [UInt8])] = []
        var raw: [(name: [UInt8], value: [UInt8])] = []
        guard !query.isEmpty else { return [""] }
        for pair in query.utf8.split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: false) {
            let equals = pair.firstIndex(of: UInt8(ascii: "="))
            let name = pair[..<(equals ?? pair.endIndex)]
            let value = equals.map { pair[pair.index(after: $0)...] } ?? pair[pair.endIndex...]
            raw.append((Array(name), Array(value)))
            guard !pair.isEmpty else { continue }
            guard let decodedName = self.percentDecode(name), let decodedValue = self.percentDecode(value) else { return nil }
            strict.append(
                (Array(self.uriEncode(bytes: decodedName, keepSlash: false).utf8), Array(self.uriEncode(bytes: decodedValue, keepSlash: false).utf8))
            )
        }
        func joined(_ pairs: [(name: [UInt8], value: [UInt8])]) -> String {
            let sorted = pairs.sorted {
                $0.name == $1.name ? $0.value.lexicographicallyPrecedes($1.value) : $0.name.lexicographicallyPrecedes($1.name)
            }
            let bytes = sorted.map { $0.name + [UInt8(ascii: "=")] + $0.value }.joined(separator: [UInt8(ascii: "&")])
            return String(decoding: Array(bytes), as: UTF8.self)
        }
        let forms = [joined(strict), joined(raw)]
        return forms[0] == forms[1] ? [forms[0]] : forms
    }

    /// SigV4's canonical query string for `query` (raw, as received); `nil` for a bad `%` escape.
    static func canonicalQuery(_ query: String) -> String? {
        self.canonicalQueries(query)?.first
    }

    /// `%XX` escapes and `+` (a space) decoded to bytes; `nil` at a `%` not followed by two hex digits.
    static func percentDecode(_ text: some Collection<UInt8>) -> [UInt8]? {
        PercentDecoding.bytes(text, plusIsSpace: true)
    }

    /// RFC 3986 encoding: everything but `A-Z a-z 0-9 - . _ ~` (and `/` when asked) becomes `%XX`.
    static func uriEncode(_ text: String, keepSlash: Bool) -> String {
        self.uriEncode(bytes: text.utf8, keepSlash: keepSlash)
    }

    /// RFC 3986 encoding of any bytes, valid UTF-8 or not.
    static func uriEncode(bytes: some Sequence<UInt8>, keepSlash: Bool) -> String {
        let digits = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.append(byte)
            case UInt8(ascii: "/") where keepSlash:
                out.append(byte)
            default:
                out += [UInt8(ascii: "%"), digits[Int(byte >> 4)], digits[Int(byte & 0xF)]]
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// `20150830T123600Z` → seconds since 1970; `nil` unless every field is ASCII digits within its range, so the
    /// arithmetic below works on at most a four-digit year and cannot overflow.
    static func epochSeconds(_ amzDate: String) -> Int64? {
        let digits = Array(amzDate.utf8)
        guard digits.count == 16, digits[8] == UInt8(ascii: "T"), digits[15] == UInt8(ascii: "Z") else { return nil }
        func number(_ range: Range<Int>) -> Int64? {
            guard digits[range].allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) else { return nil }
            return digits[range].reduce(0) { $0 * 10 + Int64($1 - UInt8(ascii: "0")) }
        }
        guard let year = number(0..<4), let month = number(4..<6), let day = number(6..<8), let hour = number(9..<11),
            let minute = number(11..<13), let second = number(13..<15), (1...12).contains(month), (1...31).contains(day),
            hour < 24, minute < 60, second < 60
        else { return nil }
        return ISO8601.daysFromCivil(year: year, month: month, day: day) * 86_400 + hour * 3600 + minute * 60 + second
    }
}

/// ISO-8601 timestamps as API Gateway writes them (`2026-11-23T17:30:45.123Z`), without Foundation's formatters.
enum ISO8601 {
    static func string(epochMilliseconds ms: Int64) -> String {
        let days = ms >= 0 ? ms / 86_400_000 : (ms - 86_399_999) / 86_400_000
        let rest = ms - days * 86_400_000
        let (year, month, day) = self.civil(fromDays: days)
        func pad(_ value: Int64, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(rest / 3_600_000, 2)):\(pad(rest / 60000 % 60, 2)):"
            + "\(pad(rest / 1000 % 60, 2)).\(pad(rest % 1000, 3))Z"
    }

    /// Days since 1970-01-01 (Howard Hinnant's algorithm).
    static func daysFromCivil(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    static func civil(fromDays days: Int64) -> (Int64, Int64, Int64) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }
}
