internal import DequeModule
internal import Foundation
public import Logging

/// A fixed pool of libpq connections, each owned by a thread of its own, so that blocking libpq calls never run on
/// an event loop or on the cooperative thread pool.
///
/// Work is a synchronous closure that runs on a pool thread with exclusive use of one connection; the async
/// caller suspends until it finishes. Connections open lazily and reopen after they are lost: when one
/// connection finds the server gone, every connection reconnects before its next job, so after a server restart
/// only the calls in flight fail (with `.connectionFailed`, which `isRetryable`).
public final class PGPool: @unchecked Sendable {
    /// A unit of work: receives the connection, or the error that prevented opening one, and returns what resumes
    /// the caller. The worker checks the connection's health before it resumes the caller, so that the caller's
    /// next call already sees a lost connection reflected in the pool.
    private typealias Job = (Result<PGConnection, StorageError>) -> () -> Void

    private let conninfo: String
    private let logger: Logger
    private let condition = NSCondition()
    // Guarded by `condition`:
    private var jobs = Deque<Job>()
    private var isShutDown = false
    private var generation = 0
    private var threads: [Thread] = []
    private var running = 0

    /// The number of connections.
    public let size: Int

    /// Creates the pool and starts its threads; connections open on first use.
    ///
    /// - Parameters:
    ///   - conninfo: the libpq connection string of the application role.
    ///   - size: the number of connections (and threads).
    ///   - logger: where connection events are logged.
    public init(conninfo: String, size: Int, logger: Logger) {
        precondition(size > 0, "a pool needs at least one connection")
        self.conninfo = conninfo
        self.size = size
        self.logger = logger
        for index in 0..<size {
            let thread = Thread { [self] in self.workerLoop(index: index) }
            thread.name = "chat-pg-\(index)"
            thread.stackSize = 1 << 20
            self.threads.append(thread)
            self.running += 1
            thread.start()
        }
    }

    deinit {
        self.shutdown()
    }

    /// Runs `work` on a pool thread with exclusive use of a connection.
    ///
    /// - Parameter work: synchronous work; it may block, it runs on a pool thread.
    /// - Returns: what `work` returned.
    /// - Throws: `StorageError` when no connection could be opened, or what `work` threw.
    public func withConnection<Value: Sendable>(
        _ work: @escaping @Sendable (PGConnection) throws -> Value
    ) async throws -> Value {
        try Task.checkCancellation()
        return try await withCheckedThrowingContinuation { continuation in
            let job: Job = { connection in
                let outcome = Result { try work(connection.get()) }
                return { continuation.resume(with: outcome) }
            }
            self.condition.lock()
            if self.isShutDown {
                self.condition.unlock()
                continuation.resume(throwing: StorageError(code: .connectionFailed, detail: "pool shut down"))
                return
            }
            self.jobs.append(job)
            self.condition.signal()
            self.condition.unlock()
        }
    }

    /// Stops the threads after the queued work is done and closes every connection. Idempotent.
    public func shutdown() {
        self.condition.lock()
        self.isShutDown = true
        self.condition.broadcast()
        while self.running > 0 && !self.threads.contains(where: { $0 == Thread.current }) {
            self.condition.wait()
        }
        self.condition.unlock()
    }

    private func workerLoop(index: Int) {
        var connection: PGConnection?
        var connectionGeneration = 0
        while true {
            self.condition.lock()
            while self.jobs.isEmpty && !self.isShutDown {
                self.condition.wait()
            }
            guard let job = self.jobs.popFirst() else {
                // Shut down and drained.
                self.running -= 1
                self.condition.broadcast()
                self.condition.unlock()
                connection?.close()
                return
            }
            let generation = self.generation
            self.condition.unlock()

            if let current = connection, connectionGeneration != generation || !current.isHealthy {
                current.close()
                connection = nil
            }
            if connection == nil {
                do {
                    connection = try PGConnection(conninfo: self.conninfo)
                    connectionGeneration = generation
                } catch {
                    self.logger.warning(
                        "database connection failed",
                        metadata: ["pg.pool.connection": "\(index)", "error": "\(error)"]
                    )
                    job(.failure(error))()
                    continue
                }
            }
            let resume = job(.success(connection!))
            if let current = connection, !current.isHealthy {
                // The server is gone or restarted: every connection opened before now is suspect.
                self.logger.info("database connection lost", metadata: ["pg.pool.connection": "\(index)"])
                current.close()
                connection = nil
                self.condition.lock()
                if self.generation == generation { self.generation += 1 }
                self.condition.unlock()
            }
            resume()
        }
    }
}
