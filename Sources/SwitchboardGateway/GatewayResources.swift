import Foundation
import SwitchboardConfiguration
import SwitchboardCore

/// The files the gateway serves, kept as they are in `Sources/SwitchboardGateway/Resources/`. SwiftPM copies them
/// into a resource bundle beside the executable (`switchboard_SwitchboardGateway.resources`); they are read once,
/// when the gateway starts, and a missing or unreadable file stops the start with the directories searched, instead
/// of `Bundle.module`'s crash on first use (that is, on some later HTTP request).
struct GatewayResources: Sendable {
    /// The OpenAPI 3.1 description of the management API, served at `/@openapi.json`; `tests/blackbox/test_openapi.py`
    /// validates it and fuzzes the live server with it.
    let openAPIDocument: JSONValue
    /// The live dashboard served at `/dashboard`: one self-contained page (no build step, no CDN). It opens the
    /// server-sent event stream at `/dashboard/events`, which carries this node's Prometheus text and its top rooms
    /// every second, and computes rates from consecutive samples.
    let dashboardPage: [UInt8]
    /// The browser client served at `/client/switchboard.js` (in the repository also as `clients/js/switchboard.js`).
    let clientScript: [UInt8]
    /// The demo chat page served at `/demo` (in the repository also as `clients/js/demo.html`).
    let demoPage: [UInt8]

    /// SwiftPM's name for this target's resource bundle: `<package>_<target>`, with `.resources` on Linux and
    /// `.bundle` on Darwin.
    static let bundleName = "switchboard_SwitchboardGateway"
    static let files = ["openapi.json", "dashboard.html", "switchboard.js", "demo.html"]

    /// Reads the files from the first directory that has them: the one `SWITCHBOARD_RESOURCES` names if it is set
    /// (the files themselves, or a resource bundle), else the resource bundle beside the executable or the test
    /// bundle, where SwiftPM puts it (the places `Bundle.module` looks, without its `fatalError`).
    static func load(environment: [String: String] = ProcessInfo.processInfo.environment) throws(GatewayResourcesError) -> GatewayResources {
        let searched = self.directories(environment: environment)
        guard let directory = searched.first(where: { FileManager.default.fileExists(atPath: $0.appendingPathComponent(Self.files[0]).path) })
        else {
            throw GatewayResourcesError(
                description: "the gateway's resource files (\(Self.files.joined(separator: ", "))) were not found; searched "
                    + searched.map(\.path).joined(separator: ", ")
                    + ". Ship the \(Self.bundleName).resources directory beside the executable, as `swift build` lays it out,"
                    + " or set \(ConfigurationLoader.resourcesVariable) to the directory that holds them."
            )
        }
        func read(_ name: String) throws(GatewayResourcesError) -> [UInt8] {
            let path = directory.appendingPathComponent(name).path
            guard let data = FileManager.default.contents(atPath: path) else {
                throw GatewayResourcesError(description: "cannot read the gateway's resource file \(path)")
            }
            return Array(data)
        }
        let openAPIBytes = try read("openapi.json")
        let openAPIDocument: JSONValue
        do {
            openAPIDocument = try JSONValue.parse(openAPIBytes)
        } catch {
            throw GatewayResourcesError(description: "\(directory.appendingPathComponent("openapi.json").path) is not valid JSON: \(error)")
        }
        return GatewayResources(
            openAPIDocument: openAPIDocument,
            dashboardPage: try read("dashboard.html"),
            clientScript: try read("switchboard.js"),
            demoPage: try read("demo.html")
        )
    }

    /// Where the files may be, in order, without duplicates.
    static func directories(environment: [String: String]) -> [URL] {
        if let override = environment[ConfigurationLoader.resourcesVariable], !override.isEmpty {
            let root = URL(fileURLWithPath: override)
            return [root, root.appendingPathComponent("Resources")]
        }
        // Beside the executable (also through a symlink to it), the main bundle, and the folder of the bundle this
        // code was loaded from and of each loaded bundle, which is where an `.xctest` bundle's resources sit.
        var places: [URL] = []
        if let executable = Bundle.main.executableURL {
            places.append(executable.deletingLastPathComponent())
            places.append(executable.resolvingSymlinksInPath().deletingLastPathComponent())
        }
        places.append(Bundle.main.bundleURL)
        let loaded = [Bundle(for: GatewayContext.self)] + Bundle.allBundles
        places += loaded.filter { $0 != Bundle.main }.map { $0.bundleURL.deletingLastPathComponent() }
        var directories: [URL] = []
        for place in places {
            // `.copy("Resources")` keeps the folder: Linux bundles are plain directories, Darwin ones have
            // `Contents/Resources`.
            directories.append(place.appendingPathComponent("\(Self.bundleName).resources/Resources"))
            let bundle = place.appendingPathComponent("\(Self.bundleName).bundle")
            directories.append((Bundle(url: bundle)?.resourceURL ?? bundle).appendingPathComponent("Resources"))
        }
        var seen = Set<String>()
        return directories.filter { seen.insert($0.standardizedFileURL.path).inserted }
    }
}

/// The gateway's resource files are missing or unreadable: the start stops with this.
struct GatewayResourcesError: Error, CustomStringConvertible {
    let description: String
}
