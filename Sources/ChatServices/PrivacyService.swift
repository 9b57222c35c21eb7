public import ChatAuth
internal import ChatDomain
internal import ChatProto
public import ChatRPC
public import ChatStore
public import CoreMetrics
internal import Foundation
public import Logging

/// The privacy RPCs for batch jobs: export (GDPR Art. 15 and 20), erasure (Art. 17), legal holds, retention and the
/// audit trail. Privacy officers and tenant admins only (the authorization table), within their own tenant (the
/// privacy tables' row-level security admits no one else either).
public struct PrivacyService: Sendable {
    let repository: PrivacyRepository
    let live: LiveHub?
    /// Records per export page (one transaction each).
    let exportPageSize: Int
    let tokens: SealedTokens
    let idempotency: Idempotency
    let retentionMetrics: RetentionMetrics?

    /// Creates the service over a pool; `live` is told of the threads an erasure removed, so their streams end;
    /// `tokens` seals page tokens and export resume tokens; mutations keep their idempotency keys for
    /// `idempotencyWindow`.
    public init(
        pool: PGPool,
        live: LiveHub? = nil,
        tokens: SealedTokens,
        exportPageSize: Int = 500,
        idempotencyWindow: Duration = Idempotency.defaultWindow,
        retentionMetrics: RetentionMetrics? = nil
    ) {
        self.repository = PrivacyRepository(pool: pool)
        self.live = live
        self.tokens = tokens
        self.idempotency = Idempotency(pool: pool, window: idempotencyWindow)
        self.exportPageSize = exportPageSize
        self.retentionMetrics = retentionMetrics
    }

