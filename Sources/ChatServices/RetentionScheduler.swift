internal import ChatDomain
internal import ChatProto
public import ChatStore
public import Logging
public import ServiceLifecycle

/// The retention sweeper inside chatd: every `interval`, each tenant with a retention policy is swept in short
/// batches, under that tenant's context, as the `chatd-retention` privacy officer. Every run is recorded in the
/// tenant's audit trail (start, end, rows removed, outcome) and logged; a failed run says why in both places, and
/// the next tenant still runs.
///
/// Several instances may sweep at once: batches skip rows another one holds locked, so nothing is removed twice;
/// each instance records its own runs.
public struct RetentionScheduler: Service {
    let repository: PrivacyRepository
    let sweeper: RetentionSweeper
    let interval: Duration
    let batchSize: Int
    /// How long outbox events are kept (the resume window of WatchInbox and SubscribeEvents); nil: for ever.
    let outboxWindow: Duration?
    let logger: Logger

    /// The identity retention runs are recorded under.
    public static let userID = "chatd-retention"

    public init(
        pool: PGPool,
        interval: Duration,
        batchSize: Int,
        outboxWindow: Duration? = nil,
        logger: Logger,
        metrics: RetentionMetrics? = nil
    ) {
        self.outboxWindow = outboxWindow
        self.repository = PrivacyRepository(pool: pool)
        self.sweeper = RetentionSweeper(repository: self.repository, logger: logger, metrics: metrics)
        self.interval = interval
        self.batchSize = batchSize
        self.logger = logger
    }

    /// Sweeps, then waits `interval`, until graceful shutdown.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                _ = await self.sweepAll()
                await self.purgeIdempotencyKeys()
                await self.trimOutbox()
                try? await Task.sleep(for: self.interval)
            }
        }
    }

    /// Deletes the idempotency keys past their window, in batches, every tenant's.
    func purgeIdempotencyKeys() async {
        do {
            var purged = 0
            while !Task.isCancelled {
                let batch = try await self.repository.purgeIdempotencyKeys(batchSize: self.batchSize)
                purged += batch
                if batch < self.batchSize { break }
            }
            if purged > 0 { self.logger.info("idempotency keys purged", metadata: ["count": "\(purged)"]) }
        } catch {
            self.logger.error(
                "cannot purge idempotency keys",
                metadata: ["error": "\(RetentionSweeper.describe(error))"]
            )
        }
    }

    /// Deletes the outbox events older than the window, in batches, every tenant's; returns how many.
    @discardableResult
    func trimOutbox() async -> Int {
        guard let window = self.outboxWindow else { return 0 }
        var trimmed = 0
        do {
            while !Task.isCancelled {
                let batch = try await self.repository.trimOutbox(window: window, batchSize: self.batchSize)
                trimmed += batch
                if batch < self.batchSize { break }
            }
            if trimmed > 0 { self.logger.info("outbox trimmed", metadata: ["count": "\(trimmed)"]) }
        } catch {
            self.logger.error("cannot trim the outbox", metadata: ["error": "\(RetentionSweeper.describe(error))"])
        }
        return trimmed
    }

    /// One pass over every tenant with a policy.
    ///
    /// - Returns: the tenants swept and what each removed (nil for a tenant whose run failed).
    public func sweepAll() async -> [(tenantID: String, removed: RemovedRows?)] {
        let schedule: [(tenantID: String, days: Int)]
        do {
            schedule = try await self.repository.retentionSchedule()
        } catch {
            self.logger.error(
                "retention: cannot read the schedule",
                metadata: ["error": "\(RetentionSweeper.describe(error))"]
            )
            return []
        }
        var outcomes: [(tenantID: String, removed: RemovedRows?)] = []
        for entry in schedule {
            if Task.isCancelled { break }
            let context = TenantContext(tenantID: entry.tenantID, userID: Self.userID, role: .privacyOfficer)
            do {
                let result = try await self.sweeper.sweep(context, batchSize: self.batchSize)
                outcomes.append((entry.tenantID, result?.1 ?? RemovedRows()))
            } catch {
                // Logged and recorded by the sweeper.
                outcomes.append((entry.tenantID, nil))
            }
        }
        return outcomes
    }
}
