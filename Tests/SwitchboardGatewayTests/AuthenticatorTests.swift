import Foundation
import SwitchboardConfiguration
import Testing

@testable import SwitchboardGateway

/// The claim checks after a token's signature: every number a token carries is hostile until checked.
@Suite struct AuthenticatorClaimTests {
    let configuration = GatewayConfiguration.Authentication()
    /// 2026-11-29T00:00:00Z, in milliseconds.
    let now: Int64 = 1_795_910_400_000

    /// The claims as jwt-kit hands them over: the token's payload JSON through `ClaimsPayload`'s decoder.
    func claims(_ json: String) throws -> [String: ClaimValue] {
        try JSONDecoder().decode(ClaimsPayload.self, from: Data(json.utf8)).claims
    }

    func check(_ json: String) throws -> Result<VerifiedClaims, AuthenticationError> {
        let claims = try self.claims(json)
        do {
            return .success(try Authenticator.check(claims, configuration: self.configuration, now: self.now))
        } catch {
            return .failure(error)
        }
    }

    func reason(_ json: String) throws -> String? {
        if case .failure(let error) = try self.check(json) { error.reason } else { nil }
    }

    @Test func hugeNumericClaimsAreKeptAsTextWithoutTrapping() throws {
        let verified = try self.check(#"{"sub":"alice","n":1e19,"m":-1e19,"p":9223372036854775807,"q":1e300,"r":42,"s":-0.0}"#).get()
        #expect(verified.all["n"] == "1e+19")
        #expect(verified.all["m"] == "-1e+19")
        #expect(verified.all["p"] == "9.223372036854776e+18")
        #expect(verified.all["q"] == "1e+300")
        #expect(verified.all["r"] == "42")
        #expect(verified.all["s"] == "0")
        let listed = try self.check(#"{"sub":"alice","rooms":[1e19,"lobby"],"aud":[-1e30]}"#).get()
        #expect(listed.rooms == ["1e+19", "lobby"])
    }

    @Test func outOfRangeTimeClaimsRefuseTheToken() throws {
        for claim in ["exp", "nbf", "iat"] {
            for value in ["1e16", "9.3e15", "1e19", "-1e19", "1e300", "-1", "253402300800"] {
                #expect(try self.reason(#"{"sub":"alice","\#(claim)":\#(value)}"#)?.hasPrefix("\(claim) is out of range") == true)
            }
        }
    }

    @Test func aNumberTooBigForADoubleRefusesTheTokenAsATimeClaimAndIsIgnoredOtherwise() throws {
        // Foundation's decoder refuses 1e400 as a Double (or reads infinity): either way, not a usable time.
        let reason = try self.reason(#"{"sub":"alice","exp":1e400}"#)
        #expect(reason == "exp must be a number (seconds since 1970)" || reason?.hasPrefix("exp is out of range") == true)
        #expect(try self.check(#"{"sub":"alice","n":1e400}"#).get().userId == "alice")
    }

    @Test func nonNumericTimeClaimsRefuseTheToken() throws {
        for claim in ["exp", "nbf", "iat"] {
            for value in [#""1""#, "null", "{}", "[1]", "true", #""9999999999""#] {
                #expect(try self.reason(#"{"sub":"alice","\#(claim)":\#(value)}"#) == "\(claim) must be a number (seconds since 1970)")
            }
        }
    }

    @Test func timeClaimsInRangeStillWork() throws {
        let seconds = self.now / 1000
        let verified = try self.check(#"{"sub":"alice","exp":\#(seconds + 3600).5,"nbf":\#(seconds),"iat":\#(seconds)}"#).get()
        #expect(verified.expiresAt == (seconds + 3600) * 1000 + 500)
        #expect(try self.reason(#"{"sub":"alice","exp":\#(seconds - 31)}"#) == "token expired")
        #expect(try self.reason(#"{"sub":"alice","nbf":\#(seconds + 31)}"#) == "token not yet valid")
        #expect(try self.check(#"{"sub":"alice","exp":253402300799}"#).get().expiresAt == 253_402_300_799_000)
    }

    @Test func aStringClaimMatchesOnlyByEquality() throws {
        let commas = try self.check(#"{"sub":"alice","role":"user,admin"}"#).get()
        #expect(commas.all["role"] == "user,admin")
        #expect(!commas.satisfies("role:admin"))
        #expect(!commas.satisfies("role:user"))
        #expect(commas.satisfies("role:user,admin"))
        #expect(commas.satisfies("role"))
        let exact = try self.check(#"{"sub":"alice","role":"admin"}"#).get()
        #expect(exact.satisfies("role:admin") && !exact.satisfies("role:admi") && !exact.satisfies("role:admin,"))
    }

    @Test func aListClaimMatchesWhenAnElementDoes() throws {
        let verified = try self.check(#"{"sub":"alice","roles":["user","admin"],"level":3,"staff":true,"empty":[],"none":null}"#).get()
        #expect(verified.all["roles"] == "user,admin")
        #expect(verified.satisfies("roles:admin") && verified.satisfies("roles:user") && !verified.satisfies("roles:user,admin"))
        #expect(verified.satisfies("level:3") && verified.satisfies("staff:true") && !verified.satisfies("staff:false"))
        #expect(!verified.satisfies("empty") && !verified.satisfies("none") && !verified.satisfies("missing:x"))
        #expect(!verified.satisfies("") && !verified.satisfies(":admin"))
    }
}