    /// Registers the methods.
    public func register(in router: inout Router) {
        // RunRetentionSweep is a mutation the contract runs without a key: a retried sweep sweeps what is left (its
        // own audit record each time).
        router.register(ChatMethods.PrivacyService.exportLearnerData) { request, context, writer in
            try await self.export(request, context, writer)
        }
        router.register(mutation: ChatMethods.PrivacyService.eraseLearnerData, idempotency: self.idempotency) {
            request,
            context in
            try await self.erase(request, context)
        }
        router.register(mutation: ChatMethods.PrivacyService.placeLegalHold, idempotency: self.idempotency) {
            request,
            context in
            let principal = try context.requirePrincipal()
            let learner = try Validate.uuid(request.learnerId, "learner_id")
            let reason = try Validate.reason(request.reason, required: true)
            let (hold, placed) = try await self.repository.placeHold(
                TenantContext(principal),
                learnerID: learner,
                reason: reason
            )
            guard placed else {
                throw RPCError(.alreadyExists, "learner \(learner) is already under \(Self.describe(hold))")
            }
            context.logger.notice(
                "legal hold placed",
                metadata: ["learner": "\(learner)", "by": "\(principal.userID)"]
            )
            return PlaceLegalHoldResponse(hold: LegalHold(hold))
        }
        router.register(mutation: ChatMethods.PrivacyService.releaseLegalHold, idempotency: self.idempotency) {
            request,
            context in
            let principal = try context.requirePrincipal()
            let learner = try Validate.uuid(request.learnerId, "learner_id")
            let reason = try Validate.reason(request.reason, required: false)
            do {
                try await self.repository.releaseHold(TenantContext(principal), learnerID: learner, reason: reason)
            } catch let error as StorageError where error.code == .notFound {
                throw RPCError(.notFound, "learner \(learner) is not under a legal hold")
            }
            context.logger.notice(
                "legal hold released",
                metadata: ["learner": "\(learner)", "by": "\(principal.userID)"]
            )
            return ReleaseLegalHoldResponse()
        }
        router.register(ChatMethods.PrivacyService.listLegalHolds) { request, context in
            let principal = try context.requirePrincipal()
            let page = request.page ?? PageRequest()
            let limit = try Validate.pageSize(page.pageSize)
            var after: String?
            if !page.pageToken.isEmpty {
                let fields = try self.tokens.open(
                    page.pageToken,
                    .listLegalHolds,
                    for: principal,
                    count: 1,
                    field: "page.page_token"
                )
                after = try Validate.uuid(fields[0], "page.page_token")
            }
            let holds = try await self.repository.holds(TenantContext(principal), afterLearner: after, limit: limit + 1)
            return ListLegalHoldsResponse(
                holds: holds.prefix(limit).map(LegalHold.init),
                page: PageInfo(
                    nextPageToken: holds.count > limit
                        ? self.tokens.seal([holds[limit - 1].learnerID], .listLegalHolds, for: principal) : ""
                )
            )
        }
        router.register(ChatMethods.PrivacyService.getRetentionPolicy) { _, context in
            let principal = try context.requirePrincipal()
            let policy = try await self.repository.retentionPolicy(TenantContext(principal))
            return GetRetentionPolicyResponse(policy: policy.map(RetentionPolicy.init) ?? RetentionPolicy())
        }
        router.register(mutation: ChatMethods.PrivacyService.setRetentionPolicy, idempotency: self.idempotency) {
            request,
            context in
            let principal = try context.requirePrincipal()
            guard request.messageRetentionDays <= 36_500 else {
                throw RPCError.invalidArgument(field: "message_retention_days", "0 (keep forever) to 36500")
            }
            let policy = try await self.repository.setRetentionPolicy(
                TenantContext(principal),
                days: Int(request.messageRetentionDays)
            )
            context.logger.notice(
                "retention policy set",
                metadata: ["days": "\(policy.messageRetentionDays)", "by": "\(principal.userID)"]
            )
            return SetRetentionPolicyResponse(policy: RetentionPolicy(policy))
        }
        router.register(ChatMethods.PrivacyService.runRetentionSweep) { request, context, writer in
            let principal = try context.requirePrincipal()
            guard request.batchSize <= 10_000 else {
                throw RPCError.invalidArgument(field: "batch_size", "1 to 10000 (0 = 1000)")
            }
            func report(_ run: PrivacyRepository.RetentionRun, _ removed: RemovedRows, done: Bool) async throws {
                try await writer.write(
                    RunRetentionSweepResponse(
                        removed: ChatProto.RemovalCounts(removed),
                        skippedHeldLearners: UInt32(run.heldLearners),
                        done: done,
                        auditId: run.auditID
                    )
                )
            }
            let sweeper = RetentionSweeper(
                repository: self.repository,
                logger: context.logger,
                metrics: self.retentionMetrics
            )
            let result = try await sweeper.sweep(
                TenantContext(principal),
                batchSize: request.batchSize == 0 ? 1000 : Int(request.batchSize)
            ) { run, removed in
                try await report(run, removed, done: false)
            }
            guard let (run, removed) = result else {
                throw RPCError(
                    .failedPrecondition,
                    "this tenant has no retention policy: set one with SetRetentionPolicy (message_retention_days > 0)"
                )
            }
            try await report(run, removed, done: true)
        }
        router.register(ChatMethods.PrivacyService.listAuditRecords) { request, context in
            try await self.listAudit(request, context)
        }
        router.register(ChatMethods.PrivacyService.verifyAuditTrail) { request, context in
            let principal = try context.requirePrincipal()
            guard request.anchorSeq <= UInt64(Int64.max) else {
                throw RPCError.invalidArgument(field: "anchor_seq", "at most 2^63-1")
            }
            let report = try await self.repository.verifyAuditChain(
                TenantContext(principal),
                anchorSeq: request.anchorSeq == 0 ? nil : Int64(request.anchorSeq)
            )
            if !report.problems.isEmpty {
                context.logger.warning(
                    "audit trail verification found problems",
                    metadata: ["problems": "\(report.problems.count)", "by": "\(principal.userID)"]
                )
            }
            return VerifyAuditTrailResponse(
                intact: report.problems.isEmpty,
                entries: UInt64(report.entries),
                headSeq: UInt64(report.headSeq),
                headHash: report.headHash,
                problems: report.problems.map {
                    AuditChainProblem(seq: UInt64(max(0, $0.seq)), auditId: $0.auditID, description: $0.description)
                },
                anchorHash: report.anchorHash ?? []
            )
        }
    }

