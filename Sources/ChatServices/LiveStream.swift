public import ChatAuth
internal import ChatDomain
public import ChatProto
public import ChatRPC
public import ChatStore
internal import Foundation

/// What the three streams share: sending with the stall limit, heartbeats, the token's expiry, riding out a
/// database outage, and the status a stream ends with.
struct LiveStream<Response: ProtoMessage> {
    let writer: ResponseWriter<Response>
    let configuration: LiveService.Configuration
    let expiry: ContinuousClock.Instant?
    var lastSend = ContinuousClock.now
    /// Where delivery latency goes, and which stream this is; nil: not measured.
    let metrics: LiveMetrics?
    let kind: LiveMetrics.Stream
    /// When the stream opened (wall clock, microseconds): events from before are replay, not live delivery.
    let openedAtMicros = LiveMetrics.nowMicros

    struct Expired: Error {}

    init(
        writer: ResponseWriter<Response>,
        principal: Principal,
        configuration: LiveService.Configuration,
        kind: LiveMetrics.Stream,
        metrics: LiveMetrics?
    ) {
        self.writer = writer
        self.configuration = configuration
        self.kind = kind
        self.metrics = metrics
        self.expiry = principal.expiresAt.map { expiresAt in
            let remaining = Double(expiresAt) - Date().timeIntervalSince1970
            return ContinuousClock.now + .milliseconds(Int64(max(0, remaining) * 1000))
        }
    }

    mutating func send(_ response: Response) async throws {
        try await self.writer.write(response, stallLimit: self.configuration.stallLimit)
        self.lastSend = .now
    }

    /// Sends a page of events in one write and moves `position` to the last once they are queued (a stalled write
    /// says whether it queued them; a cancelled one has not).
    mutating func send<Position>(_ responses: [Response], advancing position: inout Position, to last: Position)
        async throws
    {
        do {
            try await self.writer.write(contentsOf: responses, stallLimit: self.configuration.stallLimit)
            self.lastSend = .now
        } catch let error as ResponseStalled {
            if error.queued { position = last }
            throw error
        }
        position = last
    }

    /// Records the delivery latency of events just written, by their transactions' times.
    func delivered(occurredAtMicros times: some Sequence<Int64>) {
        self.metrics?.delivered(self.kind, occurredAtMicros: times, openedAtMicros: self.openedAtMicros)
    }

    /// Waits until the hub wakes the stream; sends a heartbeat whenever the stream has been quiet for the interval.
    ///
    /// - Throws: `Expired` when the token expires, `CancellationError` when the call ends.
    @inline(never)
    mutating func waitForChange(
        _ subscription: LiveSubscription,
        heartbeat: () -> Response?
    ) async throws {
        while true {
            let now = ContinuousClock.now
            if let expiry = self.expiry, now >= expiry { throw Expired() }
            let heartbeatDue = self.lastSend + self.configuration.heartbeatInterval
            var until = heartbeatDue
            if let expiry = self.expiry { until = min(until, expiry) }
            let woken = await subscription.wait(timeout: max(.zero, until - now))
            try Task.checkCancellation()
            if woken { return }
            if let expiry = self.expiry, ContinuousClock.now >= expiry { throw Expired() }
            if ContinuousClock.now >= heartbeatDue { try await self.sendHeartbeat(heartbeat) }
        }
    }

    @inline(never)
    private mutating func sendHeartbeat(_ heartbeat: () -> Response?) async throws {
        if let beat = heartbeat() { try await self.send(beat) }
    }

    /// Runs a read, retrying while the database is unavailable (up to the outage limit).
    func read<Value>(_ body: () async throws -> Value) async throws -> Value {
        let giveUp = ContinuousClock.now + self.configuration.storageOutageLimit
        var backoff = Duration.milliseconds(50)
        while true {
            do {
                return try await body()
            } catch let error as StorageError where error.isRetryable && ContinuousClock.now < giveUp {
                try await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(1))
            }
        }
    }

    /// The status a stream ends with, carrying the position to resume from.
    func ended(by error: any Error, resume: ResumeInfo, _ position: String) -> any Error {
        let details = [StatusDetail(detail: .resumeInfo(resume))]
        switch error {
        case is CancellationError:
            return RPCError(
                .unavailable,
                "the stream was interrupted (the server is shutting down); resume from \(position)",
                details: details
            )
        case is ResponseStalled:
            return RPCError(
                .resourceExhausted,
                "the client read too slowly (no room for \(self.configuration.stallLimit)); resume from \(position)",
                details: details
            )
        case is Expired:
            return RPCError(
                .unauthenticated,
                "the token expired; open a new stream with a fresh token from \(position)",
                details: details
            )
        case let error as StorageError where error.isRetryable:
            return RPCError(.unavailable, "the database is unavailable; resume from \(position)", details: details)
        default:
            return error
        }
    }
}
