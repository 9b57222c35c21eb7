public import CoreMetrics
internal import Foundation

/// Live delivery's metrics:
/// - `chat_live_delivery_seconds` by `stream` (`watch_thread`, `watch_inbox`, `subscribe_events`): from an event's
///   transaction (PostgreSQL's clock: the transaction's timestamp) to its write to a stream that was open when it
///   happened; the replay of what came before a stream opened is not delivery latency and is not counted;
/// - `chat_live_notification_lag_seconds`: from another instance's `pg_notify` to this instance's receipt (the
///   sender's clock, in the notification);
/// - `chat_outbox_watermark_lag_seconds`: how long the commit watermark has stood still: the age of the oldest
///   transaction still running that holds an id, which every event committed after it waits for;
/// - `chat_outbox_backlog_events`: events readable but not yet read by the slowest open feed stream (WatchInbox,
///   SubscribeEvents) of each tenant on this instance, summed (at most `backlogCap` per tenant);
/// - `chat_live_instances`: the instances alive as this one hears them on the bus, itself included (each takes its
///   share of the global rate limits from it).
public final class LiveMetrics: Sendable {
    /// The metric names, defined once.
    public enum Name {
        public static let delivery = "chat_live_delivery_seconds"
        public static let notificationLag = "chat_live_notification_lag_seconds"
        public static let watermarkLag = "chat_outbox_watermark_lag_seconds"
        public static let backlog = "chat_outbox_backlog_events"
        public static let instances = "chat_live_instances"
    }

    /// The live streams, as the `stream` label names them.
    public enum Stream: String, Sendable, CaseIterable {
        case watchThread = "watch_thread"
        case watchInbox = "watch_inbox"
        case subscribeEvents = "subscribe_events"
    }

    /// The backlog counted per tenant at most: the count is a bounded query.
    public static let backlogCap = 100_000

    private let delivery: [Stream: CoreMetrics.Timer]
    let notificationLag: CoreMetrics.Timer
    let watermarkLag: Gauge
    let backlog: Gauge
    let instances: Gauge

    /// Metrics made by `factory`.
    public init(factory: any MetricsFactory) {
        var delivery: [Stream: CoreMetrics.Timer] = [:]
        for stream in Stream.allCases {
            delivery[stream] = CoreMetrics.Timer(
                label: Name.delivery,
                dimensions: [("stream", stream.rawValue)],
                preferredDisplayUnit: .seconds,
                factory: factory
            )
        }
        self.delivery = delivery
        self.notificationLag = CoreMetrics.Timer(
            label: Name.notificationLag,
            preferredDisplayUnit: .seconds,
            factory: factory
        )
        self.watermarkLag = Gauge(label: Name.watermarkLag, factory: factory)
        self.backlog = Gauge(label: Name.backlog, factory: factory)
        self.instances = Gauge(label: Name.instances, factory: factory)
    }

    /// Records the events a stream has just written, by their transactions' times (microseconds since 1970),
    /// those at or after `openedAtMicros` only.
    func delivered(_ stream: Stream, occurredAtMicros times: some Sequence<Int64>, openedAtMicros: Int64) {
        guard let timer = self.delivery[stream] else { return }
        let now = Self.nowMicros
        for time in times where time >= openedAtMicros {
            timer.recordNanoseconds(max(0, now - time) * 1000)
        }
    }

    /// Records a notification's lag from the sender's timestamp.
    func notificationReceived(sentAtMicros: Int64) {
        self.notificationLag.recordNanoseconds(max(0, Self.nowMicros - sentAtMicros) * 1000)
    }

    /// The wall clock, in microseconds since 1970 (what the database's timestamps are compared with).
    static var nowMicros: Int64 { Int64(Date().timeIntervalSince1970 * 1_000_000) }
}
