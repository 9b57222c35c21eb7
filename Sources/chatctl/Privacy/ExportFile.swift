import ArgumentParser
import ChatClient
import ChatProto
import ChatRPC
import Foundation

/// The JSON-lines form of an export: `{"type": ..., "resume_token": ..., "<type>": {...}}` per record.
enum ExportFile {
    static func line(_ record: ExportRecord) -> Data {
        var object: [String: Any] = ["resume_token": record.resumeToken]
        switch record.record {
        case .thread(let thread)?:
            object["type"] = "thread"
            object["thread"] = json(thread)
        case .message(let message)?:
            object["type"] = "message"
            object["message"] = json(message)
        case .edits(let history)?:
            object["type"] = "edit_history"
            object["edit_history"] =
                [
                    "thread_id": history.threadId, "seq": history.seq,
                    "revisions": history.edits.map {
                        [
                            "revision": $0.revision, "body": $0.body, "edited_by": describe($0.editedBy),
                            "edited_at_us": $0.editedAtUs,
                        ] as [String: Any]
                    },
                ] as [String: Any]
        case .readCursor(let cursor)?:
            object["type"] = "read_cursor"
            object["read_cursor"] =
                [
                    "user_id": cursor.userId, "thread_id": cursor.threadId, "read_seq": cursor.readSeq,
                    "updated_at_us": cursor.updatedAtUs,
                ] as [String: Any]
        case .audit(let audit)?:
            object["type"] = "audit"
            object["audit"] = json(audit)
        case .summary(let summary)?:
            object["type"] = "summary"
            object["summary"] = ["audit_id": summary.auditId, "records": summary.records] as [String: Any]
        case nil:
            object["type"] = "unknown"
        }
        var data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
        data.append(UInt8(ascii: "\n"))
        return data
    }

    /// The last complete line of an export file: its resume token, or the record count when it is the summary. A
    /// torn last line (the run was killed while writing it) is cut off, so that appending continues cleanly.
    static func lastRecord(_ path: String) throws -> (token: String, summary: UInt64?)? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        var end = data.count
        if let lastNewline = data.lastIndex(of: UInt8(ascii: "\n")), lastNewline + 1 < data.count {
            end = lastNewline + 1
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
            try handle.truncate(atOffset: UInt64(end))
            try handle.close()
        } else if data.lastIndex(of: UInt8(ascii: "\n")) == nil {
            return nil
        }
        let lines = data[..<end].split(separator: UInt8(ascii: "\n"))
        guard let last = lines.last,
            let object = try? JSONSerialization.jsonObject(with: Data(last)) as? [String: Any]
        else { return nil }
        if object["type"] as? String == "summary" {
            let summary = object["summary"] as? [String: Any]
            return ("", (summary?["records"] as? NSNumber)?.uint64Value ?? 0)
        }
        guard let token = object["resume_token"] as? String, !token.isEmpty else { return nil }
        return (token, nil)
    }
}
