import NIOCore
import NIOHTTP1
import Testing

@testable import SwitchboardGateway

/// The pieces of the HTTP side's hardening that need no socket; `tests/blackbox/test_hostile_http.py` drives them
/// end to end.
@Suite struct HTTPHardeningTests {
    func head(
        _ headers: [(String, String)],
        method: HTTPMethod = .GET,
        uri: String = "/ws",
        version: HTTPVersion = .http1_1
    ) -> HTTPRequestHead {
        HTTPRequestHead(version: version, method: method, uri: uri, headers: HTTPHeaders(headers))
    }

    var handshake: [(String, String)] {
        [
            ("Host", "x"), ("Upgrade", "websocket"), ("Connection", "keep-alive, Upgrade"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ]
    }

    @Test func onePathForManagementAndWebSockets() {
        #expect(RequestTarget("/%40stats").managementSegments == ["@stats"])
        #expect(RequestTarget("/prod/%40connections/abc%3D?x=1").managementSegments == ["@connections", "abc="])
        #expect(!Admission.isWebSocketPath(RequestTarget("/%40broadcast").path))
        #expect(!Admission.isWebSocketPath(RequestTarget("/prod/x/%40y").path))
        #expect(!Admission.isWebSocketPath(RequestTarget("/%68ealth").path))
        #expect(Admission.isWebSocketPath(RequestTarget("/prod/ws").path))
        #expect(RequestTarget("/prod%2F%40broadcast").problem != nil)
        #expect(RequestTarget("/prod/ws?next=%2F").problem == nil)
    }

    @Test func declaredBodies() {
        #expect(RequestBody.declared(by: self.head([])) == RequestBody.none)
        #expect(RequestBody.declared(by: self.head([("Content-Length", "0")])) == RequestBody.none)
        #expect(RequestBody.declared(by: self.head([("Content-Length", "12")])) == .length(12))
        #expect(RequestBody.declared(by: self.head([("Transfer-Encoding", "chunked")])) == .chunked)
        for bad in ["99999999999999999999999", "-1", "+5", "1 2", ""] {
            #expect(RequestBody.declared(by: self.head([("Content-Length", bad)])) == .invalid, "\(bad)")
        }
        #expect(RequestBody.declared(by: self.head([("Content-Length", "5"), ("Content-Length", "6")])) == .invalid)
    }

    @Test func strictHandshakes() {
        #expect(Admission.handshakeProblem(self.head(self.handshake)) == nil)
        #expect(Admission.handshakeProblem(self.head(self.handshake, version: .http1_0)) != nil)
        #expect(Admission.handshakeProblem(self.head(self.handshake, method: .POST)) != nil)
        #expect(Admission.handshakeProblem(self.head(self.handshake.filter { $0.0 != "Host" })) != nil)
        #expect(Admission.handshakeProblem(self.head(self.handshake.filter { $0.0 != "Connection" } + [("Connection", "keep-alive")])) != nil)
        for key in ["dGhlIHNhbXBsZSBub25jZQ", "dGhlIHNhbXBsZSBub25jZQ==x", "eHh4eHh4eHh4eHh4eHh4", "!!!!!!!!!!!!!!!!!!!!!!=="] {
            let headers = self.handshake.filter { $0.0 != "Sec-WebSocket-Key" } + [("Sec-WebSocket-Key", key)]
            #expect(Admission.handshakeProblem(self.head(headers)) != nil, "\(key)")
        }
        #expect(Admission.handshakeProblem(self.head(self.handshake + [("Content-Length", "3")])) != nil)
    }

    @Test func oneTokenWhereverItComesFrom() throws {
        let jwt = "eyJhbGciOi.eyJzdWIiOi.c2ln"
        let other = "eyJhbGciOi.eyJzdWIiOj.c2ln"
        #expect(try Admission.token(self.head([])).get() == nil)
        #expect(try Admission.token(self.head([], uri: "/ws?token=\(jwt)")).get() == jwt)
        #expect(try Admission.token(self.head([("Authorization", "Bearer \(jwt)")], uri: "/ws?token=\(jwt)")).get() == jwt)
        #expect(try Admission.token(self.head([("Sec-WebSocket-Protocol", "bearer, \(jwt)")])).get() == jwt)
        #expect(throws: Admission.TokenProblem.self) {
            try Admission.token(self.head([("Authorization", "Bearer \(other)")], uri: "/ws?token=\(jwt)")).get()
        }
        #expect(throws: Admission.TokenProblem.self) {
            try Admission.token(self.head([("Sec-WebSocket-Protocol", "bearer, \(other)")], uri: "/ws?token=\(jwt)")).get()
        }
        #expect(throws: Admission.TokenProblem.self) { try Admission.token(self.head([], uri: "/ws?token=\(jwt)&token=\(other)")).get() }
    }

    @Test func loopbackNamesAndOrigins() {
        #expect(ManagementAPI.loopbackAuthority("localhost")! == ("localhost", nil))
        #expect(ManagementAPI.loopbackAuthority("127.0.0.1:8080")! == ("127.0.0.1", 8080))
        #expect(ManagementAPI.loopbackAuthority("[::1]:1")! == ("[::1]", 1))
        for bad in [
            "evil.example", "localhost.evil.example", "127.0.0.1.nip.io", "localhost:0", "localhost:65536", "localhost:99999999999999999999",
            "localhost:+80", "[::1]:",
        ] {
            #expect(ManagementAPI.loopbackAuthority(bad) == nil, "\(bad)")
        }
        #expect(ManagementAPI.isOwnOrigin("http://localhost:8080", scheme: "http", port: 8080))
        #expect(ManagementAPI.isOwnOrigin("http://127.0.0.1", scheme: "http", port: 80))
        #expect(!ManagementAPI.isOwnOrigin("http://127.0.0.1:3000", scheme: "http", port: 8080))
        #expect(!ManagementAPI.isOwnOrigin("https://localhost:8080", scheme: "http", port: 8080))
        #expect(!ManagementAPI.isOwnOrigin("null", scheme: "http", port: 8080))
    }

    @Test func onlyPushRoutesTakeBodies() {
        #expect(ManagementAPI.takesBody(.POST, ["@connections", "abc="]))
        #expect(ManagementAPI.takesBody(.POST, ["@broadcast"]))
        #expect(ManagementAPI.takesBody(.POST, ["@rooms", "lobby"]))
        #expect(ManagementAPI.takesBody(.POST, ["@users", "alice"]))
        #expect(!ManagementAPI.takesBody(.GET, ["@connections", "abc="]))
        #expect(!ManagementAPI.takesBody(.POST, ["@connections"]))
        #expect(!ManagementAPI.takesBody(.POST, ["@stats"]))
        #expect(!ManagementAPI.takesBody(.POST, ["@rooms", "lobby", "members"]))
    }

    @Test func theBodyBudgetGivesBackWhatItTook() {
        let budget = BodyBudget(limit: 100)
        #expect(budget.reserve(60))
        #expect(!budget.reserve(41))
        #expect(budget.inUse == 60)
        #expect(budget.reserve(40))
        budget.release(100)
        #expect(budget.inUse == 0)
    }
}
