import ArgumentParser
import ChatClient
import ChatProto
import ChatRPC
import Foundation

func json(_ audit: AuditRecord) -> [String: Any] {
    let removed = audit.removed ?? RemovalCounts()
    return [
        "id": audit.id, "kind": text(audit.kind), "actor": describe(audit.actor), "learner_id": audit.learnerId,
        "started_at_us": audit.startedAtUs, "finished_at_us": audit.finishedAtUs, "outcome": audit.outcome,
        "reason": audit.reason, "exported_records": audit.exportedRecords,
        "removed": [
            "threads": removed.threads, "messages": removed.messages, "message_edits": removed.messageEdits,
            "read_cursors": removed.readCursors, "outbox_payloads": removed.outboxPayloads,
        ],
    ]
}

func human(_ removed: RemovalCounts?) -> String {
    let removed = removed ?? RemovalCounts()
    return "\(removed.threads) threads, \(removed.messages) messages, \(removed.messageEdits) edits, "
        + "\(removed.readCursors) read cursors, \(removed.outboxPayloads) event payloads"
}

/// An audit kind as the contract names it (`legal_hold_placed`); the number for one this version does not know.
func text(_ kind: AuditKind) -> String {
    kind.name ?? String(kind.rawValue)
}

/// The kinds `--kind` accepts: the contract's names.
let auditKindNames: [String: AuditKind] = Dictionary(
    uniqueKeysWithValues: AuditKind.allCases.filter { $0 != .unspecified }.compactMap { kind in
        kind.name.map { ($0, kind) }
    }
)
