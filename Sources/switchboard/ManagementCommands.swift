import ArgumentParser
import Foundation
import SwitchboardGateway

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Where and how the operator commands reach a node's management API.
struct ManagementOptions: ParsableArguments {
    @Option(help: "The node's management API (its port, or management.port when set).")
    var url = "http://127.0.0.1:8080"

    @Option(help: "Bearer token (default: $SWITCHBOARD_MANAGEMENT_BEARER_TOKEN); none is needed on loopback when the node has no credentials.")
    var token: String?

    /// Calls the API and returns the body, or throws the API's own message.
    func call(_ method: String, _ path: String, body: Data? = nil) async throws -> Data {
        guard let url = URL(string: self.url.trimmingCharacters(in: ["/"]) + path) else { throw ValidationError("bad --url \(self.url)") }
        var request = URLRequest(url: url)
        request.httpMethod = method
        request.httpBody = body
        if let token = self.token ?? ProcessInfo.processInfo.environment["SWITCHBOARD_MANAGEMENT_BEARER_TOKEN"] {
            request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
        }
        let (data, response) = try await URLSession.shared.data(for: request)
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        guard (200..<300).contains(status) else {
            let message = (try? JSONSerialization.jsonObject(with: data) as? [String: Any])?["message"] as? String
            throw ValidationError("\(method) \(path) answered \(status): \(message ?? String(decoding: data, as: UTF8.self))")
        }
        return data
    }

    static func pathSegment(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(["-", "_", ".", "~"])) ?? text
    }
}

struct Send: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send data to a connection, a room, a user or everyone through a node's management API.",
        discussion: "DATA is sent as one message: text when it is UTF-8, binary otherwise; '-' reads it from standard input."
    )

    @OptionGroup var management: ManagementOptions

    @Option(help: "Send to every member of this room.")
    var room: String?

    @Option(help: "Send to every connection of this user.")
    var user: String?

    @Flag(help: "Send to every connection.")
    var broadcast = false

    /// Unrecognised dashes are arguments too: a connection id may start with `-` (ids are URL-safe base64).
    @Argument(parsing: .allUnrecognized, help: "CONNECTION_ID (unless --room, --user or --broadcast), then DATA.")
    var arguments: [String]

    func run() async throws {
        let targets = [self.room != nil, self.user != nil, self.broadcast].filter { $0 }.count
        let expected = targets == 0 ? 2 : 1
        guard targets <= 1, self.arguments.count == expected else {
            throw ValidationError("usage: switchboard send CONNECTION_ID DATA | --room R DATA | --user U DATA | --broadcast DATA")
        }
        let text = self.arguments.last!
        let data = text == "-" ? FileHandle.standardInput.readDataToEndOfFile() : Data(text.utf8)
        let path: String
        if let room {
            path = "/@rooms/\(ManagementOptions.pathSegment(room))"
        } else if let user {
            path = "/@users/\(ManagementOptions.pathSegment(user))"
        } else if self.broadcast {
            path = "/@broadcast"
        } else {
            path = "/@connections/\(ManagementOptions.pathSegment(self.arguments[0]))"
        }
        let reply = try await self.management.call("POST", path, body: data)
        if let delivered = (try? JSONSerialization.jsonObject(with: reply) as? [String: Any])?["delivered"] {
            print("delivered to \(delivered) connection(s) on this node")
        } else {
            print("delivered")
        }
    }
}

struct Connections: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List a node's connections through its management API.")

    @OptionGroup var management: ManagementOptions

    @Flag(help: "Print JSON lines instead of a table.")
    var json = false

    func run() async throws {
        var cursor: String?
        var printedHeader = false
        repeat {
            let path = "/@connections?limit=1000" + (cursor.map { "&cursor=\(ManagementOptions.pathSegment($0))" } ?? "")
            let page = try JSONSerialization.jsonObject(with: try await self.management.call("GET", path)) as? [String: Any] ?? [:]
            for item in page["items"] as? [[String: Any]] ?? [] {
                if self.json {
                    print(String(decoding: try JSONSerialization.data(withJSONObject: item, options: [.sortedKeys]), as: UTF8.self))
                    continue
                }
                if !printedHeader {
                    print("CONNECTION_ID     USER_ID           CONNECTED_AT              LAST_ACTIVE_AT            ROOMS")
                    printedHeader = true
                }
                let rooms = (item["rooms"] as? [String] ?? []).joined(separator: ",")
                let columns = [item["connectionId"], item["userId"], item["connectedAt"], item["lastActiveAt"]].map { "\($0 ?? "")" }
                print(
                    columns[0].padding(toLength: 18, withPad: " ", startingAt: 0) + columns[1].padding(toLength: 18, withPad: " ", startingAt: 0)
                        + columns[2].padding(toLength: 26, withPad: " ", startingAt: 0)
                        + columns[3].padding(toLength: 26, withPad: " ", startingAt: 0) + rooms
                )
            }
            cursor = page["next"] as? String
        } while cursor != nil
    }
}

struct Health: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Exit 0 when a node's /health answers 200: the container HEALTHCHECK, without curl in the image."
    )

    @Option(help: "Default: http://127.0.0.1:$SWITCHBOARD_PORT/health (port 8080).")
    var url: String?

    func run() async throws {
        let port = ProcessInfo.processInfo.environment["SWITCHBOARD_PORT"] ?? "8080"
        guard let url = URL(string: self.url ?? "http://127.0.0.1:\(port)/health") else { throw ValidationError("bad --url") }
        var request = URLRequest(url: url)
        request.timeoutInterval = 4
        let (data, response) = try await URLSession.shared.data(for: request)
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        print(String(decoding: data, as: UTF8.self))
        guard status == 200 else { throw ExitCode(1) }
    }
}
