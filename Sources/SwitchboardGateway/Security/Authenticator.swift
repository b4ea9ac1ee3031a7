import AsyncHTTPClient
import Foundation
import JWTKit
import Logging
import NIOCore
import NIOHTTP1
import SwitchboardConfiguration
import SwitchboardCore
import Synchronization

/// What a verified token says about a connection.
struct VerifiedClaims: Sendable, Hashable {
    var userId: String
    /// Glob patterns of the rooms the connection may join and publish to; `nil` when the token does not restrict rooms.
    var rooms: [String]?
    /// `exp`, in milliseconds since 1970.
    var expiresAt: Int64?
    /// Every claim as text, for `requestContext.authorizer` (lists joined with commas, as API Gateway passes them).
    /// Not for matching: `"user,admin"` and `["user", "admin"]` read the same here.
    var all: [String: String]
    /// Every claim as the token has it, for route requirements.
    var values: [String: ClaimValue]

    func allows(room: RoomID) -> Bool {
        self.rooms.map { $0.contains { Glob.matches($0, room.rawValue) } } ?? true
    }

    /// Whether the token meets a route requirement, `claim` (present, with a value) or `claim:value`.
    ///
    /// A string claim matches only when it equals the value, a list when one of its elements does. Matching the
    /// comma-joined text in `all` instead would let a token with `"role": "user,admin"` pass for `role:admin`.
    func satisfies(_ requirement: String) -> Bool {
        let name = requirement.prefix { $0 != ":" }
        guard let claim = self.values[String(name)], !claim.texts.isEmpty else { return false }
        guard name.endIndex < requirement.endIndex else { return true }
        return claim.matches(String(requirement[requirement.index(after: name.endIndex)...]))
    }
}

/// Why a token was refused, in words for the 401 body and the log (never a stack trace).
struct AuthenticationError: Error, CustomStringConvertible {
    let reason: String
    var description: String { self.reason }
}

/// Verifies JWTs with jwt-kit against keys from configuration, a PEM file or a JWKS (file or URL, refreshed when a
/// token names a `kid` it does not have), then checks `exp`, `nbf`, `iss` and `aud` with the configured leeway.
final class Authenticator: Sendable {
    private let keys: JWTKeyCollection
    private let configuration: GatewayConfiguration.Authentication
    private let http: HTTPClient?
    private let logger: Logger
    /// When a token with an unknown `kid` last made us fetch the JWKS again: at most one such fetch every 30 s, so
    /// tokens with made-up key ids cannot turn the gateway into a load generator against the JWKS host.
    private let lastRefresh = Mutex<ContinuousClock.Instant?>(nil)

    init(_ configuration: GatewayConfiguration.Authentication, group: any EventLoopGroup, logger: Logger) {
        self.keys = JWTKeyCollection()
        self.configuration = configuration
        let remote = configuration.jwks.map { $0.hasPrefix("http://") || $0.hasPrefix("https://") } ?? false
        self.http = remote ? HTTPClient(eventLoopGroupProvider: .shared(group)) : nil
        self.logger = logger
    }

    func shutdown() async {
        try? await self.http?.shutdown()
    }

    /// Loads the keys before the node serves; a key jwt-kit would refuse or assert on is a configuration error here.
    func prepare() async throws(ConfigurationError) {
        let configuration = self.configuration
        if let secret = configuration.hmacSecret {
            guard secret.utf8.count >= 32 else {
                throw ConfigurationError(key: "auth.hmac_secret", reason: "must be at least 32 bytes (jwt-kit refuses shorter HMAC keys)")
            }
            let digest: DigestAlgorithm =
                switch configuration.hmacAlgorithm {
                case "HS384": .sha384
                case "HS512": .sha512
                default: .sha256
                }
            await self.keys.add(hmac: HMACKey(from: secret), digestAlgorithm: digest)
        }
        if let path = configuration.publicKeyFile {
            let pem: String
            do { pem = try String(contentsOfFile: path, encoding: .utf8) } catch {
                throw ConfigurationError(key: "auth.public_key_file", reason: "cannot read \(path): \(error.localizedDescription)")
            }
            let kid = configuration.publicKeyId.map { JWKIdentifier(string: $0) }
            if let rsa = try? Insecure.RSA.PublicKey(pem: pem) {
                await self.keys.add(rsa: rsa, digestAlgorithm: .sha256, kid: kid)
            } else if let ec = try? ES256PublicKey(pem: pem) {
                await self.keys.add(ecdsa: ec, kid: kid)
            } else if let ed = try? EdDSA.PublicKey(pem: pem) {
                await self.keys.add(eddsa: ed, kid: kid)
            } else {
                throw ConfigurationError(key: "auth.public_key_file", reason: "\(path) holds no RSA (2048+ bits), P-256 or Ed25519 public key in PEM")
            }
        }
        if let source = configuration.jwks {
            do {
                try await self.loadJWKS(from: source)
            } catch {
                throw ConfigurationError(key: "auth.jwks", reason: "\(source): \(error)")
            }
        }
    }