    // MARK: - Export

    func export(
        _ request: ExportLearnerDataRequest,
        _ context: CallContext,
        _ writer: ResponseWriter<ExportLearnerDataResponse>
    ) async throws {
        let principal = try context.requirePrincipal()
        let tenant = TenantContext(principal)
        let learner = try Validate.uuid(request.learnerId, "learner_id")
        let reason = try Validate.reason(request.reason, required: false)
        var position = ExportPosition.start
        var sent: Int64 = 0
        let auditID: String
        if request.resumeToken.isEmpty {
            auditID = try await self.repository.beginExport(tenant, learnerID: learner, reason: reason)
        } else {
            let payload = try self.tokens.openBytes(
                request.resumeToken,
                .export,
                for: principal,
                query: learner,
                field: "resume_token"
            )
            guard let text = String(validating: payload, as: UTF8.self), let token = ExportToken(text: text),
                token.learnerID == learner
            else {
                throw RPCError.invalidArgument(field: "resume_token", "not a resume token of an export record")
            }
            do {
                try await self.repository.resumeExport(tenant, learnerID: learner, auditID: token.auditID)
            } catch let error as StorageError where error.code == .notFound {
                throw RPCError.invalidArgument(field: "resume_token", "no such export of this learner in your tenant")
            }
            auditID = token.auditID
            position = token.position
            sent = token.records
        }
        context.logger.notice(
            "export started",
            metadata: [
                "learner": "\(learner)", "audit": "\(auditID)", "by": "\(principal.userID)", "resumed": "\(sent)",
            ]
        )
        do {
            while position != .done {
                let page = try await self.repository.exportPage(
                    tenant,
                    learnerID: learner,
                    auditID: auditID,
                    after: position,
                    sentBefore: sent,
                    limit: self.exportPageSize
                )
                for (item, after) in page.items {
                    sent += 1
                    let token = ExportToken(auditID: auditID, learnerID: learner, records: sent, position: after)
                    try await writer.write(
                        ExportLearnerDataResponse(
                            record: ExportRecord(
                                resumeToken: self.tokens.sealBytes(
                                    Array(token.text.utf8),
                                    .export,
                                    for: principal,
                                    query: learner
                                ),
                                record: item.record
                            )
                        )
                    )
                }
                position = page.next
            }
            try await self.repository.finishExport(tenant, auditID: auditID, records: sent, outcome: "ok")
            try await writer.write(
                ExportLearnerDataResponse(
                    record: ExportRecord(record: .summary(ExportSummary(auditId: auditID, records: UInt64(sent))))
                )
            )
            context.logger.notice("export completed", metadata: ["audit": "\(auditID)", "records": "\(sent)"])
        } catch {
            // The caller resumes from the last record it received; the audit record says how far this run got.
            // Recorded outside this (possibly cancelled) task, and outside the call's deadline (which may be why
            // it stopped): the pool's own bounds apply.
            let records = sent
            let repository = self.repository
            await Task {
                await DatabaseBudget.$current.withValue(nil) {
                    try? await repository.finishExport(
                        tenant,
                        auditID: auditID,
                        records: records,
                        outcome: "partial: stopped after \(records) records"
                    )
                }
            }.value
            context.logger.warning(
                "export stopped",
                metadata: ["audit": "\(auditID)", "records": "\(records)", "error": "\(type(of: error))"]
            )
            throw error
        }
    }

    // MARK: - Erasure

