public import ChatProto
public import CoreMetrics
internal import Synchronization

/// Per-method RPC metrics under the names callers already graph (go-grpc-prometheus): `grpc_server_started_total`,
/// `grpc_server_handled_total` (with `grpc_code`), `grpc_server_handling_seconds`, `grpc_server_msg_received_total`
/// and `grpc_server_msg_sent_total`, labelled `grpc_type`, `grpc_service` and `grpc_method`. The labels come from the
/// router's methods only (a call to an unknown method counts under `unknown`), so their number is bounded by the
/// contract; no tenant, user or thread id is ever a label.
public final class RPCMetrics: Sendable {
    /// The metric names, defined once (the alert rules and docs/OPERATIONS.md use the same).
    public enum Name {
        public static let started = "grpc_server_started_total"
        public static let handled = "grpc_server_handled_total"
        public static let handlingSeconds = "grpc_server_handling_seconds"
        public static let received = "grpc_server_msg_received_total"
        public static let sent = "grpc_server_msg_sent_total"
        /// Server streams open now, by method (not a go-grpc-prometheus name: it has none).
        public static let streamsOpen = "chat_server_streams_open"
    }

    private let methods: [String: MethodMetrics]
    private let unknown: MethodMetrics

    /// Metrics for the router's methods, made by `factory`.
    public init(router: Router, factory: any MetricsFactory) {
        var methods: [String: MethodMetrics] = [:]
        for info in router.methods {
            methods[info.path] = MethodMetrics(path: info.path, kind: info.kind, factory: factory)
        }
        self.methods = methods
        self.unknown = MethodMetrics(path: "/unknown/unknown", kind: .unary, factory: factory)
    }

    /// The metrics of a method (the `unknown` ones for a path the router does not serve).
    func method(_ path: String) -> MethodMetrics {
        self.methods[path] ?? self.unknown
    }

    /// The `grpc_code` label of a status, as gRPC spells its codes (`OK`, `Canceled`, `InvalidArgument`, ...).
    public static func codeLabel(_ code: StatusCode) -> String {
        switch code {
        case .ok: return "OK"
        case .cancelled: return "Canceled"
        case .unrecognized: return "Unknown"
        default:
            let name = code.name ?? "unknown"
            return name.split(separator: "_").map { $0.prefix(1).uppercased() + $0.dropFirst() }.joined()
        }
    }

    /// The `grpc_service` and `grpc_method` labels of a path (`/chat.v1.ThreadService/CreateThread`).
    public static func labels(path: String) -> (service: String, method: String) {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        guard parts.count == 2 else { return ("unknown", "unknown") }
        return (String(parts[0]), String(parts[1]))
    }
}

/// One method's metrics; the handled counters are made per status code on first use (at most one per code).
final class MethodMetrics: Sendable {
    let started: Counter
    let received: Counter
    let sent: Counter
    let handlingTime: CoreMetrics.Timer
    /// Open calls of a server-streaming method; nil for unary ones.
    let open: Meter?
    private let dimensions: [(String, String)]
    private let factory: any MetricsFactory
    private let handled: Mutex<[StatusCode: Counter]>

    init(path: String, kind: ChatMethodKind, factory: any MetricsFactory) {
        let (service, method) = RPCMetrics.labels(path: path)
        let type = kind == .serverStreaming ? "server_stream" : "unary"
        let dimensions = [("grpc_type", type), ("grpc_service", service), ("grpc_method", method)]
        self.dimensions = dimensions
        self.factory = factory
        self.started = Counter(label: RPCMetrics.Name.started, dimensions: dimensions, factory: factory)
        self.received = Counter(label: RPCMetrics.Name.received, dimensions: dimensions, factory: factory)
        self.sent = Counter(label: RPCMetrics.Name.sent, dimensions: dimensions, factory: factory)
        self.handlingTime = CoreMetrics.Timer(
            label: RPCMetrics.Name.handlingSeconds,
            dimensions: dimensions,
            preferredDisplayUnit: .seconds,
            factory: factory
        )
        self.handled = Mutex([:])
        self.open =
            kind == .serverStreaming
            ? Meter(
                label: RPCMetrics.Name.streamsOpen,
                dimensions: [("grpc_service", service), ("grpc_method", method)],
                factory: factory
            ) : nil
    }

    /// Counts a finished call and records how long it took.
    func finished(_ code: StatusCode, nanoseconds: Int64) {
        let counter = self.handled.withLock { counters in
            if let counter = counters[code] { return counter }
            let counter = Counter(
                label: RPCMetrics.Name.handled,
                dimensions: self.dimensions + [("grpc_code", RPCMetrics.codeLabel(code))],
                factory: self.factory
            )
            counters[code] = counter
            return counter
        }
        counter.increment()
        self.handlingTime.recordNanoseconds(nanoseconds)
    }
}