    private func loadJWKS(from source: String) async throws {
        let json: String
        if source.hasPrefix("http://") || source.hasPrefix("https://") {
            guard let http else { throw AuthenticationError(reason: "no HTTP client") }
            let response = try await http.execute(HTTPClientRequest(url: source), timeout: .seconds(10))
            guard response.status == .ok else { throw AuthenticationError(reason: "answered \(response.status.code)") }
            json = String(buffer: try await response.body.collect(upTo: 1 << 20))
        } else {
            json = try String(contentsOfFile: source, encoding: .utf8)
        }
        try await self.keys.add(jwksJSON: json)
    }

    /// Verifies `token` at `now` (milliseconds since 1970).
    func verify(_ token: String, now: Int64) async throws(AuthenticationError) -> VerifiedClaims {
        let payload: ClaimsPayload
        do {
            payload = try await self.keys.verify(token, as: ClaimsPayload.self)
        } catch {
            // A token naming a key id may be signed by a key rotated into the JWKS since it was loaded (jwt-kit then
            // reports an unknown kid, or a bad signature from its default key): fetch the set again and retry once.
            guard let source = self.configuration.jwks, Self.keyID(of: token) != nil, self.refreshAllowed() else { throw Self.explain(error) }
            try? await self.loadJWKS(from: source)
            do { payload = try await self.keys.verify(token, as: ClaimsPayload.self) } catch { throw Self.explain(error) }
        }
        return try Self.check(payload.claims, configuration: self.configuration, now: now)
    }

    /// The `kid` in a compact token's header, without verifying anything.
    static func keyID(of token: String) -> String? {
        guard let header = token.split(separator: ".").first else { return nil }
        var base64 = header.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        guard let data = Data(base64Encoded: base64), let object = (try? JSONValue.parse(Array(data)))?.objectValue else { return nil }
        return object["kid"]?.stringValue
    }

    private func refreshAllowed() -> Bool {
        self.lastRefresh.withLock { last in
            if let previous = last, ContinuousClock.now - previous < .seconds(30) { return false }
            last = .now
            return true
        }
    }

    private static func explain(_ error: any Error) -> AuthenticationError {
        guard let error = error as? JWTError else { return AuthenticationError(reason: "invalid token") }
        switch error.errorType {
        case .signatureVerificationFailed: return AuthenticationError(reason: "bad signature")
        case .malformedToken: return AuthenticationError(reason: "malformed token")
        case .unknownKID, .missingKIDHeader: return AuthenticationError(reason: "unknown key id")
        default: return AuthenticationError(reason: "invalid token (\(error.reason ?? "\(error.errorType)"))")
        }
    }

    /// The latest `exp`, `nbf` or `iat` accepted, 9999-12-31T23:59:59Z: later is no real date, and the bound keeps
    /// `exp` in milliseconds far inside `Int64` (past about 9.2e15 s, `exp * 1000` would trap on conversion).
    static let latestTimeClaim: Double = 253_402_300_799

    /// A time claim (`exp`, `nbf`, `iat`) in seconds since 1970, `nil` when the token has none.
    ///
    /// A present one that is not a number (`"1"`, `null`, an object) refuses the token: ignoring it would make a token
    /// with `"exp": "1"` never expire. So does one outside `0...latestTimeClaim` (or too big for a `Double`, which
    /// JSON allows), which no issuer writes and which could not be converted to milliseconds.
    static func timeClaim(_ name: String, in claims: [String: ClaimValue]) throws(AuthenticationError) -> Double? {
        guard let value = claims[name] else { return nil }
        guard case .number(let seconds) = value else { throw AuthenticationError(reason: "\(name) must be a number (seconds since 1970)") }
        guard seconds.isFinite, (0...Self.latestTimeClaim).contains(seconds) else {
            throw AuthenticationError(reason: "\(name) is out of range (seconds since 1970, at most \(Int64(Self.latestTimeClaim)))")
        }
        return seconds
    }

