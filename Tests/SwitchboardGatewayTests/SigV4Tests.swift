import Testing

@testable import SwitchboardGateway

/// The payload hash and the query, as attacks and botocore exercise them. Signatures below are AWS's published SigV4
/// test-suite vectors (service `service`) or botocore 1.x's `SigV4Auth` for `execute-api`, both with AWS's example
/// credentials at 2015-08-30T12:36:00Z: evidence from outside this code, not a restatement of it.
@Suite struct SigV4PayloadAndQueryTests {
    static let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    let executeAPI = SigV4Verifier(keys: ["AKIDEXAMPLE": Self.secret], maxClockSkewSeconds: 300)
    let awsSuite = SigV4Verifier(keys: ["AKIDEXAMPLE": Self.secret], maxClockSkewSeconds: 300, service: "service")
    let signedAt: Int64 = 1_440_938_160

    func request(
        _ method: String,
        _ uri: String,
        service: String = "execute-api",
        signedHeaders: String = "host;x-amz-date",
        signature: String,
        headers: [(name: String, value: String)] = [],
        body: String = ""
    ) -> SigV4Verifier.Request {
        let authorization =
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/\(service)/aws4_request, SignedHeaders=\(signedHeaders), Signature=\(signature)"
        return SigV4Verifier.Request(
            method: method,
            uri: uri,
            headers: [("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")] + headers + [("Authorization", authorization)],
            body: Array(body.utf8)
        )
    }

    // MARK: Payload

    static let body = #"{"hello":"world"}"#
    static let bodyHash = "93a23971a914e5eacbf0a8d25154cda309c3c1c72fbb9914d47c60f3cb681588"

    /// botocore's `POST /prod/@connections/abc%3D` with `X-Amz-Content-SHA256` signed.
    func signedPost(body: String = Self.body, declaring hash: String = Self.bodyHash) -> SigV4Verifier.Request {
        self.request(
            "POST",
            "/prod/@connections/abc%3D",
            signedHeaders: "host;x-amz-content-sha256;x-amz-date",
            signature: "d3a32ebe38d29e8f430f5f4a87071398012c79e910d0a23092fca5acda69d818",
            headers: [("X-Amz-Content-SHA256", hash)],
            body: body
        )
    }

    @Test func aSignedPostIsAccepted() {
        #expect(self.executeAPI.problem(with: self.signedPost(), nowEpochSeconds: self.signedAt) == nil)
    }

