internal import ChatDomain
public import ChatProto
public import ChatRPC
internal import Synchronization

/// Health checking: `Check` answers the current status of the server ("") or of one service; `Watch` streams the
/// current status and then every change, until the call ends.
public final class HealthService: Sendable {
    private struct State {
        var statuses: [String: ServingStatus] = [:]
        var watchers: [Int: (service: String, continuation: AsyncStream<ServingStatus>.Continuation)] = [:]
        var nextWatcher = 0
    }

    private let state = Mutex(State())

    /// Creates the service with the server ("") and `services` serving.
    public init(services: [String]) {
        self.state.withLock { state in
            state.statuses[""] = .serving
            for service in services { state.statuses[service] = .serving }
        }
    }

    /// Changes the status of a service ("" = the server) and tells its watchers.
    public func setStatus(_ status: ServingStatus, for service: String) {
        let watchers = self.state.withLock { state in
            state.statuses[service] = status
            return state.watchers.values.filter { $0.service == service }.map(\.continuation)
        }
        for watcher in watchers { watcher.yield(status) }
    }

    /// Marks everything NOT_SERVING (at the start of a drain).
    public func markAllNotServing() {
        let services = self.state.withLock { Array($0.statuses.keys) }
        for service in services { self.setStatus(.notServing, for: service) }
    }

    /// Registers Check and Watch.
    public func register(in router: inout Router) {
        router.register(ChatMethods.HealthService.check) { request, _ in
            guard let status = self.state.withLock({ $0.statuses[request.service] }) else {
                throw RPCError(.notFound, "unknown service \(request.service)")
            }
            return HealthCheckResponse(status: status)
        }
        router.register(ChatMethods.HealthService.watch) { request, _, writer in
            let (updates, continuation) = AsyncStream.makeStream(of: ServingStatus.self)
            let (id, current) = self.state.withLock { state in
                let id = state.nextWatcher
                state.nextWatcher += 1
                state.watchers[id] = (request.service, continuation)
                return (id, state.statuses[request.service] ?? .serviceUnknown)
            }
            defer { _ = self.state.withLock { $0.watchers.removeValue(forKey: id) } }
            continuation.yield(current)
            var last: ServingStatus?
            for await status in updates {
                if status != last {
                    try await writer.write(HealthCheckResponse(status: status))
                    last = status
                }
            }
        }
    }
}

/// Lists the methods the server serves (a reflection-like service).
public enum MethodListService {
    /// Registers ListMethods, answering with `router`'s methods as they are when this is called, plus ListMethods.
    public static func register(in router: inout Router, serverVersion: String) {
        var methods = router.methods
        methods.append(ChatMethods.MethodListService.listMethods.info)
        let infos = methods.sorted { $0.path < $1.path }.map { method in
            MethodInfo(
                name: method.path,
                kind: method.kind == .unary ? .unary : .serverStreaming,
                requestType: method.requestType,
                responseType: method.responseType,
                idempotent: method.idempotent
            )
        }
        let response = ListMethodsResponse(methods: infos, serverVersion: serverVersion, protocolVersion: "chat/1")
        router.register(ChatMethods.MethodListService.listMethods) { _, _ in response }
    }
}
