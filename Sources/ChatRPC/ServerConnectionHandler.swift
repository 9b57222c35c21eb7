internal import ChatProto
internal import ChatTLS
internal import ChatWire
internal import DequeModule
internal import Logging
internal import NIOCore
internal import Synchronization

/// One server connection, above TLS and the frame decoder: carries out what `ServerConnectionStateMachine` decides,
/// runs each call as a task, and sends each stream's output within its flow-control window.
final class ServerConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = Frame
    typealias OutboundOut = ByteBuffer

    /// One call on the connection.
    private final class Call {
        let stream: StreamID
        var deframer: MessageDeframer
        var method: MethodHandler?
        var header = CallHeader()
        var request: ByteBuffer?
        var task: Task<Void, Never>?
        var outbound = Deque<ByteBuffer>()
        var outboundBytes = 0
        var trailers: ByteBuffer?
        var waiters: [EventLoopPromise<Void>] = []
        /// Our side is over: TRAILERS or CANCEL went out (or is queued, for trailers).
        var finished = false
        var trailersSent = false
        var handlerRunning = false
        var cancelledByDrain = false
        var deadlineTimer: Scheduled<Void>?

        init(stream: StreamID, maxMessageSize: Int) {
            self.stream = stream
            self.deframer = MessageDeframer(maxMessageSize: maxMessageSize)
        }
    }

    private var machine: ServerConnectionStateMachine
    /// Where this connection's calls run: its event loop (made on the first call).
    private var taskExecutor: EventLoopTaskExecutor?
    private let router: Router
    private let interceptors: [any ServerInterceptor]
    private let logger: Logger
    private let callIDs: CallIDGenerator
    private let drainGrace: TimeAmount
    private let prefaceTimeout: TimeAmount
    private var settingsReceived = false
    private var calls: [StreamID: Call] = [:]
    private var context: ChannelHandlerContext?
    private var peerIdentity: String?
    private var flushScheduled = false
    private var prefaceTimer: Scheduled<Void>?
    private var keepaliveTimer: Scheduled<Void>?
    private var loopBound: NIOLoopBound<ServerConnectionHandler>?

    init(
        configuration: ServerConnectionStateMachine.Configuration,
        router: Router,
        interceptors: [any ServerInterceptor],
        logger: Logger,
        callIDs: CallIDGenerator,
        drainGrace: TimeAmount,
        prefaceTimeout: TimeAmount
    ) {
        self.machine = ServerConnectionStateMachine(configuration: configuration, now: .now())
        self.router = router
        self.interceptors = interceptors
        self.logger = logger
        self.callIDs = callIDs
        self.drainGrace = drainGrace
        self.prefaceTimeout = prefaceTimeout
    }

    // MARK: - Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let loop = context.eventLoop.assumeIsolated()
        self.prefaceTimer = loop.scheduleTask(in: self.prefaceTimeout) {
            if !self.settingsReceived {
                self.execute(self.machine.connectionError(WireError(.protocolError, "no preface and SETTINGS in time")))
            }
        }
        self.scheduleKeepalive()
    }

    private func scheduleKeepalive() {
        guard let context = self.context else { return }
        let quarter = TimeAmount.nanoseconds(self.machine.configuration.keepaliveInterval.nanoseconds / 4)
        self.keepaliveTimer = context.eventLoop.assumeIsolated().scheduleTask(in: quarter) {
            self.execute(self.machine.keepaliveTimerFired(now: .now()))
            if !self.machine.isClosed { self.scheduleKeepalive() }
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.tearDown()
        self.context = nil
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted(_, let identity)? = event as? TLSEvent {
            self.peerIdentity = identity
            for frame in self.machine.initialFrames { self.write(frame) }
            context.flush()
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = self.unwrapInboundIn(data)
        if case .settings = frame {
            self.settingsReceived = true
            self.prefaceTimer?.cancel()
        }
        self.execute(self.machine.frameReceived(frame, now: .now()))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? WireError {
            self.logger.debug("protocol error from peer", metadata: ["error": "\(error)"])
            self.execute(self.machine.connectionError(error))
        } else {
            self.logger.debug("connection error", metadata: ["error": "\(error)"])
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.tearDown()
        context.fireChannelInactive()
    }

    private func tearDown() {
        self.prefaceTimer?.cancel()
        self.keepaliveTimer?.cancel()
        for call in self.calls.values {
            call.task?.cancel()
            call.deadlineTimer?.cancel()
            call.finished = true
            self.failWaiters(call)
        }
    }

    // MARK: - Actions

    private func execute(_ action: ServerConnectionStateMachine.Action) {
        switch action {
        case .none:
            break
        case .send(let frames):
            for frame in frames { self.write(frame) }
            self.scheduleFlush()
        case .openStream(let stream, let header):
            self.openStream(stream, header: header)
        case .rejectStream(let stream, let reason):
            let call = Call(stream: stream, maxMessageSize: 0)
            self.calls[stream] = call
            self.finish(call, status: RPCError(.resourceExhausted, reason, notProcessed: true).callStatus)
        case .streamData(let stream, let payload, let endStream, let send):
            for frame in send { self.write(frame) }
            self.streamData(stream, payload, endStream: endStream)
        case .cancelStream(let stream, let send):
            for frame in send { self.write(frame) }
            self.scheduleFlush()
            if let call = self.calls[stream] {
                call.finished = true
                call.outbound.removeAll()
                call.outboundBytes = 0
                call.task?.cancel()
                call.deadlineTimer?.cancel()
                self.failWaiters(call)
                self.closeIfDone(call)
            }
        case .windowOpened(let stream):
            if let stream {
                if let call = self.calls[stream] { self.pump(call) }
            } else {
                for call in self.calls.values { self.pump(call) }
            }
        case .closeConnection(let frames):
            guard let context = self.context else { return }
            for frame in frames { self.write(frame) }
            context.flush()
            context.close(promise: nil)
        }
    }

    private func openStream(_ stream: StreamID, header bytes: ByteBuffer) {
        let call = Call(stream: stream, maxMessageSize: self.machine.configuration.local.maxMessageSize)
        self.calls[stream] = call
        do {
            call.header = try bytes.withUnsafeReadableBytes { try CallHeader(serializedBytes: $0) }
        } catch {
            self.finish(
                call,
                status: RPCError(.invalidArgument, "call header: \(error)", notProcessed: true).callStatus
            )
            return
        }
        guard let method = self.router.handlers[call.header.method] else {
            let status = RPCError(.unimplemented, "unknown method \(call.header.method)", notProcessed: true)
            self.finish(call, status: status.callStatus)
            return
        }
        if let violation = Self.metadataViolation(call.header) {
            self.finish(call, status: RPCError.invalidArgument(field: violation.0, violation.1).callStatus)
            return
        }
        call.method = method
        if call.header.timeoutUs > 0 {
            let timeout = TimeAmount.microseconds(Int64(min(call.header.timeoutUs, 3_600_000_000)))
            call.deadlineTimer = self.context?.eventLoop.assumeIsolated().scheduleTask(in: timeout) {
                self.deadlineExceeded(call)
            }
        }
    }

    private static func metadataViolation(_ header: CallHeader) -> (String, String)? {
        if header.metadata.count > 32 { return ("metadata", "at most 32 entries") }
        for entry in header.metadata {
            let key = entry.key.utf8
            guard !key.isEmpty, key.count <= 64,
                key.allSatisfy({
                    (0x61...0x7A).contains($0) || (0x30...0x39).contains($0) || $0 == 0x5F || $0 == 0x2E || $0 == 0x2D
                })
            else {
                return ("metadata.key", "1 to 64 characters of [0-9a-z_.-]")
            }
            if entry.key.hasPrefix("chat-") { return ("metadata.key", "keys starting with chat- are reserved") }
            if entry.value.count > 4096 { return ("metadata.value", "at most 4096 bytes") }
        }
        return nil
    }

    private func streamData(_ stream: StreamID, _ payload: ByteBuffer, endStream: Bool) {
        guard let call = self.calls[stream], !call.finished else { return }
        let length = payload.readableBytes
        call.deframer.append(payload)
        do {
            while let message = try call.deframer.nextMessage() {
                guard call.request == nil else {
                    self.endWithError(call, RPCError(.invalidArgument, "more than one request message"))
                    return
                }
                // A copy of its own: the message may be a slice of a whole TLS read, which a long-lived call would
                // otherwise keep alive for its lifetime (about 14 KB per idle stream before this copy).
                call.request = ByteBuffer(buffer: message)
            }
        } catch {
            let code: StatusCode = error.message.contains("MAX_MESSAGE_SIZE") ? .resourceExhausted : .internal
            self.endWithError(call, RPCError(code, error.message, notProcessed: true))
            return
        }
        self.execute(self.machine.requestConsumed(stream, bytes: length))
        guard endStream else { return }
        guard let request = call.request, call.deframer.isEmpty else {
            self.endWithError(call, RPCError(.invalidArgument, "the request message is missing or incomplete"))
            return
        }
        self.start(call, request: request)
    }

    private func endWithError(_ call: Call, _ error: RPCError) {
        self.machine.streamEndedLocally(call.stream)
        self.finish(call, status: error.callStatus)
    }

    // MARK: - Running a call

    private func start(_ call: Call, request: ByteBuffer) {
        guard let method = call.method, let loopBound = self.loopBound, let eventLoop = self.context?.eventLoop else {
            return
        }
        let callID = self.callIDs.next()
        let deadline =
            call.header.timeoutUs > 0
            ? ContinuousClock.now.advanced(by: .microseconds(Int64(min(call.header.timeoutUs, 3_600_000_000))))
            : nil
        let context = CallContext(
            method: method.info.path,
            callID: callID,
            header: call.header,
            peerIdentity: self.peerIdentity,
            deadline: deadline,
            logger: self.logger
        )
        let sink = StreamSink(handler: loopBound, eventLoop: eventLoop, stream: call.stream)
        let interceptors = self.interceptors
        let stream = call.stream
        call.handlerRunning = true
        let run = method.run
        let report: @Sendable (CallStatus) -> Void = { status in
            eventLoop.execute {
                loopBound.value.handlerFinished(stream, status: status)
            }
        }
        let executor = self.taskExecutor ?? EventLoopTaskExecutor(eventLoop)
        self.taskExecutor = executor
        call.task = Task(executorPreference: executor) {
            report(
                await ServerConnectionHandler.runCall(
                    run,
                    request: request,
                    context: context,
                    sink: sink,
                    interceptors: interceptors
                )
            )
        }
    }

    private static func runCall(
        _ run: @escaping @Sendable (ByteBuffer, CallContext, any ResponseSink) async throws -> Void,
        request: ByteBuffer,
        context: CallContext,
        sink: StreamSink,
        interceptors: [any ServerInterceptor]
    ) async -> CallStatus {
        do {
            try await Self.intercept(interceptors, context) { context in
                try await run(request, context, sink)
            }
            return CallStatus(code: .ok)
        } catch {
            return Self.status(for: error, callID: context.callID, logger: context.logger)
        }
    }

    private static func intercept(
        _ interceptors: [any ServerInterceptor],
        _ context: CallContext,
        _ body: @escaping @Sendable (CallContext) async throws -> Void
    ) async throws {
        guard let first = interceptors.first else {
            try await body(context)
            return
        }
        let rest = Array(interceptors.dropFirst())
        try await first.intercept(context) { context in
            try await Self.intercept(rest, context, body)
        }
    }

    private static func status(for error: any Error, callID: UInt64, logger: Logger) -> CallStatus {
        if let convertible = error as? any ChatStatusConvertible {
            let status = convertible.rpcError
            if status.code == .internal {
                // The caller sees a generic message; the detail (e.g. the database's) goes to the log only.
                logger.error("handler failed", metadata: ["error": "\(String(reflecting: error))"])
            }
            return status.callStatus
        }
        if error is CancellationError {
            return RPCError(.cancelled, "the call was cancelled").callStatus
        }
        logger.error("handler failed", metadata: ["error": "\(String(reflecting: error))"])
        return RPCError(.internal, "internal error (call \(callID))").callStatus
    }

    private func handlerFinished(_ stream: StreamID, status: CallStatus) {
        guard let call = self.calls[stream] else { return }
        call.handlerRunning = false
        call.deadlineTimer?.cancel()
        var status = status
        if call.cancelledByDrain && status.code != .ok && status.code != .unavailable {
            status = RPCError(.unavailable, "the server is shutting down: resume on another connection").callStatus
        }
        if call.finished {
            self.closeIfDone(call)
        } else {
            self.finish(call, status: status)
        }
    }

    private func deadlineExceeded(_ call: Call) {
        guard !call.finished else { return }
        call.outbound.removeAll()
        call.outboundBytes = 0
        self.machine.streamEndedLocally(call.stream)
        self.finish(call, status: RPCError(.deadlineExceeded, "the deadline passed").callStatus)
        call.task?.cancel()
    }

    /// Queues TRAILERS after the stream's pending data; the stream closes when both sides are done.
    private func finish(_ call: Call, status: CallStatus) {
        guard !call.finished else { return }
        call.finished = true
        var payload = ByteBuffer()
        do {
            let packed = try status.packed()
            payload.writeWithUnsafeMutableBytes(minimumWritableBytes: packed.size) { packed.write(to: $0) }
        } catch {
            payload = ByteBuffer()
        }
        call.trailers = payload
        self.failWaiters(call)
        self.pump(call)
    }

    private func closeIfDone(_ call: Call) {
        guard call.finished, !call.handlerRunning, call.trailers == nil || call.trailersSent else { return }
        guard self.calls.removeValue(forKey: call.stream) != nil else { return }
        self.execute(self.machine.streamClosed(call.stream))
    }

    // MARK: - Output

    /// Appends response envelopes from a handler; succeeds when there is room for more.
    fileprivate func enqueue(
        _ stream: StreamID,
        _ envelopes: ByteBuffer,
        stallLimit: Duration?,
        eventLoop: any EventLoop
    ) -> EventLoopFuture<Void> {
        guard self.context != nil, let call = self.calls[stream], !call.finished else {
            return eventLoop.makeFailedFuture(CancellationError())
        }
        call.outboundBytes += envelopes.readableBytes
        call.outbound.append(envelopes)
        self.pump(call)
        // At most one window plus one message is buffered per stream.
        if call.outboundBytes <= self.machine.peer.initialWindowSize {
            return eventLoop.makeSucceededVoidFuture()
        }
        let promise = eventLoop.makePromise(of: Void.self)
        call.waiters.append(promise)
        if let stallLimit {
            // The envelopes are queued; what fails after the limit is the wait for room for more.
            let timer = eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(stallLimit)) {
                let before = call.waiters.count
                call.waiters.removeAll { $0.futureResult === promise.futureResult }
                if call.waiters.count < before { promise.fail(ResponseStalled()) }
            }
            promise.futureResult.whenComplete { _ in timer.cancel() }
        }
        return promise.futureResult
    }

    private func pump(_ call: Call) {
        var wrote = false
        let maxFrame = self.machine.peer.maxFrameSize
        while var chunk = call.outbound.first {
            let capacity = self.machine.sendCapacity(call.stream)
            guard capacity > 0 else { break }
            let length = min(capacity, chunk.readableBytes, maxFrame)
            let slice = chunk.readSlice(length: length)!
            self.write(.data(stream: call.stream, payload: slice, endStream: false))
            self.machine.dataSent(call.stream, bytes: length)
            call.outboundBytes -= length
            wrote = true
            if chunk.readableBytes == 0 {
                call.outbound.removeFirst()
            } else {
                call.outbound[0] = chunk
            }
        }
        if call.outbound.isEmpty, let trailers = call.trailers, !call.trailersSent {
            self.write(.trailers(stream: call.stream, payload: trailers))
            call.trailersSent = true
            wrote = true
        }
        if call.outboundBytes <= self.machine.peer.initialWindowSize, !call.waiters.isEmpty {
            let waiters = call.waiters
            call.waiters = []
            for waiter in waiters { waiter.succeed() }
        }
        if wrote { self.scheduleFlush() }
        if call.trailersSent { self.closeIfDone(call) }
    }

    private func failWaiters(_ call: Call) {
        let waiters = call.waiters
        call.waiters = []
        for waiter in waiters { waiter.fail(CancellationError()) }
    }

    private func write(_ frame: Frame) {
        guard let context = self.context else { return }
        var buffer = context.channel.allocator.buffer(capacity: 64)
        buffer.writeFrame(frame)
        context.write(self.wrapOutboundOut(buffer), promise: nil)
    }

    private func scheduleFlush() {
        guard !self.flushScheduled, let context = self.context else { return }
        self.flushScheduled = true
        context.eventLoop.assumeIsolated().execute {
            self.flushScheduled = false
            self.context?.flush()
        }
    }

    // MARK: - Drain

    /// Graceful shutdown of this connection: GOAWAY, let unary calls finish, end server streams with UNAVAILABLE.
    func drain() {
        self.execute(self.machine.drainRequested())
        for call in self.calls.values where call.method?.info.kind == .serverStreaming && !call.finished {
            call.cancelledByDrain = true
            call.task?.cancel()
        }
        self.context?.eventLoop.assumeIsolated().scheduleTask(in: self.drainGrace) {
            guard let context = self.context else { return }
            for call in self.calls.values where !call.finished {
                call.cancelledByDrain = true
                self.finish(call, status: RPCError(.unavailable, "the server is shutting down").callStatus)
                call.task?.cancel()
            }
            context.flush()
            context.close(promise: nil)
        }
    }
}

/// Where a call's handler sends its responses: hops to the connection's event loop and waits for room.
struct StreamSink: ResponseSink {
    let handler: NIOLoopBound<ServerConnectionHandler>
    let eventLoop: any EventLoop
    let stream: StreamID

    func send(_ envelopes: ByteBuffer, stallLimit: Duration?) async throws {
        try Task.checkCancellation()
        let handler = self.handler
        let stream = self.stream
        let eventLoop = self.eventLoop
        try await eventLoop.flatSubmit {
            handler.value.enqueue(stream, envelopes, stallLimit: stallLimit, eventLoop: eventLoop)
        }.get()
    }
}

/// Call ids, unique per process.
final class CallIDGenerator: Sendable {
    private let counter = Atomic<UInt64>(0)

    func next() -> UInt64 {
        self.counter.add(1, ordering: .relaxed).newValue
    }
}

/// Runs a call's task on its connection's event loop (task executor preference): the handler's code, and every
/// nonisolated async function it awaits, continue there instead of hopping to the cooperative pool and back for
/// each response. Handlers never block: the database runs on the pool's own threads, and a call's CPU work is what
/// NIO handlers do on their loop anyway. Measured (release, chat-bench, A/B in one session): unary 1.23-1.32x at 1
/// in flight, 1.35-1.73x at 16, 1.25-1.38x at 64; list 1.32x; durable send at 8 in flight 1.13-1.34x.
final class EventLoopTaskExecutor: TaskExecutor {
    let eventLoop: any EventLoop

    init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = self.asUnownedTaskExecutor()
        self.eventLoop.execute { job.runSynchronously(on: executor) }
    }
}
