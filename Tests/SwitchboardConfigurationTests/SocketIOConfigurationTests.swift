import SwitchboardConfiguration
import SwitchboardCore
import Testing

@Suite struct SocketIOConfigurationTests {
    @Test func defaultsMatchTheReferenceServer() throws {
        let socketIO = try ConfigurationLoader.load(yaml: nil, environment: [:], arguments: []).socketIO
        #expect(socketIO.enabled)
        #expect(socketIO.path == "/socket.io/")
        #expect(socketIO.pingInterval == .seconds(25))
        #expect(socketIO.pingTimeout == .seconds(20))
        #expect(socketIO.maxPayload == 1_000_000)
        #expect(socketIO.namespaces == ["/"])
        #expect(socketIO.connectTimeout == .seconds(45))
        #expect(socketIO.pushEvent == "message")
        #expect(socketIO.heartbeatEventInterval == nil)
        #expect(socketIO.recoveryWindow == nil)  // off, as in Socket.IO
    }

    @Test func yamlEnvironmentAndFlagsSetEveryKey() throws {
        let yaml = """
            socketio:
              path: /io/
              namespaces: [/, /chat]
              ping_interval: 5s
            """
        let configuration = try ConfigurationLoader.load(
            yaml: yaml,
            environment: ["SWITCHBOARD_SOCKETIO_PUSH_EVENT": "push", "SWITCHBOARD_SOCKETIO_HEARTBEAT_EVENT_INTERVAL": "30s"],
            arguments: [
                "--socketio-ping-timeout", "3s", "--socketio-max-payload", "64KiB", "--socketio-connect-timeout", "10s",
                "--socketio-recovery-window", "2m",
            ]
        )
        let socketIO = configuration.socketIO
        #expect(socketIO.path == "/io/")
        #expect(socketIO.namespaces == ["/", "/chat"])
        #expect(socketIO.pingInterval == .seconds(5))
        #expect(socketIO.pingTimeout == .seconds(3))
        #expect(socketIO.maxPayload == 64 << 10)
        #expect(socketIO.connectTimeout == .seconds(10))
        #expect(socketIO.pushEvent == "push")
        #expect(socketIO.heartbeatEventInterval == .seconds(30))
        #expect(socketIO.recoveryWindow == .seconds(120))
    }

    @Test(arguments: [
        ["--socketio-path", "socket.io/"], ["--socketio-path", "/socket.io"], ["--socketio-path", "/"],
        ["--socketio-namespaces", "chat"], ["--socketio-namespaces", "/a,b"], ["--socketio-ping-interval", "0s"],
        ["--socketio-ping-timeout", "2h"], ["--socketio-connect-timeout", "0"], ["--socketio-max-payload", "10"],
        ["--socketio-push-event", ""], ["--socketio-recovery-window", "25h"], ["--socketio-recovery-window", "-1s"],
        ["--socketio-heartbeat-event-interval", "25h"],
    ])
    func badValuesAreRefused(_ flags: [String]) {
        #expect(throws: ConfigurationError.self) { try ConfigurationLoader.load(yaml: nil, environment: [:], arguments: flags) }
    }
}
