public import ChatRPC
internal import ChatServices
public import ChatStore
public import ChatTLS
public import Prometheus
internal import Synchronization

/// The metrics of one instance, in one Prometheus registry: the per-method RPC metrics (recorded as calls run,
/// through swift-metrics) and the connection and pool figures, read from `ServerStats` and `PGPool` when scraped.
/// Names are defined here and in `RPCMetrics.Name`; docs/OPERATIONS.md lists them.
public final class ServerMetrics: Sendable {
    /// The registry `/metrics` renders.
    public let registry: PrometheusCollectorRegistry
    /// The swift-metrics factory over the registry (handling-time buckets from 1 ms to 10 s).
    public let factory: PrometheusMetricsFactory

    private let connectionsOpen: Gauge
    private let connectionsHandshaking: Gauge
    private let outboundBuffered: Gauge
    private let inboundBuffered: Gauge
    private let poolSize: Gauge
    private let poolInUse: Gauge
    private let poolWaiting: Gauge
    private let certificateExpiry: Gauge
    private let accepted: Counter
    private let refusedConnections: Counter
    private let refusedHandshakes: Counter
    private let stalledWrites: Counter
    private let waitedWrites: Counter
    private let controlFloods: Counter
    /// What the counters above were last advanced to (ServerStats counts; the registry's counters only grow).
    private let exported = Mutex<[String: Int]>([:])

    /// Creates the registry and its metrics.
    public init() {
        let registry = PrometheusCollectorRegistry()
        self.registry = registry
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets[RPCMetrics.Name.handlingSeconds] = [
            .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
            .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
            .milliseconds(2500), .seconds(5), .seconds(10),
        ]
        factory.durationHistogramBuckets[PoolMetrics.Name.waitSeconds] = [
            .microseconds(100), .microseconds(500), .milliseconds(1), .milliseconds(5), .milliseconds(10),
            .milliseconds(50), .milliseconds(100), .milliseconds(500), .seconds(1), .seconds(5),
        ]
        let liveBuckets: [Duration] = [
            .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
            .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
            .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30),
        ]
        factory.durationHistogramBuckets[LiveMetrics.Name.delivery] = liveBuckets
        factory.durationHistogramBuckets[LiveMetrics.Name.notificationLag] = liveBuckets
        self.factory = factory
        self.connectionsOpen = registry.makeGauge(
            name: "chat_server_connections_open",
            help: "Connections open now (TLS handshake included)."
        )
        self.connectionsHandshaking = registry.makeGauge(
            name: "chat_server_connections_handshaking",
            help: "Connections in the TLS handshake now."
        )
        self.outboundBuffered = registry.makeGauge(
            name: "chat_server_outbound_buffered_bytes",
            help: "Response bytes queued for peers now, all connections."
        )
        self.inboundBuffered = registry.makeGauge(
            name: "chat_server_inbound_buffered_bytes",
            help: "Partly received request bytes held now, all connections."
        )
        self.poolSize = registry.makeGauge(name: "chat_db_pool_connections", help: "Database connections in the pool.")
        self.poolInUse = registry.makeGauge(name: "chat_db_pool_in_use", help: "Pool connections running a job now.")
        self.poolWaiting = registry.makeGauge(
            name: "chat_db_pool_waiting",
            help: "Jobs waiting for a pool connection now."
        )
        self.certificateExpiry = registry.makeGauge(
            name: "chat_tls_certificate_expiry_timestamp_seconds",
            help: "When the certificate new connections get stops being valid, seconds since the epoch."
        )
        self.accepted = registry.makeCounter(
            name: "chat_server_connections_accepted_total",
            help: "Connections accepted within the limits."
        )
        let refused = "chat_server_connections_refused_total"
        let refusedHelp = "Connections closed as accepted, by the limit that was reached."
        self.refusedConnections = registry.makeCounter(
            name: refused,
            labels: [("reason", "max_connections")],
            help: refusedHelp
        )
        self.refusedHandshakes = registry.makeCounter(
            name: refused,
            labels: [("reason", "max_handshaking")],
            help: refusedHelp
        )
        self.stalledWrites = registry.makeCounter(
            name: "chat_server_stalled_writes_total",
            help: "Writes ended by the stall limit (the peer read nothing for that long)."
        )
        self.waitedWrites = registry.makeCounter(
            name: "chat_server_flow_control_waits_total",
            help: "Writes that waited for room (the peer's flow-control window or chatd's budgets were full)."
        )
        self.controlFloods = registry.makeCounter(
            name: "chat_server_control_frame_floods_total",
            help: "Connections closed with ENHANCE_YOUR_CALM for queueing too many control frames."
        )
    }

    /// Reads the server's and the pool's figures into the registry, then renders it in the text format.
    public func scrape(server: ServerStats, pool: PGPool, tls: TLSContext) -> String {
        if let notAfter = tls.certificateNotAfter { self.certificateExpiry.set(notAfter) }
        self.connectionsOpen.set(Int64(server.openConnections))
        self.connectionsHandshaking.set(Int64(server.handshakingConnections))
        self.outboundBuffered.set(Int64(server.bufferedOutboundBytes))
        self.inboundBuffered.set(Int64(server.bufferedInboundBytes))
        self.poolSize.set(Int64(pool.size))
        self.poolInUse.set(Int64(pool.busyConnections))
        self.poolWaiting.set(Int64(pool.queuedJobs))
        self.advance(self.accepted, "accepted", to: server.acceptedConnections)
        self.advance(self.refusedConnections, "refused", to: server.refused(.tooManyConnections))
        self.advance(self.refusedHandshakes, "handshakes", to: server.refused(.tooManyHandshakes))
        self.advance(self.stalledWrites, "stalls", to: server.stalledWrites)
        self.advance(self.waitedWrites, "waits", to: server.waitedWrites)
        self.advance(self.controlFloods, "floods", to: server.controlFrameFloods)
        return self.registry.emitToString()
    }

    /// The registry in the text format, as it stands (without reading the server's and pool's figures again).
    public func render() -> String {
        self.registry.emitToString()
    }

    private func advance(_ counter: Counter, _ key: String, to value: Int) {
        let delta = self.exported.withLock { exported -> Int in
            let delta = value - (exported[key] ?? 0)
            if delta > 0 { exported[key] = value }
            return delta
        }
        if delta > 0 { counter.increment(by: Int64(delta)) }
    }
}
