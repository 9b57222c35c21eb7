/// Where an export stands: right after one record. Records come in a fixed order - the learner's threads by id,
/// each followed by its messages by sequence (a message's edit history right after it), then the read cursors by
/// (thread, user), then the audit records about the learner by (start time, id) - so every position names the key
/// the next read continues from, and an export resumed from any record's position yields each later record once.
public enum ExportPosition: Sendable, Hashable {
    /// After the threads up to this id (nil: before the first thread) and all their messages.
    case threads(after: String?)
    /// After a thread's own record; its messages come next.
    case thread(String)
    /// After a message's record; its edit history, when it has one, comes next.
    case message(thread: String, seq: Int64)
    /// After a message and its edit history.
    case edits(thread: String, seq: Int64)
    /// After every thread and message, and after the read cursors up to this (thread, user) (nil: before the first).
    case readCursors(after: ReadCursorKey?)
    /// After the read cursors, and after the audit records up to this one (nil: before the first).
    case audits(after: AuditKey?)
    /// After every record: only the summary is left.
    case done

    /// The start of an export.
    public static let start = ExportPosition.threads(after: nil)

    /// A read cursor's key.
    public struct ReadCursorKey: Sendable, Hashable {
        public var threadID: String
        public var userID: String

        public init(threadID: String, userID: String) {
            self.threadID = threadID
            self.userID = userID
        }
    }

    /// An audit record's key.
    public struct AuditKey: Sendable, Hashable {
        public var startedAtMicros: Int64
        public var id: String

        public init(startedAtMicros: Int64, id: String) {
            self.startedAtMicros = startedAtMicros
            self.id = id
        }
    }
}
