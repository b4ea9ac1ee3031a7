import NIOCore
import Testing

@testable import SwitchboardGateway

@Suite struct SigV4Tests {
    /// AWS's published SigV4 test suite, case `get-vanilla`.
    let verifier = SigV4Verifier(keys: ["AKIDEXAMPLE": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"], maxClockSkewSeconds: 300, service: "service")
    let signedAt: Int64 = 1_440_938_160  // 2015-08-30T12:36:00Z

    func request(signature: String, date: String = "20150830T123600Z") -> SigV4Verifier.Request {
        let authorization =
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=\(signature)"
        return SigV4Verifier.Request(
            method: "GET",
            uri: "/",
            headers: [("Host", "example.amazonaws.com"), ("X-Amz-Date", date), ("Authorization", authorization)],
            body: []
        )
    }

    @Test func acceptsAWSsTestVector() {
        let request = self.request(signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
        #expect(self.verifier.problem(with: request, nowEpochSeconds: self.signedAt + 60) == nil)
    }

    @Test func rejectsAWrongSignatureAnExpiredDateAndOtherServices() {
        let wrong = self.request(signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf30")
        #expect(self.verifier.problem(with: wrong, nowEpochSeconds: self.signedAt)?.contains("does not match") == true)
        let good = self.request(signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
        #expect(self.verifier.problem(with: good, nowEpochSeconds: self.signedAt + 301)?.hasPrefix("Signature expired") == true)
        let executeAPI = SigV4Verifier(keys: self.verifier.keys, maxClockSkewSeconds: 300)
        #expect(executeAPI.problem(with: good, nowEpochSeconds: self.signedAt)?.contains("execute-api") == true)
        var unsigned = good
        unsigned.headers.removeLast()
        #expect(self.verifier.problem(with: unsigned, nowEpochSeconds: self.signedAt) == "Missing Authentication Token")
    }

    @Test func encodesLikeBotocore() {
        #expect(SigV4Verifier.uriEncode("/prod/@connections/abc%3D", keepSlash: true) == "/prod/%40connections/abc%253D")
        #expect(SigV4Verifier.canonicalQuery("reason=go%20away&code=4000&a=%2F") == "a=%2F&code=4000&reason=go%20away")
        #expect(SigV4Verifier.constantTimeEqual("abc", "abc") && !SigV4Verifier.constantTimeEqual("abc", "abd"))
    }
}

@Suite struct ManagementRoutingTests {
    @Test func stagesArePeeledAndSegmentsDecoded() {
        #expect(ManagementAPI.route("/@connections/abc%3D") == ["@connections", "abc="])
        #expect(ManagementAPI.route("/prod/@connections/abc%3D?x=1") == ["@connections", "abc="])
        #expect(ManagementAPI.route("/@broadcast") == ["@broadcast"])
        #expect(ManagementAPI.route("/prod/ws") == nil)
        #expect(ManagementAPI.route("/health") == nil)
    }

    @Test func onlyLoopbackAddressesAreLoopback() throws {
        #expect(ManagementAPI.isLoopback(try SocketAddress(ipAddress: "127.0.0.1", port: 1)))
        #expect(ManagementAPI.isLoopback(try SocketAddress(ipAddress: "127.3.2.1", port: 1)))
        #expect(ManagementAPI.isLoopback(try SocketAddress(ipAddress: "::1", port: 1)))
        #expect(!ManagementAPI.isLoopback(try SocketAddress(ipAddress: "10.0.0.1", port: 1)))
        #expect(!ManagementAPI.isLoopback(try SocketAddress(ipAddress: "::ffff:10.0.0.1", port: 1)))
    }

    @Test func timestampsAreISO8601WithMilliseconds() {
        #expect(ISO8601.string(epochMilliseconds: 0) == "1970-01-01T00:00:00.000Z")
        #expect(ISO8601.string(epochMilliseconds: 1_440_938_160_123) == "2015-08-30T12:36:00.123Z")
        #expect(ISO8601.string(epochMilliseconds: 951_782_400_000) == "2000-02-29T00:00:00.000Z")
        #expect(SigV4Verifier.epochSeconds("20150830T123600Z") == 1_440_938_160)
        #expect(SigV4Verifier.epochSeconds("2015-08-30") == nil)
    }
}
