internal import CLibPQ
internal import DequeModule
internal import Foundation
public import Logging
internal import Synchronization
public import Tracing

/// A fixed pool of libpq connections, each owned by a thread of its own, so that blocking libpq calls never run on
/// an event loop or on the cooperative thread pool.
///
/// Work is a synchronous closure that runs on a pool thread with exclusive use of one connection; the async
/// caller suspends until it finishes. Everything about the wait is bounded:
/// - the queue holds at most `maxQueued` jobs; past that a call fails at once (`.overloaded`);
/// - a queued job waits at most until its admission deadline (the call's deadline, and never longer than
///   `queueTimeout`); then it fails (`.admissionTimeout`) without having run;
/// - a cancelled caller's queued job is removed; a running one has its statement cancelled on the server;
/// - a running job's statements get the call's remaining time as `statement_timeout` (in the same pipeline, see
///   `TenantContext`), and a statement still running past the deadline is cancelled from the pool's reaper thread.
///
/// Connections open lazily and reopen after they are lost: when one connection finds the server gone, every
/// connection reconnects before its next job, so after a server restart only the calls in flight fail (with
/// `.connectionFailed`, which `isRetryable`). A connection whose protocol state is unknown is closed, never reused.
/// Losing and regaining the database is logged once per change, with the number of failed attempts.
public final class PGPool: @unchecked Sendable {
    /// The pool's bounds.
    public struct Configuration: Sendable, Hashable {
        /// The number of connections (and threads).
        public var size: Int
        /// Jobs that may wait for a connection; more fail at once with `.overloaded`.
        public var maxQueued: Int
        /// The longest a job waits for a connection when its call has no earlier deadline.
        public var queueTimeout: Duration
        /// The longest a statement runs when its call has no earlier deadline.
        public var statementTimeout: Duration
        /// Whether connections prepare statements by name (off behind a pooler in transaction mode; see
        /// `PGConnection.init(conninfo:preparesStatements:)`).
        public var preparesStatements = true

        /// chatd's defaults: 32 waiting jobs per connection, 5 s in the queue, 30 s per statement.
        public init(
            size: Int,
            maxQueued: Int? = nil,
            queueTimeout: Duration = .seconds(5),
            statementTimeout: Duration = .seconds(30)
        ) {
            self.size = size
            self.maxQueued = maxQueued ?? size * 32
            self.queueTimeout = queueTimeout
            self.statementTimeout = statementTimeout
        }
    }

    /// One unit of work and its bookkeeping. Its continuation is resumed exactly once, by whoever takes it out of
    /// the queue (a worker, the reaper, or the cancellation handler), all under the pool's lock.
    private final class Job: @unchecked Sendable {
        let id: UInt64
        /// Until when it may wait in the queue.
        let admissionDeadline: ContinuousClock.Instant
        /// The call's deadline, bounding its statements.
        let callDeadline: ContinuousClock.Instant?
        let activity: DatabaseBudget.Activity?
        /// The caller's span, which the job's round trips are traced under; nil when not tracing.
        let trace: RoundTripTrace?
        /// Runs the work with the connection (or the error that prevented opening one) and returns what resumes
        /// the caller; `fail` resumes it without running.
        let run: (Result<PGConnection, StorageError>) -> () -> Void
        let fail: (any Error) -> Void
        // Guarded by the pool's lock:
        var connection: PGConnection?
        var statementDeadline: ContinuousClock.Instant?
        var cancelRequested = false
        var cancelSent = false
        /// The reaper is sending a cancel request for this job's statement: its worker waits before the next job,
        /// so that the request cannot land on another call's statement.
        var cancelInFlight = false

