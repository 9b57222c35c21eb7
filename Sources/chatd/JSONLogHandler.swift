import Foundation
import Logging
import Synchronization

/// Logs one JSON object a line to standard error: `time` (ISO 8601, UTC, milliseconds), `level`, `logger`,
/// `message`, `source`, and the metadata's keys (`call.id`, `tenant.id`, ...) as fields of their own.
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    /// One writer for the process: lines of concurrent loggers never interleave.
    private static let output = Mutex<Void>(())

    init(label: String, logLevel: Logger.Level) {
        self.label = label
        self.logLevel = logLevel
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var fields: [String: Any] = [:]
        var merged = self.metadata
        for (key, value) in self.metadataProvider?.get() ?? [:] { merged[key] = value }
        for (key, value) in event.metadata ?? [:] { merged[key] = value }
        for (key, value) in merged { fields[key] = Self.json(value) }
        fields["time"] = Self.time(Date())
        fields["level"] = event.level.rawValue
        fields["logger"] = self.label
        fields["message"] = "\(event.message)"
        fields["source"] = event.source
        guard var line = try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys]) else { return }
        line.append(0x0A)
        Self.output.withLock { _ in FileHandle.standardError.write(line) }
    }

    static func json(_ value: Logger.Metadata.Value) -> Any {
        switch value {
        case .string(let text): text
        case .stringConvertible(let convertible): "\(convertible)"
        case .array(let values): values.map(Self.json)
        case .dictionary(let values): values.mapValues(Self.json)
        }
    }

    static func time(_ date: Date) -> String {
        date.formatted(
            .iso8601.year().month().day().time(includingFractionalSeconds: true).timeZone(separator: .omitted)
        )
    }
}
