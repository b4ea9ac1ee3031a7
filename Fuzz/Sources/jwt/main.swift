import Foundation
import FuzzDriver
import SwitchboardConfiguration
import SwitchboardCore

@testable import SwitchboardGateway

/// A token's claims, past the signature: the payload JSON decoded as jwt-kit decodes it (`ClaimsPayload`), the
/// authenticator's claim checks at a fixed `now` under several configurations, then room globs and route claim
/// requirements on what passed. Also the unverified `kid` lookup on the input read as a whole token.
///
/// Input: byte 0 picks the configuration; the rest is the payload JSON.
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard size > 0, let data else { return 0 }
    let input = UnsafeBufferPointer(start: data, count: size)
    let payload = Data(UnsafeBufferPointer(rebasing: input.dropFirst()))
    _ = Authenticator.keyID(of: String(decoding: payload, as: UTF8.self))

    guard let claims = try? JSONDecoder().decode(ClaimsPayload.self, from: payload).claims else { return 0 }
    let configuration = configurations[Int(input[0]) % configurations.count]
    let verified: VerifiedClaims
    do {
        verified = try Authenticator.check(claims, configuration: configuration, now: now)
    } catch {
        precondition(!error.reason.isEmpty, "a refusal without a reason")
        return 0
    }
    precondition(verified.userId == claims[configuration.userClaim]?.text, "userId is not the user claim")
    precondition(Name.problem(with: verified.userId, field: "userId") == nil, "accepted a bad userId: \(verified.userId)")
    if configuration.requireExpiry { precondition(verified.expiresAt != nil, "accepted a token without exp") }
    if let expiresAt = verified.expiresAt {
        let leeway = configuration.leeway.components.seconds * 1000
        precondition(now <= expiresAt + leeway + 999, "accepted an expired token (exp \(expiresAt) ms, now \(now) ms)")
    }
    if let issuer = configuration.issuer { precondition(claims["iss"]?.text == issuer, "accepted a wrong issuer") }
    for room in rooms { _ = verified.allows(room: room) }
    for requirement in requirements {
        if verified.satisfies(requirement) {
            let name = String(requirement.prefix { $0 != ":" })
            precondition(verified.values[name] != nil, "\(requirement) satisfied without a \(name) claim")
        }
    }
    return 0
}

/// 2026-11-20T12:00:00Z, in milliseconds.
let now: Int64 = 1_795_176_000_000

let rooms = ["lobby", "team-1", "a.b", "x" + String(repeating: "a", count: 120)].compactMap(RoomID.init)
let requirements = ["role", "role:admin", "sub:alice", "rooms:lobby", "scope:", ":", ""]

let configurations: [GatewayConfiguration.Authentication] = {
    var plain = GatewayConfiguration.Authentication()
    plain.hmacSecret = String(repeating: "k", count: 32)
    var strict = plain
    strict.issuer = "https://issuer.example"
    strict.audience = "switchboard"
    strict.requireExpiry = true
    strict.leeway = .seconds(0)
    var email = plain
    email.userClaim = "email"
    email.roomsClaim = "groups"
    email.leeway = .seconds(3600)
    return [plain, strict, email]
}()

switchboard_fuzz_run(CommandLine.argc, CommandLine.unsafeArgv, fuzzOne)