        init(
            id: UInt64,
            admissionDeadline: ContinuousClock.Instant,
            callDeadline: ContinuousClock.Instant?,
            activity: DatabaseBudget.Activity?,
            trace: RoundTripTrace?,
            run: @escaping (Result<PGConnection, StorageError>) -> () -> Void,
            fail: @escaping (any Error) -> Void
        ) {
            self.id = id
            self.admissionDeadline = admissionDeadline
            self.callDeadline = callDeadline
            self.activity = activity
            self.trace = trace
            self.run = run
            self.fail = fail
        }
    }

    private let conninfo: String
    private let logger: Logger
    private let condition = NSCondition()
    // Guarded by `condition`:
    private var queue = Deque<Job>()
    private var running: [UInt64: Job] = [:]
    private var nextID: UInt64 = 0
    private var isShutDown = false
    private var generation = 0
    private var threads: [Thread] = []
    private var liveThreads = 0
    private var health = ConnectionHealth()
    /// When the reaper next looks by itself (nil: only when woken); guarded by `condition`.
    private var reaperTarget: ContinuousClock.Instant?
    /// The reaper sleeps on a condition of its own, so that waking a worker never wakes it and the reverse.
    private let reaperWake = NSCondition()
    private var reaperWoken = false

    /// The bounds.
    public let configuration: Configuration
    private let metrics: PoolMetrics?
    /// Traces each round trip of a job whose caller runs inside a span; nil: none are.
    private let tracer: (any Tracer)?
    /// The number of connections.
    public var size: Int { self.configuration.size }

    /// Creates the pool and starts its threads; connections open on first use.
    ///
    /// - Parameters:
    ///   - conninfo: the libpq connection string of the application role.
    ///   - configuration: the size and the bounds.
    ///   - logger: where connection events are logged.
    ///   - metrics: where waits and errors are counted; nil for nowhere.
    ///   - tracer: makes a client span per round trip of a caller inside a span (a traced call); nil for none.
    public init(
        conninfo: String,
        configuration: Configuration,
        logger: Logger,
        metrics: PoolMetrics? = nil,
        tracer: (any Tracer)? = nil
    ) {
        precondition(configuration.size > 0, "a pool needs at least one connection")
        precondition(configuration.maxQueued >= 0, "the queue bound cannot be negative")
        self.conninfo = conninfo
        self.configuration = configuration
        self.logger = logger
        self.metrics = metrics
        self.tracer = tracer
        for index in 0..<configuration.size {
            let thread = Thread { [self] in self.workerLoop(index: index) }
            thread.name = "chat-pg-\(index)"
            thread.stackSize = 1 << 20
            self.threads.append(thread)
            self.liveThreads += 1
            thread.start()
        }
        let reaper = Thread { [self] in self.reaperLoop() }
        reaper.name = "chat-pg-reaper"
        reaper.stackSize = 1 << 20
        self.threads.append(reaper)
        self.liveThreads += 1
        reaper.start()
    }

    /// Creates a pool of `size` connections with the default bounds.
    public convenience init(conninfo: String, size: Int, logger: Logger) {
        self.init(conninfo: conninfo, configuration: Configuration(size: size), logger: logger)
    }

    deinit {
        self.shutdown()
    }

    /// The number of connections running a job now.
    public var busyConnections: Int {
        self.condition.lock()
        defer { self.condition.unlock() }
        return self.running.count
    }

    /// The number of jobs waiting for a connection now.
    public var queuedJobs: Int {
        self.condition.lock()
        defer { self.condition.unlock() }
        return self.queue.count
    }

