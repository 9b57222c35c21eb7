public import CoreMetrics
internal import Synchronization

/// The pool's metrics: how long jobs wait for a connection (`chat_db_pool_wait_seconds`) and the database errors
/// calls meet (`chat_db_errors_total`, by `code` and the SQLSTATE's two-character `sqlstate_class`, `none` without
/// one). Answers about the data (not found, conflict) are not errors here unless the server sent a SQLSTATE.
public final class PoolMetrics: Sendable {
    /// The metric names, defined once.
    public enum Name {
        public static let waitSeconds = "chat_db_pool_wait_seconds"
        public static let errors = "chat_db_errors_total"
    }

    let wait: CoreMetrics.Timer
    private let factory: any MetricsFactory
    private let errors = Mutex<[String: Counter]>([:])

    /// Metrics made by `factory`.
    public init(factory: any MetricsFactory) {
        self.factory = factory
        self.wait = CoreMetrics.Timer(label: Name.waitSeconds, preferredDisplayUnit: .seconds, factory: factory)
    }

    /// Records the time a job waited in the queue.
    func waited(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self.wait.recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }

    /// Counts a job's failure, when it is a database error.
    func failed(_ error: any Error) {
        guard let error = error as? StorageError, error.sqlState != nil || error.code.isPathFailure else { return }
        let sqlClass = error.sqlState.map { String($0.prefix(2)) } ?? "none"
        let key = "\(error.code.metricLabel) \(sqlClass)"
        let counter = self.errors.withLock { counters in
            if let counter = counters[key] { return counter }
            let counter = Counter(
                label: Name.errors,
                dimensions: [("code", error.code.metricLabel), ("sqlstate_class", sqlClass)],
                factory: self.factory
            )
            counters[key] = counter
            return counter
        }
        counter.increment()
    }
}
