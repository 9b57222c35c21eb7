public import ChatRPC
public import Logging
internal import OTel
public import ServiceLifecycle
internal import Tracing

/// Exports chatd's spans over OTLP/HTTP (protobuf) through swift-otel: the tracer for `CallTracing`, and the
/// service that batches and sends the spans (it must run in the service group; on shutdown it sends what is left).
///
/// Only traces: chatd's metrics are Prometheus's (the admin listener) and its logs are its own. swift-otel also
/// reads the standard `OTEL_*` variables (`OTEL_BSP_SCHEDULE_DELAY`, `OTEL_EXPORTER_OTLP_HEADERS`, ...); chatd's own
/// settings are its flags.
public enum OTLPTracing {
    /// The settings chatd exposes.
    public struct Settings: Sendable, Hashable {
        /// The full URL spans are posted to, e.g. `http://collector:4318/v1/traces` (`https` for TLS).
        public var endpoint: String
        /// `service.name` on every span.
        public var serviceName: String
        /// The fraction of new traces sampled (a caller's sampled flag decides for the traces it started).
        public var sampleRatio: Double

        /// Creates settings.
        public init(endpoint: String, serviceName: String = "chatd", sampleRatio: Double = 1) {
            self.endpoint = endpoint
            self.serviceName = serviceName
            self.sampleRatio = sampleRatio
        }
    }

    /// The tracing of calls and the exporting service.
    ///
    /// - Throws: when swift-otel refuses the configuration (an endpoint without `http` or `https`, say).
    public static func make(_ settings: Settings, logger: Logger) throws -> (tracing: CallTracing, service: any Service)
    {
        var configuration = OTel.Configuration.default
        configuration.serviceName = settings.serviceName
        configuration.metrics.enabled = false
        configuration.logs.enabled = false
        configuration.traces.enabled = true
        configuration.traces.exporter = .otlp
        configuration.traces.otlpExporter.protocol = .httpProtobuf
        configuration.traces.otlpExporter.endpoint = settings.endpoint
        typealias Sampler = OTel.Configuration.TracesConfiguration.SamplerConfiguration
        if let sampler = Sampler.parentBasedTraceIDRatio(ratio: settings.sampleRatio) {
            configuration.traces.sampler = sampler
        }
        // Batches sized for a busy server: spans go every second, or as soon as 2048 are waiting (one export), and
        // up to 8192 wait before new ones are dropped (swift-otel logs each time it drops some).
        configuration.traces.batchSpanProcessor.scheduleDelay = .seconds(1)
        configuration.traces.batchSpanProcessor.maxExportBatchSize = 2048
        configuration.traces.batchSpanProcessor.maxQueueSize = 8192
        configuration.diagnosticLogger = .custom(logger)
        let backend = try OTel.makeTracingBackend(configuration: configuration)
        let tracing = CallTracing(tracer: backend.factory, traceID: { $0.otelTraceID })
        return (tracing, backend.service)
    }
}