    /// Runs `work` on a pool thread with exclusive use of a connection, within the current call's
    /// `DatabaseBudget` (or the pool's defaults).
    ///
    /// - Parameter work: synchronous work; it may block, it runs on a pool thread.
    /// - Returns: what `work` returned.
    /// - Throws: `StorageError` (`.overloaded` when the queue is full, `.admissionTimeout` when no connection
    ///   was free in time, `.connectionFailed` when none could be opened), `CancellationError`, or what `work`
    ///   threw.
    public func withConnection<Value: Sendable>(
        _ work: @escaping @Sendable (PGConnection) throws -> Value
    ) async throws -> Value {
        try Task.checkCancellation()
        let budget = DatabaseBudget.current
        let now = ContinuousClock.now
        let callDeadline = budget?.deadline
        let longest = now.advanced(by: self.configuration.queueTimeout)
        let admission = min(callDeadline ?? longest, longest)
        let id = self.condition.withLock { () -> UInt64 in
            self.nextID += 1
            return self.nextID
        }
        let trace = self.tracer.flatMap { tracer in
            ServiceContext.current.map { RoundTripTrace(tracer: tracer, context: $0) }
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Value, any Error>) in
                let job = Job(
                    id: id,
                    admissionDeadline: admission,
                    callDeadline: callDeadline,
                    activity: budget?.activity,
                    trace: trace,
                    run: { [metrics] connection in
                        metrics?.waited(.now - now)
                        let outcome = Result { try work(connection.get()) }
                        if case .failure(let error) = outcome { metrics?.failed(error) }
                        return { continuation.resume(with: outcome) }
                    },
                    fail: { [metrics] error in
                        metrics?.failed(error)
                        continuation.resume(throwing: error)
                    }
                )
                self.condition.lock()
                if self.isShutDown {
                    self.condition.unlock()
                    job.fail(StorageError(code: .connectionFailed, detail: "pool shut down"))
                    return
                }
                // Jobs an idle worker is about to take do not count against the bound (a burst may queue before a
                // worker wakes).
                let idle = max(0, self.size - self.running.count)
                if self.queue.count >= self.configuration.maxQueued + idle {
                    let queued = self.queue.count
                    self.condition.unlock()
                    var error = StorageError(
                        code: .overloaded,
                        detail: "\(queued) calls are waiting for the \(self.size) database connections"
                    )
                    error.hadNoEffect = !(budget?.activity.started ?? false)
                    job.fail(error)
                    return
                }
                self.queue.append(job)
                // One worker for the job; the reaper only when this deadline comes before the one it waits for.
                self.condition.signal()
                let wakeReaper = self.reaperTarget.map { admission < $0 } ?? true
                self.condition.unlock()
                if wakeReaper { self.wakeReaper() }
            }
        } onCancel: {
            self.cancel(id)
        }
    }

    /// Removes a queued job (it fails with `CancellationError`), or asks the reaper to cancel its running statement.
    private func cancel(_ id: UInt64) {
        self.condition.lock()
        if let index = self.queue.firstIndex(where: { $0.id == id }) {
            let job = self.queue.remove(at: index)
            self.condition.unlock()
            job.fail(CancellationError())
            return
        }
        let running = self.running[id]
        running?.cancelRequested = true
        self.condition.unlock()
        if running != nil { self.wakeReaper() }
    }

    private func wakeReaper() {
        self.reaperWake.lock()
        self.reaperWoken = true
        self.reaperWake.signal()
        self.reaperWake.unlock()
    }

    /// Stops the threads after the queued work is done and closes every connection. Idempotent.
    public func shutdown() {
        self.condition.lock()
        self.isShutDown = true
        self.condition.broadcast()
        self.condition.unlock()
        self.wakeReaper()
        self.condition.lock()
        while self.liveThreads > 0 && !self.threads.contains(where: { $0 == Thread.current }) {
            self.condition.wait()
        }
        self.condition.unlock()
    }

    private func workerLoop(index: Int) {
        var connection: PGConnection?
        var connectionGeneration = 0
        while true {
            self.condition.lock()
            while self.queue.isEmpty && !self.isShutDown {
                self.condition.wait()
            }
            guard let job = self.queue.popFirst() else {
                // Shut down and drained: the reaper may be the last one waiting for that.
                self.liveThreads -= 1
                self.condition.broadcast()
                self.condition.unlock()
                connection?.close()
                self.wakeReaper()
                return
            }
            let now = ContinuousClock.now
            if job.admissionDeadline <= now {
                self.condition.unlock()
                job.fail(self.admissionTimeout(job))
                continue
            }
            let generation = self.generation
            self.running[job.id] = job
            self.condition.unlock()

            if let current = connection, connectionGeneration != generation || !current.isHealthy {
                current.close()
                connection = nil
            }
            if connection == nil {
                do {
                    connection = try PGConnection(
                        conninfo: self.conninfo,
                        preparesStatements: self.configuration.preparesStatements
                    )
                    connectionGeneration = generation
                    self.recordHealth(ok: true, error: nil)
                } catch {
                    self.recordHealth(ok: false, error: error)
                    self.condition.withLock { self.running[job.id] = nil }
                    job.run(.failure(error))()
                    continue
                }
            }
            let current = connection!
            job.activity?.markStarted()
            let statementDeadline = min(
                job.callDeadline ?? .now.advanced(by: self.configuration.statementTimeout),
                ContinuousClock.now.advanced(by: self.configuration.statementTimeout)
            )
            current.statementTimeoutMilliseconds = max(
                1,
                Int(ContinuousClock.now.duration(to: statementDeadline) / .milliseconds(1))
            )
            let wakeReaper = self.condition.withLock {
                job.connection = current
                job.statementDeadline = statementDeadline
                return self.reaperTarget.map { statementDeadline.advanced(by: .milliseconds(200)) < $0 } ?? true
            }
            if wakeReaper { self.wakeReaper() }
            current.roundTripTrace = job.trace
            let resume = job.run(.success(current))
            current.statementTimeoutMilliseconds = nil
            current.roundTripTrace = nil
            // Out of `running` before the next job: the reaper never cancels a statement of another call.
            self.condition.lock()
            self.running[job.id] = nil
            job.connection = nil
            while job.cancelInFlight {
                // A job's signal that reached this waiting worker goes on to an idle one.
                if !self.queue.isEmpty { self.condition.signal() }
                self.condition.wait()
            }
            self.condition.unlock()
            if !current.isHealthy {
                current.close()
                connection = nil
                if !current.wasDiscarded {
                    // The server is gone or restarted: every connection opened before now is suspect.
                    self.logger.info("database connection lost", metadata: ["pg.pool.connection": "\(index)"])
                    self.condition.lock()
                    if self.generation == generation { self.generation += 1 }
                    self.condition.unlock()
                }
            }
            resume()
        }
    }

    /// Expires queued jobs past their admission deadline, and cancels running statements that were cancelled or
    /// ran past their deadline (`PQcancel` blocks while it connects, so it runs here, never on the caller's thread).
    private func reaperLoop() {
        while true {
            self.condition.lock()
            if self.isShutDown && self.queue.isEmpty && self.running.isEmpty {
                self.liveThreads -= 1
                self.condition.broadcast()
                self.condition.unlock()
                return
            }
            let now = ContinuousClock.now
            var expired: [Job] = []
            self.queue.removeAll { job in
                guard job.admissionDeadline <= now else { return false }
                expired.append(job)
                return true
            }
            var toCancel: [(Job, PGConnection)] = []
            for job in self.running.values where !job.cancelSent {
                guard let connection = job.connection else { continue }
                // A grace past the statement deadline: the server's own statement_timeout fires first.
                let late = job.statementDeadline.map { $0.advanced(by: .milliseconds(200)) <= now } ?? false
                if job.cancelRequested || late {
                    job.cancelSent = true
                    job.cancelInFlight = true
                    toCancel.append((job, connection))
                }
            }
            if !expired.isEmpty || !toCancel.isEmpty {
                self.condition.unlock()
                for job in expired { job.fail(self.admissionTimeout(job)) }
                for (_, connection) in toCancel { connection.cancelRunningStatement() }
                self.condition.lock()
                for (job, _) in toCancel { job.cancelInFlight = false }
                // The workers of those jobs wait for their cancel requests to be sent.
                self.condition.broadcast()
                self.condition.unlock()
                continue
            }
            let cancels = self.running.values.compactMap { job in
                job.cancelSent ? nil : job.statementDeadline?.advanced(by: .milliseconds(200))
            }
            // A cancel requested before its job had a connection is looked at again soon.
            let pending = self.running.values.contains { $0.cancelRequested && !$0.cancelSent }
            let next =
                (self.queue.map(\.admissionDeadline) + cancels + (pending ? [now.advanced(by: .milliseconds(20))] : []))
                .min()
            self.reaperTarget = next
            // Shutting down: look again soon, whoever wakes the reaper or not, until the workers are done.
            let shuttingDown = self.isShutDown
            self.condition.unlock()

            self.reaperWake.lock()
            if !self.reaperWoken {
                if shuttingDown {
                    _ = self.reaperWake.wait(until: Date().addingTimeInterval(0.02))
                } else if let next {
                    let wait = max(0.001, now.duration(to: next) / .seconds(1))
                    _ = self.reaperWake.wait(until: Date().addingTimeInterval(wait))
                } else {
                    self.reaperWake.wait()
                }
            }
            self.reaperWoken = false
            self.reaperWake.unlock()
        }
    }

    private func admissionTimeout(_ job: Job) -> StorageError {
        var error = StorageError(
            code: .admissionTimeout,
            detail: "no database connection became free in time (\(self.size) connections busy)"
        )
        error.hadNoEffect = !(job.activity?.started ?? false)
        return error
    }

    private func recordHealth(ok: Bool, error: StorageError?) {
        let change = self.condition.withLock { ok ? self.health.succeeded() : self.health.failed() }
        switch change {
        case .none:
            break
        case .lost:
            self.logger.warning(
                "database connection failed; further failures are not logged until it is back",
                metadata: ["error": "\(error.map(String.init(describing:)) ?? "")"]
            )
            self.logger.debug("database connection failure detail", metadata: ["error": "\(String(reflecting: error))"])
        case .recovered(let failures):
            self.logger.info("database connection back", metadata: ["pg.failed_attempts": "\(failures)"])
        }
    }
}