    /// The checks after the signature's: time claims with the leeway, issuer, audience, and the user id.
    static func check(
        _ claims: [String: ClaimValue],
        configuration: GatewayConfiguration.Authentication,
        now: Int64
    ) throws(AuthenticationError) -> VerifiedClaims {
        let exp = try Self.timeClaim("exp", in: claims)
        let nbf = try Self.timeClaim("nbf", in: claims)
        _ = try Self.timeClaim("iat", in: claims)
        // In Double, where nothing traps: the time claims are bounded above, `now` and the leeway are the server's.
        let leeway = Double(configuration.leeway.components.seconds)
        let nowSeconds = Double(now) / 1000
        if let exp, nowSeconds > exp + leeway { throw AuthenticationError(reason: "token expired") }
        if configuration.requireExpiry, exp == nil { throw AuthenticationError(reason: "token has no exp") }
        if let nbf, nowSeconds + leeway < nbf { throw AuthenticationError(reason: "token not yet valid") }
        if let issuer = configuration.issuer, claims["iss"]?.text != issuer { throw AuthenticationError(reason: "wrong issuer") }
        if let audience = configuration.audience {
            let audiences = claims["aud"].map { $0.texts } ?? []
            guard audiences.contains(audience) else { throw AuthenticationError(reason: "wrong audience") }
        }
        guard let userId = claims[configuration.userClaim]?.text else {
            throw AuthenticationError(reason: "token has no \(configuration.userClaim) claim")
        }
        if let problem = Name.problem(with: userId, field: configuration.userClaim) { throw AuthenticationError(reason: problem) }
        return VerifiedClaims(
            userId: userId,
            rooms: claims[configuration.roomsClaim].map { $0.texts },
            // `exp` is at most `latestTimeClaim`, so this cannot overflow.
            expiresAt: exp.map { Int64(($0 * 1000).rounded(.down)) },
            all: claims.compactMapValues { $0.texts.isEmpty ? nil : $0.texts.joined(separator: ",") },
            values: claims
        )
    }
}

/// Any JSON claim value.
enum ClaimValue: Codable, Sendable, Hashable {
    case text(String)
    case number(Double)
    case bool(Bool)
    case list([ClaimValue])
    case other

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let value = try? container.decode(String.self) {
            self = .text(value)
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode([ClaimValue].self) {
            self = .list(value)
        } else {
            self = .other
        }
    }

    func encode(to encoder: any Encoder) throws {}

    var text: String? { if case .text(let value) = self { value } else { nil } }

    /// Whether this claim equals `value`: a scalar by its text, a list when one of its elements does.
    func matches(_ value: String) -> Bool {
        switch self {
        case .list(let values): values.contains { $0.matches(value) }
        case .text, .number, .bool: self.texts == [value]
        case .other: false
        }
    }

    /// Strings (a string, or the strings of a list) and numbers and booleans as text.
    ///
    /// A whole number that fits `Int64` reads as an integer (`42`, not `42.0`); any other number, however big, keeps
    /// Swift's `Double` text (`1e+19`) rather than refusing the token: only the time claims need to be dates.
    var texts: [String] {
        switch self {
        case .text(let value): [value]
        case .number(let value): [Int64(exactly: value).map { String($0) } ?? String(value)]
        case .bool(let value): [String(value)]
        case .list(let values): values.flatMap(\.texts)
        case .other: []
        }
    }
}

/// A payload of arbitrary claims; the time and audience checks are the authenticator's, with its leeway.
struct ClaimsPayload: JWTPayload {
    let claims: [String: ClaimValue]

    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Key.self)
        var claims: [String: ClaimValue] = [:]
        for key in container.allKeys { claims[key.stringValue] = try container.decode(ClaimValue.self, forKey: key) }
        self.claims = claims
    }

    func encode(to encoder: any Encoder) throws {}

    func verify(using algorithm: some JWTAlgorithm) async throws {}
}