    func erase(_ request: EraseLearnerDataRequest, _ context: CallContext) async throws -> EraseLearnerDataResponse {
        let principal = try context.requirePrincipal()
        let learner = try Validate.uuid(request.learnerId, "learner_id")
        let reason = try Validate.reason(request.reason, required: false)
        switch try await self.repository.erase(TenantContext(principal), learnerID: learner, reason: reason) {
        case .held(let hold, let auditID):
            context.logger.notice(
                "erasure refused: legal hold",
                metadata: ["learner": "\(learner)", "audit": "\(auditID)"]
            )
            let description = "learner \(learner) is under \(Self.describe(hold)); release the hold before erasing"
            throw RPCError(
                .failedPrecondition,
                description,
                details: [
                    StatusDetail(
                        detail: .preconditionFailure(
                            PreconditionFailure(type: "LEGAL_HOLD", subject: learner, description: description)
                        )
                    )
                ]
            )
        case .erased(let auditID, let removed, let threadIDs, let completedAt):
            // The erased threads' streams see their thread gone, say so and end.
            self.live?.published(
                threadIDs.map {
                    LiveChange(tenantID: principal.tenantID, threadID: $0, learnerID: learner, eventSeq: 0)
                }
            )
            context.logger.notice(
                "learner erased",
                metadata: [
                    "learner": "\(learner)", "audit": "\(auditID)", "by": "\(principal.userID)",
                    "threads": "\(removed.threads)", "messages": "\(removed.messages)",
                ]
            )
            return EraseLearnerDataResponse(
                receipt: ErasureReceipt(
                    auditId: auditID,
                    learnerId: learner,
                    removed: ChatProto.RemovalCounts(removed),
                    completedAtUs: completedAt
                )
            )
        }
    }

    static func describe(_ hold: LegalHoldRecord) -> String {
        "a legal hold placed by \(hold.placedBy) (\(hold.placedByRole)) at \(Self.isoTime(hold.placedAtMicros)): "
            + "\"\(hold.reason)\""
    }

    static func isoTime(_ micros: Int64) -> String {
        let formatter = ISO8601DateFormatter()
        return formatter.string(from: Date(timeIntervalSince1970: Double(micros) / 1_000_000))
    }

    // MARK: - Audit

    func listAudit(_ request: ListAuditRecordsRequest, _ context: CallContext) async throws
        -> ListAuditRecordsResponse
    {
        let principal = try context.requirePrincipal()
        let page = request.page ?? PageRequest()
        let limit = try Validate.pageSize(page.pageSize)
        var filter = PrivacyRepository.AuditFilter()
        if !request.learnerId.isEmpty { filter.learnerID = try Validate.uuid(request.learnerId, "learner_id") }
        switch request.kind {
        case .unspecified: break
        case .unrecognized(let value): throw RPCError.invalidArgument(field: "kind", "unknown kind \(value)")
        default: filter.kind = Int(request.kind.rawValue)
        }
        guard request.fromUs >= 0 else {
            throw RPCError.invalidArgument(field: "from_us", "microseconds since the epoch, not negative")
        }
        guard request.toUs >= 0 else {
            throw RPCError.invalidArgument(field: "to_us", "microseconds since the epoch, not negative")
        }
        _ = try Validate.micros(request.fromUs, "from_us")
        _ = try Validate.micros(request.toUs, "to_us")
        filter.fromMicros = request.fromUs == 0 ? nil : request.fromUs
        filter.toMicros = request.toUs == 0 ? nil : request.toUs
        let query = "\(filter.learnerID ?? "*")/\(filter.kind ?? 0)/\(request.fromUs)/\(request.toUs)"
        var after: ExportPosition.AuditKey?
        if !page.pageToken.isEmpty {
            let fields = try self.tokens.open(
                page.pageToken,
                .listAuditRecords,
                for: principal,
                query: query,
                count: 2,
                field: "page.page_token"
            )
            after = .init(
                startedAtMicros: try Validate.micros(fields[0], "page.page_token"),
                id: try Validate.uuid(fields[1], "page.page_token")
            )
        }
        let records = try await self.repository.auditRecords(
            TenantContext(principal),
            filter: filter,
            after: after,
            limit: limit + 1
        )
        let next = records.count > limit ? records[limit - 1] : nil
        return ListAuditRecordsResponse(
            records: records.prefix(limit).map(AuditRecord.init),
            page: PageInfo(
                nextPageToken: next.map {
                    self.tokens.seal(
                        [String($0.startedAtMicros), $0.id],
                        .listAuditRecords,
                        for: principal,
                        query: query
                    )
                } ?? ""
            )
        )
    }
}