/// Whether connecting works, as a value: a change is reported once (lost on the first failure, recovered on the
/// first success after failures, with their count); repeated failures are counted, not reported.
struct ConnectionHealth: Sendable, Hashable {
    /// A change worth one log line.
    enum Change: Sendable, Hashable {
        case none
        case lost
        case recovered(failedAttempts: Int)
    }

    private(set) var failing = false
    private(set) var failures = 0

    /// A connection attempt failed.
    mutating func failed() -> Change {
        self.failures += 1
        if self.failing { return .none }
        self.failing = true
        return .lost
    }

    /// A connection attempt succeeded.
    mutating func succeeded() -> Change {
        defer {
            self.failing = false
            self.failures = 0
        }
        return self.failing ? .recovered(failedAttempts: self.failures) : .none
    }
}

/// What the current call allows the database layer: its deadline, and whether any of its database work began (a
/// call refused before that had no effect, and says so). The RPC layer sets it around each handler; work outside
/// a call gets the pool's defaults.
public struct DatabaseBudget: Sendable {
    /// Set once the first of the call's jobs starts running.
    public final class Activity: Sendable {
        private let flag = Atomic<Bool>(false)

        public init() {}

        func markStarted() { self.flag.store(true, ordering: .releasing) }

        /// True once a job of the call ran on a connection.
        public var started: Bool { self.flag.load(ordering: .acquiring) }
    }

    /// The call's deadline; nil for none.
    public var deadline: ContinuousClock.Instant?
    /// The call's database activity.
    public let activity: Activity

    /// A budget for one call.
    public init(deadline: ContinuousClock.Instant?) {
        self.deadline = deadline
        self.activity = Activity()
    }

    /// The budget of the call the current task serves.
    @TaskLocal public static var current: DatabaseBudget?
}