    @Test func aReplayWithAnotherBodyAndTheOriginalHashIsRefused() {
        let replay = self.signedPost(body: #"{"evil":true}"#)
        #expect(
            self.executeAPI.problem(with: replay, nowEpochSeconds: self.signedAt)
                == "x-amz-content-sha256 does not match the body (expected the lowercase hex SHA-256 of the body)"
        )
        var withoutHeader = replay
        withoutHeader.headers.removeAll { $0.name == "X-Amz-Content-SHA256" }
        #expect(
            self.executeAPI.problem(with: withoutHeader, nowEpochSeconds: self.signedAt)?.contains("signature we calculated does not match") == true
        )
    }

    @Test func theBodyHashIsComputedWhenNoHeaderDeclaresIt() {
        // botocore's POST without the header, and AWS's `post-x-www-form-urlencoded`: both sign SHA-256 of the body.
        let post = self.request(
            "POST",
            "/prod/@connections/abc%3D",
            signature: "89ee7eaa58ef0b4dda5e573e59e427250e7ec2c5b85980dd0dda717dede9a4df",
            body: Self.body
        )
        #expect(self.executeAPI.problem(with: post, nowEpochSeconds: self.signedAt) == nil)
        var otherBody = post
        otherBody.body = Array(#"{"hello":"world!"}"#.utf8)
        #expect(self.executeAPI.problem(with: otherBody, nowEpochSeconds: self.signedAt) != nil)
        let form = self.request(
            "POST",
            "/",
            service: "service",
            signedHeaders: "content-type;host;x-amz-date",
            signature: "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
            headers: [("Content-Type", "application/x-www-form-urlencoded")],
            body: "Param1=value1"
        )
        #expect(self.awsSuite.problem(with: form, nowEpochSeconds: self.signedAt) == nil)
    }

    @Test func unsignedPayloadIsRefusedWithABody() {
        #expect(
            SigV4Verifier.payloadHash(declared: "UNSIGNED-PAYLOAD", body: Array("x".utf8))
                == .failure(.init(reason: "UNSIGNED-PAYLOAD is refused for a request with a body: sign the payload"))
        )
        #expect(SigV4Verifier.payloadHash(declared: "UNSIGNED-PAYLOAD", body: []) == .success("UNSIGNED-PAYLOAD"))
        let emptyHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        #expect(SigV4Verifier.payloadHash(declared: nil, body: []) == .success(emptyHash))
        #expect((try? SigV4Verifier.payloadHash(declared: emptyHash.uppercased(), body: []).get()) == nil)
        let replay = self.signedPost(body: "x", declaring: "UNSIGNED-PAYLOAD")
        #expect(self.executeAPI.problem(with: replay, nowEpochSeconds: self.signedAt)?.hasPrefix("UNSIGNED-PAYLOAD is refused") == true)
    }

    // MARK: Query

    @Test func awsQueryVectorsVerify() {
        let vectors = [
            ("/?Param2=value2&Param1=value1", "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
            ("/?Param1=value2&Param1=value1", "5772eed61e12b33fae39ee5e7012498b51d56abc0abb7c60486157bd471c4694"),
            ("/?%E1%88%B4=bar", "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04"),
            (
                "/?-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
                "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197"
            ),
        ]
        for (uri, signature) in vectors {
            let request = self.request("GET", uri, service: "service", signature: signature)
            #expect(self.awsSuite.problem(with: request, nowEpochSeconds: self.signedAt) == nil, "\(uri)")
        }
    }

    @Test func botocoreSignedRawQueriesVerify() {
        // A URL given to botocore with its query already encoded: signed as the raw pairs, sorted.
        let raw = self.request(
            "GET",
            "/prod/@connections?b=%0d%0a&a=%FF&c=x+y&d=k=v&e=a%20b&limit=5",
            signature: "1d3cba85556f4428b2836adbe0ee083b9500fde953c05ddfae753af518e397e3"
        )
        #expect(self.executeAPI.problem(with: raw, nowEpochSeconds: self.signedAt) == nil)
        // Parameters given to botocore: a space goes out as `+` and signs as `%20`.
        let params = self.request(
            "GET",
            "/prod/@connections?msg=a+b&crlf=%0D%0A&eq=k%3Dv&plus=1%2B1&limit=5",
            signature: "a3e4e25e0b28f209a5d77a18da6013987e73e5fedc8f95aeca416bd4828a4b9b"
        )
        #expect(self.executeAPI.problem(with: params, nowEpochSeconds: self.signedAt) == nil)
        var altered = params
        altered.uri = "/prod/@connections?msg=a+b&crlf=%0D%0A&eq=k%3Dv&plus=1%2B1&limit=6"
        #expect(self.executeAPI.problem(with: altered, nowEpochSeconds: self.signedAt) != nil)
    }

    @Test func queriesCanonicaliseFromTheirBytes() {
        #expect(SigV4Verifier.canonicalQueries("a=%FF&b=%0d%0a") == ["a=%FF&b=%0D%0A", "a=%FF&b=%0d%0a"])
        #expect(SigV4Verifier.canonicalQuery("q=a+b&r=a%20b&s=1%2B1&t=k=v&flag") == "flag=&q=a%20b&r=a%20b&s=1%2B1&t=k%3Dv")
        #expect(SigV4Verifier.canonicalQuery("b=2&a=%7E&a=1&A=3") == "A=3&a=1&a=~&b=2")
        #expect(SigV4Verifier.canonicalQuery("%E1%88%B4=bar") == "%E1%88%B4=bar")
        #expect(SigV4Verifier.canonicalQueries("") == [""])
        #expect(SigV4Verifier.canonicalQueries("a=%zz") == nil)
        #expect(SigV4Verifier.canonicalQueries("a=%F") == nil)
        #expect(SigV4Verifier.canonicalQueries("a=100%") == nil)
    }

    @Test func aBadEscapeInTheQueryIsRefusedWithAReason() {
        let request = self.request("GET", "/prod/@connections?a=%zz", signature: String(repeating: "0", count: 64))
        #expect(self.executeAPI.problem(with: request, nowEpochSeconds: self.signedAt)?.contains("% not followed by two hex digits") == true)
    }

    // MARK: Dates

    @Test func amzDatesAreDigitsInRangeAndSkewCannotOverflow() {
        #expect(SigV4Verifier.epochSeconds("20150830T123600Z") == 1_440_938_160)
        #expect(SigV4Verifier.epochSeconds("99991231T235959Z") == 253_402_300_799)
        for bad in [
            "2015+830T123600Z", "20150830T-12600Z", "20150830T243600Z", "20150830T126000Z", "20150830T123660Z", "20151330T123600Z",
            "2015083OT123600Z",
        ] {
            #expect(SigV4Verifier.epochSeconds(bad) == nil, "\(bad)")
        }
        let request = self.request("GET", "/", service: "service", signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
        #expect(self.awsSuite.problem(with: request, nowEpochSeconds: .min)?.hasPrefix("Signature expired") == true)
        #expect(self.awsSuite.problem(with: request, nowEpochSeconds: .max)?.hasPrefix("Signature expired") == true)
        let negativeSkew = SigV4Verifier(keys: self.awsSuite.keys, maxClockSkewSeconds: .min, service: "service")
        #expect(negativeSkew.problem(with: request, nowEpochSeconds: .max)?.hasPrefix("Signature expired") == true)
    }
}