/// Runs retention for one tenant: the run record first, then short batches until nothing expired is left, then the
/// outcome. Used by the RunRetentionSweep RPC and by the sweeper inside chatd.
public struct RetentionSweeper: Sendable {
    let repository: PrivacyRepository
    let logger: Logger
    let metrics: RetentionMetrics?

    public init(repository: PrivacyRepository, logger: Logger, metrics: RetentionMetrics? = nil) {
        self.repository = repository
        self.logger = logger
        self.metrics = metrics
    }

    /// Sweeps the tenant of `context`.
    ///
    /// - Parameters:
    ///   - batchSize: rows per batch (per store), each batch its own short transaction.
    ///   - progress: told the cumulative counts after every batch.
    /// - Returns: the run and what it removed; nil when the tenant has no retention policy.
    public func sweep(
        _ context: TenantContext,
        batchSize: Int,
        progress: (PrivacyRepository.RetentionRun, RemovedRows) async throws -> Void = { _, _ in }
    ) async throws -> (PrivacyRepository.RetentionRun, RemovedRows)? {
        guard let run = try await self.repository.beginRetentionRun(context) else { return nil }
        var metadata: Logger.Metadata = [
            LogKey.tenant: "\(context.tenantID)", "audit": "\(run.auditID)", "days": "\(run.days)",
            "held_learners_skipped": "\(run.heldLearners)",
        ]
        self.logger.info("retention run started", metadata: metadata)
        var removed = RemovedRows()
        do {
            while true {
                let batch = try await self.repository.retentionBatch(context, run: run, batchSize: batchSize)
                removed += batch
                try await progress(run, removed)
                if batch.messages < batchSize && batch.outboxPayloads < batchSize { break }
            }
            try await self.repository.finishRetentionRun(context, run: run, outcome: "ok")
        } catch {
            let outcome = "failed: \(Self.describe(error))"
            let repository = self.repository
            await Task {
                await DatabaseBudget.$current.withValue(nil) {
                    try? await repository.finishRetentionRun(context, run: run, outcome: outcome)
                }
            }.value
            metadata["error"] = "\(outcome)"
            metadata["messages"] = "\(removed.messages)"
            self.logger.error("retention run failed", metadata: metadata)
            self.metrics?.ran(ok: false, removed)
            throw error
        }
        self.metrics?.ran(ok: true, removed)
        metadata["messages"] = "\(removed.messages)"
        metadata["message_edits"] = "\(removed.messageEdits)"
        metadata["outbox_payloads"] = "\(removed.outboxPayloads)"
        self.logger.info("retention run finished", metadata: metadata)
        return (run, removed)
    }

    /// What went wrong, without database text that might quote data.
    static func describe(_ error: any Error) -> String {
        switch error {
        case let error as StorageError: "\(error.code)\(error.sqlState.map { " (SQLSTATE \($0))" } ?? "")"
        case is CancellationError: "cancelled"
        case let error as RPCError: "\(error.code)"
        default: "\(type(of: error))"
        }
    }
}

extension Validate {
    /// A stated reason or case reference: at most 512 bytes, no control characters; required for holds.
    static func reason(_ value: String, required: Bool) throws -> String {
        let count = value.utf8.count
        guard count <= 512, !required || count >= 1 else {
            throw RPCError.invalidArgument(field: "reason", required ? "1 to 512 bytes, required" : "at most 512 bytes")
        }
        guard !value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw RPCError.invalidArgument(field: "reason", "no control characters")
        }
        return value
    }
}

