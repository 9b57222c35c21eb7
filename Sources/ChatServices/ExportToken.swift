internal import ChatDomain
public import ChatStore

/// The resume token of an export record: which export (its audit record), which learner, how many records came
/// before, and the position. Callers get it sealed (`SealedTokens`, bound to the caller and the learner), so every
/// field is the server's own; the export and learner are checked again against the database on resume.
///
/// Text form (the sealed payload): `x1|<audit id>|<learner id>|<records>|<kind>|<fields...>`; the user id of a read
/// cursor, which may contain `|`, is the last field.
public struct ExportToken: Sendable, Hashable {
    public var auditID: String
    public var learnerID: String
    /// Records sent up to and including the one this token follows.
    public var records: Int64
    public var position: ExportPosition

    public init(auditID: String, learnerID: String, records: Int64, position: ExportPosition) {
        self.auditID = auditID
        self.learnerID = learnerID
        self.records = records
        self.position = position
    }

    /// The text form.
    public var text: String {
        var fields = ["x1", self.auditID, self.learnerID, String(self.records)]
        switch self.position {
        case .threads(let after): fields += ["N", after ?? ""]
        case .thread(let id): fields += ["T", id]
        case .message(let thread, let seq): fields += ["M", thread, String(seq)]
        case .edits(let thread, let seq): fields += ["E", thread, String(seq)]
        case .readCursors(let after): fields += ["C", after?.threadID ?? "", after?.userID ?? ""]
        case .audits(let after): fields += ["A", after.map { String($0.startedAtMicros) } ?? "", after?.id ?? ""]
        case .done: fields += ["D"]
        }
        return fields.joined(separator: "|")
    }

    /// Parses the text form; nil when it is not one of ours.
    public init?(text: String) {
        guard text.utf8.count <= 2048 else { return nil }
        let plain = text
        let head = plain.split(separator: "|", maxSplits: 5, omittingEmptySubsequences: false).map(String.init)
        guard head.count >= 5, head[0] == "x1", Self.isUUID(head[1]), Self.isUUID(head[2]),
            let records = Int64(head[3]), records >= 0
        else { return nil }
        let rest = head.count == 6 ? head[5] : nil
        let position: ExportPosition
        switch head[4] {
        case "N":
            guard let rest, rest.isEmpty || Self.isUUID(rest) else { return nil }
            position = .threads(after: rest.isEmpty ? nil : rest)
        case "T":
            guard let rest, Self.isUUID(rest) else { return nil }
            position = .thread(rest)
        case "M", "E":
            guard let parts = rest?.split(separator: "|", omittingEmptySubsequences: false), parts.count == 2,
                Self.isUUID(String(parts[0])), let seq = Int64(parts[1]), seq >= 1
            else { return nil }
            position =
                head[4] == "M"
                ? .message(thread: String(parts[0]), seq: seq) : .edits(thread: String(parts[0]), seq: seq)
        case "C":
            guard let parts = rest?.split(separator: "|", maxSplits: 1, omittingEmptySubsequences: false),
                parts.count == 2
            else { return nil }
            if parts[0].isEmpty && parts[1].isEmpty {
                position = .readCursors(after: nil)
            } else {
                guard Self.isUUID(String(parts[0])), !parts[1].isEmpty else { return nil }
                position = .readCursors(after: .init(threadID: String(parts[0]), userID: String(parts[1])))
            }
        case "A":
            guard let parts = rest?.split(separator: "|", omittingEmptySubsequences: false), parts.count == 2 else {
                return nil
            }
            if parts[0].isEmpty && parts[1].isEmpty {
                position = .audits(after: nil)
            } else {
                guard let micros = Int64(parts[0]), Self.isUUID(String(parts[1])) else { return nil }
                position = .audits(after: .init(startedAtMicros: micros, id: String(parts[1])))
            }
        case "D":
            guard rest == nil else { return nil }
            position = .done
        default:
            return nil
        }
        self.init(auditID: head[1], learnerID: head[2], records: records, position: position)
    }

    /// A canonical (lower-case) UUID, as this server writes them into tokens.
    static func isUUID(_ value: String) -> Bool {
        (try? Validate.uuid(value, "resume_token")) == value
    }
}
