// swift-tools-version:6.2
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .treatAllWarnings(as: .error),
]

let package = Package(
    name: "switchboard",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "switchboard", targets: ["switchboard"]),
        .executable(name: "switchboard-bench", targets: ["switchboard-bench"]),
        .library(name: "SwitchboardCore", targets: ["SwitchboardCore"]),
        .library(name: "SwitchboardGateway", targets: ["SwitchboardGateway"]),
        // For the fuzz package (Fuzz/), which drives the session state machine and builds configurations.
        .library(name: "SwitchboardWebSocket", targets: ["SwitchboardWebSocket"]),
        .library(name: "SwitchboardConfiguration", targets: ["SwitchboardConfiguration"]),
        .library(name: "SwitchboardClient", targets: ["SwitchboardClient"]),
        // For the fuzz package (Fuzz/), which reads Redis replies with it.
        .library(name: "SwitchboardRedis", targets: ["SwitchboardRedis"]),
        // For the fuzz package (Fuzz/), which feeds Engine.IO and Socket.IO packets to the parsers and sessions.
        .library(name: "SwitchboardSocketIO", targets: ["SwitchboardSocketIO"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        .package(url: "https://github.com/hummingbird-project/swift-websocket.git", from: "1.6.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/adam-fowler/compress-nio.git", from: "1.5.0"),
    ],
    targets: [
        // The model: ids, frames of the seed protocol, route selection, rooms, the Broker protocol.
        // No networking, so every rule here is tested without a socket.
        .target(
            name: "SwitchboardCore",
            dependencies: [],
            swiftSettings: swiftSettings
        ),
        // A small RESP2/RESP3 client on SwiftNIO: commands, pipelining, pub/sub, AUTH, SELECT, TLS, reconnects.
        .target(
            name: "SwitchboardRedis",
            dependencies: [
                "SwitchboardCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // The WebSocket protocol layer (RFC 6455, RFC 7692) as value types: the session state machine, heartbeats,
        // frame encoding, permessage-deflate. Knows nothing of servers, gateways, configuration or brokers.
        .target(
            name: "SwitchboardWebSocket",
            dependencies: [
                "SwitchboardCore",
                .product(name: "CompressNIO", package: "compress-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // The Engine.IO v4 and Socket.IO v5 protocol layer as value types: packets, the Engine.IO session (polling,
        // upgrade, heartbeats), namespaces and acks. Knows nothing of servers, sockets, configuration or brokers.
        .target(
            name: "SwitchboardSocketIO",
            dependencies: [
                "SwitchboardCore",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // Everything an operator can set: the schema (keys, flags, variables, defaults, --help) and the loader that
        // reads YAML, SWITCHBOARD_* variables and flags into a validated GatewayConfiguration.
        .target(
            name: "SwitchboardConfiguration",
            dependencies: [
                "SwitchboardCore",
                "SwitchboardRedis",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: swiftSettings
        ),
        // The node: SwiftNIO WebSocket data path, HTTP side, management API, built-in apps, observability.
        .target(
            name: "SwitchboardGateway",
            dependencies: [
                "SwitchboardConfiguration",
                "SwitchboardCore",
                "SwitchboardSocketIO",
                "SwitchboardRedis",
                "SwitchboardWebSocket",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            // The files it serves as they are (OpenAPI document, dashboard, browser client, demo), read once at start.
            resources: [.copy("Resources")],
            swiftSettings: swiftSettings
        ),
        // The Swift client SDK: reconnects with backoff and jitter, heartbeats, rejoins rooms and recovers history.
        .target(
            name: "SwitchboardClient",
            dependencies: [
                "SwitchboardCore",
                .product(name: "WSClient", package: "swift-websocket"),
                .product(name: "WSCompression", package: "swift-websocket"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // Thin executable: argument parsing and wiring only.
        .executableTarget(
            name: "switchboard",
            dependencies: [
                "SwitchboardConfiguration",
                "SwitchboardGateway",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: swiftSettings
        ),
        // Load generator for the benchmark suite (bench/run): scenarios against any server speaking the seed protocol.
        .executableTarget(
            name: "switchboard-bench",
            dependencies: [
                "SwitchboardCore",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "CompressNIO", package: "compress-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SwitchboardCoreTests",
            dependencies: ["SwitchboardCore"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SwitchboardClientTests",
            dependencies: ["SwitchboardClient", .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SwitchboardRedisTests",
            dependencies: ["SwitchboardRedis", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SwitchboardWebSocketTests",
            dependencies: [
                "SwitchboardCore",
                "SwitchboardWebSocket",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SwitchboardSocketIOTests",
            dependencies: ["SwitchboardCore", "SwitchboardSocketIO", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SwitchboardConfigurationTests",
            dependencies: ["SwitchboardConfiguration", "SwitchboardCore"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SwitchboardGatewayTests",
            dependencies: [
                "SwitchboardConfiguration",
                "SwitchboardGateway",
                "SwitchboardSocketIO",
                "SwitchboardWebSocket",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
    ],
    swiftLanguageModes: [.v6]
)