extension ExportItem {
    var record: ExportRecord.Record {
        switch self {
        case .thread(let thread): .thread(Thread(thread, unread: 0))
        case .message(let message): .message(Message(message))
        case .edits(let threadID, let seq, let revisions):
            .edits(
                MessageEditHistory(
                    threadId: threadID,
                    seq: UInt64(seq),
                    edits: revisions.map {
                        MessageEdit(
                            revision: UInt32($0.revision),
                            body: $0.body,
                            editedBy: Actor(userId: $0.editedBy, role: Role(stored: $0.editedByRole)),
                            editedAtUs: $0.editedAtMicros
                        )
                    }
                )
            )
        case .readCursor(let cursor):
            .readCursor(
                ReadCursor(
                    userId: cursor.userID,
                    threadId: cursor.threadID,
                    readSeq: UInt64(max(0, cursor.readSeq)),
                    updatedAtUs: cursor.updatedAtMicros
                )
            )
        case .audit(let entry): .audit(AuditRecord(entry))
        }
    }
}

extension ChatProto.RemovalCounts {
    init(_ rows: RemovedRows) {
        self.init(
            threads: UInt64(rows.threads),
            messages: UInt64(rows.messages),
            messageEdits: UInt64(rows.messageEdits),
            readCursors: UInt64(rows.readCursors),
            outboxPayloads: UInt64(rows.outboxPayloads)
        )
    }
}

extension AuditRecord {
    init(_ entry: AuditEntry) {
        self.init(
            id: entry.id,
            kind: AuditKind(rawValue: Int32(entry.kind)),
            actor: Actor(userId: entry.actorID, role: Role(stored: entry.actorRole)),
            learnerId: entry.learnerID ?? "",
            startedAtUs: entry.startedAtMicros,
            finishedAtUs: entry.finishedAtMicros ?? 0,
            removed: ChatProto.RemovalCounts(entry.removed),
            exportedRecords: UInt64(max(0, entry.exportedRecords)),
            outcome: entry.outcome,
            reason: entry.reason
        )
    }
}

extension LegalHold {
    init(_ hold: LegalHoldRecord) {
        self.init(
            learnerId: hold.learnerID,
            reason: hold.reason,
            placedBy: Actor(userId: hold.placedBy, role: Role(stored: hold.placedByRole)),
            placedAtUs: hold.placedAtMicros
        )
    }
}

extension RetentionPolicy {
    init(_ policy: RetentionPolicyRecord) {
        self.init(
            messageRetentionDays: UInt32(max(0, policy.messageRetentionDays)),
            updatedAtUs: policy.updatedAtMicros,
            updatedBy: Actor(userId: policy.updatedBy, role: Role(stored: policy.updatedByRole))
        )
    }
}

/// `chat_retention_runs_total` by `outcome` (`ok`, `failed`) and `chat_retention_rows_removed_total` by `store`
/// (`messages`, `message_edits`, `outbox_payloads`): every run, the sweeper's and RunRetentionSweep's alike.
public final class RetentionMetrics: Sendable {
    /// The metric names, defined once.
    public enum Name {
        public static let runs = "chat_retention_runs_total"
        public static let rowsRemoved = "chat_retention_rows_removed_total"
    }

    let ok: Counter
    let failed: Counter
    let messages: Counter
    let messageEdits: Counter
    let outboxPayloads: Counter

    /// Metrics made by `factory`.
    public init(factory: any MetricsFactory) {
        self.ok = Counter(label: Name.runs, dimensions: [("outcome", "ok")], factory: factory)
        self.failed = Counter(label: Name.runs, dimensions: [("outcome", "failed")], factory: factory)
        self.messages = Counter(label: Name.rowsRemoved, dimensions: [("store", "messages")], factory: factory)
        self.messageEdits = Counter(label: Name.rowsRemoved, dimensions: [("store", "message_edits")], factory: factory)
        self.outboxPayloads = Counter(
            label: Name.rowsRemoved,
            dimensions: [("store", "outbox_payloads")],
            factory: factory
        )
    }

    func ran(ok: Bool, _ removed: RemovedRows) {
        (ok ? self.ok : self.failed).increment()
        self.messages.increment(by: removed.messages)
        self.messageEdits.increment(by: removed.messageEdits)
        self.outboxPayloads.increment(by: removed.outboxPayloads)
    }
}
