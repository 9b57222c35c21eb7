public import ChatProto
public import ChatRPCCore

/// A server stream that resumes by itself from the last position it delivered, so that its reader sees every event
/// once across drains, restarts, failovers to another instance and slow-reader endings (docs/PROTOCOL.md 11).
///
/// It is pulled like any `AsyncSequence`: the next stream is opened only when the reader asks for more, so a slow
/// reader still holds the server back. A stream is resumed after UNAVAILABLE (a drain, a restart, a lost
/// connection), after RESOURCE_EXHAUSTED with a `ResumeInfo` (the reader was too slow) or not processed, and after
/// UNAUTHENTICATED when the client's token may have been refreshed; failed attempts back off; after
/// `maxConsecutiveFailures` in a row the last error ends the sequence. Other errors (NOT_FOUND, PERMISSION_DENIED,
/// INVALID_ARGUMENT) end it at once. The reader sees one `head`: the heads of resumed streams are left out.
public struct ResumingStream<Request: ProtoMessage, Response: ProtoMessage>: AsyncSequence, Sendable {
    public typealias Element = Response

    /// What a resume strategy does with a response: advances the request's position past it, and says whether the
    /// reader gets it (`resumed`: the stream it came on is not the first).
    public typealias Advance = @Sendable (_ request: inout Request, _ response: Response, _ resumed: Bool) -> Bool
    /// Moves the request's position to a `ResumeInfo` the server sent with an ending.
    public typealias ResumeAt = @Sendable (_ request: inout Request, _ info: ResumeInfo) -> Void

    let client: ChatClient
    let method: ChatMethod<Request, Response>
    let request: Request
    let options: CallOptions
    let advance: Advance
    let resumeAt: ResumeAt
    /// Failed attempts in a row that end the sequence.
    public var maxConsecutiveFailures = 20

    /// A resuming stream of `method` from `request`'s position; `advance` and `resumeAt` keep the position.
    public init(
        client: ChatClient,
        method: ChatMethod<Request, Response>,
        request: Request,
        options: CallOptions = CallOptions(),
        advance: @escaping Advance,
        resumeAt: @escaping ResumeAt
    ) {
        self.client = client
        self.method = method
        self.request = request
        self.options = options
        self.advance = advance
        self.resumeAt = resumeAt
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let stream: ResumingStream
        var request: Request
        var current: ResponseStream<Response>.AsyncIterator?
        var failures = 0
        var resumed = false
        var finished = false

        public mutating func next() async throws -> Response? {
            while !self.finished {
                do {
                    if self.current == nil {
                        let opened = try await self.stream.client.serverStream(
                            self.stream.method,
                            self.request,
                            options: self.stream.options
                        )
                        self.current = opened.makeAsyncIterator()
                    }
                    guard let response = try await self.current!.next() else {
                        self.finished = true
                        return nil
                    }
                    self.failures = 0
                    if self.stream.advance(&self.request, response, self.resumed) { return response }
                } catch {
                    self.current = nil
                    try await self.failed(error)
                }
            }
            return nil
        }

        private mutating func failed(_ error: any Error) async throws {
            guard let status = error as? RPCError, Self.resumable(status) else {
                self.finished = true
                throw error
            }
            if let info = status.resumeInfo { self.stream.resumeAt(&self.request, info) }
            self.failures += 1
            guard self.failures <= self.stream.maxConsecutiveFailures else {
                self.finished = true
                throw error
            }
            self.resumed = true
            self.stream.client.countResume()
            // The first resume goes at once (another instance is likely up); later ones back off.
            if self.failures > 1 || status.retryAfter != nil {
                let backoff = self.stream.client.retryPolicy.backoff(retry: self.failures, random: .random(in: 0...1))
                try await Task.sleep(for: Swift.max(backoff, status.retryAfter ?? .zero))
            }
        }

        static func resumable(_ status: RPCError) -> Bool {
            switch status.code {
            case .unavailable: return true
            case .resourceExhausted: return status.resumeInfo != nil || status.notProcessed
            case .unauthenticated: return status.resumeInfo != nil
            default: return false
            }
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(stream: self, request: self.request)
    }
}

extension ChatClient {
    /// WatchThread, resumed by itself after the `seq` of the last event delivered (every event once; one head).
    public func watchThreadResuming(
        _ request: WatchThreadRequest,
        options: CallOptions = CallOptions()
    ) -> ResumingStream<WatchThreadRequest, WatchThreadResponse> {
        ResumingStream(
            client: self,
            method: ChatMethods.LiveService.watchThread,
            request: request,
            options: options,
            advance: { request, response, resumed in
                guard let event = response.event else { return true }
                switch event.event {
                case .head?: return !resumed
                case .message?, .thread?: request.afterSeq = event.seq
                default: break
                }
                return true
            },
            resumeAt: { request, info in request.afterSeq = info.afterSeq }
        )
    }

    /// WatchInbox, resumed by itself after the cursor of the last event delivered, heartbeats included.
    public func watchInboxResuming(
        _ request: WatchInboxRequest,
        options: CallOptions = CallOptions()
    ) -> ResumingStream<WatchInboxRequest, WatchInboxResponse> {
        ResumingStream(
            client: self,
            method: ChatMethods.LiveService.watchInbox,
            request: request,
            options: options,
            advance: { request, response, resumed in
                guard let event = response.event else { return true }
                if case .head(let head)? = event.event {
                    if !head.cursor.isEmpty { request.cursor = head.cursor }
                    return !resumed
                }
                if !event.cursor.isEmpty { request.cursor = event.cursor }
                return true
            },
            resumeAt: { request, info in if !info.cursor.isEmpty { request.cursor = info.cursor } }
        )
    }

    /// SubscribeEvents, resumed by itself after the cursor of the last event delivered.
    public func subscribeEventsResuming(
        _ request: SubscribeEventsRequest,
        options: CallOptions = CallOptions()
    ) -> ResumingStream<SubscribeEventsRequest, SubscribeEventsResponse> {
        ResumingStream(
            client: self,
            method: ChatMethods.EventService.subscribeEvents,
            request: request,
            options: options,
            advance: { request, response, _ in
                if let cursor = response.event?.cursor, !cursor.isEmpty { request.cursor = cursor }
                return true
            },
            resumeAt: { request, info in if !info.cursor.isEmpty { request.cursor = info.cursor } }
        )
    }
}
