public import Logging
internal import Synchronization

/// Keeps every log line (level, message and metadata, the logger's and the event's) for a test to inspect.
public final class RecordingLog: Sendable {
    /// One line.
    public struct Line: Sendable {
        public var level: Logger.Level
        public var message: String
        public var metadata: [String: String]
    }

    private let recorded = Mutex<[Line]>([])

    public init() {}

    /// A logger that records here, from `level` up.
    public func logger(level: Logger.Level = .info) -> Logger {
        Logger(label: "recording") { _ in Handler(log: self, logLevel: level) }
    }

    /// Every line so far.
    public var lines: [Line] { self.recorded.withLock { $0 } }

    /// How many lines of `level` so far.
    public func count(_ level: Logger.Level) -> Int { self.lines.filter { $0.level == level }.count }

    struct Handler: LogHandler {
        let log: RecordingLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level

        init(log: RecordingLog, logLevel: Logger.Level) {
            self.log = log
            self.logLevel = logLevel
        }

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { self.metadata[key] }
            set { self.metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            var all = self.metadata
            for (key, value) in event.metadata ?? [:] { all[key] = value }
            let line = Line(
                level: event.level,
                message: "\(event.message)",
                metadata: all.mapValues { "\($0)" }
            )
            self.log.recorded.withLock { $0.append(line) }
        }
    }
}
