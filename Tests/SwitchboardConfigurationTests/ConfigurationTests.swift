import SwitchboardConfiguration
import SwitchboardCore
import Testing

@Suite struct ConfigurationTests {
    /// Sizes and durations are multiplied by their unit: an absurd one is refused, never an overflow trap.
    @Test func absurdSizesAndDurationsAreRefusedNotTrapped() {
        for flags in [
            ["--rooms-history-age", "9999999999999999h"], ["--rooms-history-age", "9223372036854775807"],
            ["--rooms-history-age", "400d"], ["--limits-max-message-bytes", "9999999999999999GiB"],
            ["--throttle-connect-rate", "1e400"], ["--throttle-message-rate", "inf"],
        ] {
            #expect(throws: ConfigurationError.self) { try ConfigurationLoader.load(yaml: nil, environment: [:], arguments: flags) }
        }
        let year = try? ConfigurationLoader.load(yaml: nil, environment: [:], arguments: ["--rooms-history-age", "8760h"])
        #expect(year?.history.age == .seconds(365 * 24 * 3600))
    }

    @Test func defaultsServeTheSeedProtocolOnPort8080() throws {
        let configuration = try ConfigurationLoader.load(yaml: nil, environment: [:], arguments: [])
        #expect(configuration.port == 8080)
        #expect(configuration.routes == .seedProtocol)
        #expect(configuration.pingInterval == .seconds(25))
        #expect(configuration.maxMessageBytes == 1 << 20)
        #expect(configuration.welcomeFrame == false)
    }

    @Test func yamlThenEnvironmentThenFlags() throws {
        let yaml = """
            port: 9000
            welcome_frame: true
            heartbeat:
              ping_interval: 5s
              pong_timeout: 20s
            routes:
              $default: echo
              hello: ping
            limits:
              max_message_bytes: 64KiB
            """
        let configuration = try ConfigurationLoader.load(
            yaml: yaml,
            environment: ["SWITCHBOARD_PORT": "9001", "SWITCHBOARD_CONFIG": "x.yaml", "PATH": "/bin"],
            arguments: ["--port=9002", "--heartbeat-idle-timeout", "2m", "--rooms-presence", "false"]
        )
        #expect(configuration.port == 9002)
        #expect(configuration.welcomeFrame)
        #expect(configuration.pingInterval == .seconds(5))
        #expect(configuration.idleTimeout == .seconds(120))
        #expect(configuration.presence == false)
        #expect(configuration.maxMessageBytes == 65536)
        #expect(configuration.routes.resolve(selectedKey: "hello").target == .builtin(.ping))
        #expect(configuration.routes.resolve(selectedKey: "ping").target == .builtin(.echo))
    }

    @Test func routesFromAFlagUseKeyEqualsApp() throws {
        let configuration = try ConfigurationLoader.load(yaml: nil, environment: [:], arguments: ["--routes", "$default=echo, chat=sendMessage"])
        #expect(configuration.routes.resolve(selectedKey: "chat").target == .builtin(.sendMessage))
    }

    @Test(arguments: [
        ("prot: 1", "prot"),
        ("heartbeat:\n  ping_intervl: 5s", "heartbeat.ping_intervl"),
        ("port: eighty", "port"),
        ("port: 70000", "port"),
        ("heartbeat:\n  ping_interval: soon", "heartbeat.ping_interval"),
        ("routes:\n  x: dance", "routes"),
        ("route_selection_expression: action", "route_selection_expression"),
        ("limits:\n  max_message_bytes: 8MiB", "limits.outbound_queue_bytes"),
        ("heartbeat:\n  pong_timeout: 10s", "heartbeat.pong_timeout"),
        ("binary_frames: maybe", "binary_frames"),
        ("port: [1, 2]", "port"),
        ("- a\n- b", "(file)"),
        ("port: 8080\n  bad: indent", "(file)"),
    ])
    func badYAMLNamesTheKey(_ yaml: String, _ key: String) {
        #expect {
            try ConfigurationLoader.load(yaml: yaml, environment: [:], arguments: [])
        } throws: { error in
            (error as? ConfigurationError)?.key == key
        }
    }

    @Test func unknownVariablesAndFlagsAreRefused() {
        #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.load(yaml: nil, environment: ["SWITCHBOARD_PROT": "1"], arguments: [])
        }
        #expect(throws: ConfigurationError.self) { try ConfigurationLoader.load(yaml: nil, environment: [:], arguments: ["--prot", "1"]) }
        #expect(throws: ConfigurationError.self) { try ConfigurationLoader.load(yaml: nil, environment: [:], arguments: ["--port"]) }
    }

    @Test func helpListsEveryKeyWithItsFlagAndVariable() {
        for option in ConfigurationSchema.options {
            #expect(ConfigurationSchema.helpText.contains("\(option.key) = \(option.defaultText)\n  \(option.flag), \(option.environmentVariable)"))
        }
    }
}
