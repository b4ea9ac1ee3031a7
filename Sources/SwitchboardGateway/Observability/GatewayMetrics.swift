import Prometheus
import SwitchboardCore

/// Every metric a node exports at `/metrics`, named after Prometheus conventions and mapped to API Gateway's
/// CloudWatch metrics in `docs/operations.md`.
///
/// Per-route series are created once, from the route table, so the message path looks a counter up in an
/// immutable dictionary and increments it: no lock, no allocation. Rarer series (close codes, reasons) are made on
/// demand; the registry returns the same series for the same labels.
final class GatewayMetrics: Sendable {
    let registry: PrometheusCollectorRegistry

    let connectionsActive: Gauge
    let rooms: Gauge
    let outboundQueueBytes: Gauge
    let connectionsAccepted: Counter
    let messagesSent: Counter
    let bytesSent: Counter
    /// What `bytesSent` became on the wire: frame headers added, permessage-deflate applied.
    let wireBytesSent: Counter
    let executionErrors: Counter
    let slowConsumerCloses: Counter
    let disconnectDeliveryAttempts: Counter
    private let received: [String: (messages: Counter, bytes: Counter)]
    private let integrations: [String: (latency: DurationHistogram, errors: Counter)]

    init(registry: PrometheusCollectorRegistry, routes: RouteTable) {
        self.registry = registry
        self.connectionsActive = registry.makeGauge(descriptor: .named("switchboard_connections_active", "Open WebSocket connections on this node."))
        self.rooms = registry.makeGauge(descriptor: .named("switchboard_rooms", "Rooms with at least one member."))
        self.outboundQueueBytes = registry.makeGauge(
            descriptor: .named(
                "switchboard_outbound_queue_bytes",
                "Bytes written to connections and not yet taken by the kernel, summed over connections."
            )
        )
        self.connectionsAccepted = registry.makeCounter(
            descriptor: .named("switchboard_connections_accepted_total", "Connections admitted by $connect.")
        )
        self.messagesSent = registry.makeCounter(
            descriptor: .named("switchboard_messages_sent_total", "Messages written to clients, one per recipient.")
        )
        self.bytesSent = registry.makeCounter(descriptor: .named("switchboard_message_bytes_sent_total", "Payload bytes written to clients."))
        self.wireBytesSent = registry.makeCounter(
            descriptor: .named("switchboard_wire_bytes_sent_total", "Frame bytes written to clients, headers and compression included.")
        )
        self.executionErrors = registry.makeCounter(descriptor: .named("switchboard_execution_errors_total", "Failures inside the gateway."))
        self.slowConsumerCloses = registry.makeCounter(
            descriptor: .named("switchboard_slow_consumer_closes_total", "Connections closed because they stopped reading.")
        )
        self.disconnectDeliveryAttempts = registry.makeCounter(
            descriptor: .named(
                "switchboard_disconnect_delivery_attempts_total",
                "Attempts to deliver $disconnect to its integration, retries included."
            )
        )
        var received: [String: (Counter, Counter)] = [:]
        var integrations: [String: (DurationHistogram, Counter)] = [:]
        for key in Set(routes.routes.keys).union([RouteTable.defaultKey]) {
            received[key] = (
                registry.makeCounter(
                    descriptor: .named("switchboard_messages_received_total", "Messages received, by route."),
                    labels: [("route", key)]
                ),
                registry.makeCounter(
                    descriptor: .named("switchboard_message_bytes_received_total", "Payload bytes received, by route."),
                    labels: [("route", key)]
                )
            )
            if case .integration = routes.routes[key] {
                integrations[key] = (
                    registry.makeDurationHistogram(
                        descriptor: .named(
                            "switchboard_integration_latency_seconds",
                            "Time from sending an event to a backend to its reply, by route."
                        ),
                        labels: [("route", key)],
                        buckets: [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000].map { .milliseconds($0) }
                    ),
                    registry.makeCounter(
                        descriptor: .named("switchboard_integration_errors_total", "Failed integration calls, by route."),
                        labels: [("route", key)]
                    )
                )
            }
        }
        self.received = received
        self.integrations = integrations
    }

    func received(route: String, bytes: Int) {
        guard let series = self.received[route] else { return }
        series.messages.increment()
        series.bytes.increment(by: Int64(bytes))
    }

    func integration(route: String, latency: Duration, failed: Bool) {
        guard let series = self.integrations[route] else { return }
        series.latency.record(latency)
        if failed { series.errors.increment() }
    }

    func disconnected(code: UInt16) {
        self.registry.makeCounter(
            descriptor: .named("switchboard_disconnects_total", "Closed connections, by close code."),
            labels: [("code", Self.label(closeCode: code))]
        ).increment()
    }

    /// A close code as a label: the codes RFC 6455 and IANA define as themselves, the application ranges as
    /// `3xxx` and `4xxx`, anything else as `other`. Clients choose their close codes, so a label per code would let
    /// anyone create thousands of series.
    static func label(closeCode code: UInt16) -> String {
        switch code {
        case 1000...1003, 1005...1015: String(code)
        case 3000...3999: "3xxx"
        case 4000...4999: "4xxx"
        default: "other"
        }
    }

    /// A refused upgrade, by reason (`draining`, `bad_request`, `integration`, `unauthorized`, …).
    func rejected(_ reason: String) {
        self.registry.makeCounter(
            descriptor: .named("switchboard_connections_rejected_total", "Refused upgrades, by reason."),
            labels: [("reason", reason)]
        ).increment()
    }

    /// A client's mistake, by kind: protocol violations (closed) and bad messages (answered with an error frame).
    func clientError(_ reason: String) {
        self.registry.makeCounter(descriptor: .named("switchboard_client_errors_total", "Client errors, by reason."), labels: [("reason", reason)])
            .increment()
    }

    /// An Engine.IO polling request relayed between nodes (no sticky sessions), by what happened to it here:
    /// `forwarded` (a client's request sent to the session's owner), `served` (another node's request answered),
    /// `websocket` (a WebSocket for another node's session, relayed),
    /// `owner_gone` (no node listens on the owner's channel), `timeout`, `full` (too many relays waiting).
    func socketIORelay(_ outcome: String) {
        self.registry.makeCounter(
            descriptor: .named("switchboard_socketio_relays_total", "Engine.IO polling requests relayed between nodes, by outcome."),
            labels: [("outcome", outcome)]
        ).increment()
    }

    /// A connection or message refused by a rate or size limit, by reason.
    func throttled(_ reason: String) {
        self.registry.makeCounter(
            descriptor: .named("switchboard_throttled_total", "Throttled connections and messages, by reason."),
            labels: [("reason", reason)]
        ).increment()
    }
}

extension MetricNameDescriptor {
    /// A descriptor for a full metric name (`switchboard_…_total`) and its help text.
    static func named(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }
}
