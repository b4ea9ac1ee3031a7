// swift-tools-version:6.2
import PackageDescription

// Coverage-guided fuzz targets (libFuzzer) for the parsers that read untrusted bytes; see scripts/fuzz.
// A separate package, so that the main `swift build` never builds them. Built with `-sanitize=fuzzer` (and
// AddressSanitizer in release); internal types are reached with `@testable import`.
let fuzzDependencies: [Target.Dependency] = [
    "FuzzDriver",
    .product(name: "SwitchboardConfiguration", package: "switchboard"),
    .product(name: "SwitchboardCore", package: "switchboard"),
    .product(name: "SwitchboardGateway", package: "switchboard"),
    .product(name: "SwitchboardWebSocket", package: "switchboard"),
    .product(name: "NIOCore", package: "swift-nio"),
    .product(name: "NIOEmbedded", package: "swift-nio"),
    .product(name: "NIOHTTP1", package: "swift-nio"),
    .product(name: "NIOPosix", package: "swift-nio"),
    .product(name: "NIOWebSocket", package: "swift-nio"),
    .product(name: "Logging", package: "swift-log"),
    .product(name: "Prometheus", package: "swift-prometheus"),
]

let package = Package(
    name: "switchboard-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "switchboard", path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // libFuzzer's driver, called from each target's top-level code (SwiftPM renames an executable's `main`).
        .target(name: "FuzzDriver"),
        .executableTarget(name: "json", dependencies: ["FuzzDriver", .product(name: "SwitchboardCore", package: "switchboard")]),
        .executableTarget(name: "websocket", dependencies: fuzzDependencies),
        .executableTarget(name: "http", dependencies: fuzzDependencies),
        .executableTarget(name: "sigv4", dependencies: fuzzDependencies),
        .executableTarget(name: "jwt", dependencies: fuzzDependencies),
        .executableTarget(
            name: "resp",
            dependencies: ["FuzzDriver", .product(name: "SwitchboardRedis", package: "switchboard"), .product(name: "NIOCore", package: "swift-nio")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
