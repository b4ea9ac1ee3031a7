import ArgumentParser
import Foundation
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import SwitchboardConfiguration
import SwitchboardGateway
import UnixSignals

@main
struct Switchboard: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchboard",
        abstract: "A WebSocket gateway speaking API Gateway's routes and the seed rooms protocol.",
        subcommands: [Serve.self, Send.self, Connections.self, Health.self],
        defaultSubcommand: Serve.self
    )
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a gateway node (in-memory by default, on port 8080).",
        discussion: ConfigurationSchema.helpText
    )

    @Option(name: .long, help: "YAML configuration file (or SWITCHBOARD_CONFIG).")
    var config: String?

    @Argument(parsing: .allUnrecognized, help: "Configuration flags, listed below (e.g. --port 9000).")
    var settings: [String] = []

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        var loaded: GatewayConfiguration
        do {
            let path = self.config ?? environment[ConfigurationLoader.configFileVariable]
            let yaml = try path.map { path in
                do { return try String(contentsOfFile: path, encoding: .utf8) } catch {
                    throw ValidationError("cannot read configuration file \(path): \(error.localizedDescription)")
                }
            }
            loaded = try ConfigurationLoader.load(yaml: yaml, environment: environment, arguments: self.settings)
            try await Gateway.resolveRedisMode(&loaded)
        } catch let error as ConfigurationError {
            throw ValidationError(error.description)
        }
        let configuration = loaded

        LoggingSystem.bootstrap { label in
            switch configuration.logFormat {
            case .json:
                return JSONLogHandler(label: label, level: configuration.logLevel)
            case .text:
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = configuration.logLevel
                return handler
            }
        }
        // One registry for the gateway's own metrics and anything reported through swift-metrics.
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let logger = Logger(label: "switchboard")
        let gateway = try Gateway(configuration: configuration, logger: logger, metrics: registry)
        let group = ServiceGroup(
            configuration: .init(services: [gateway], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        )
        try await group.run()
    }
}
