internal import ChatProto
internal import ChatRPC
internal import ChatTLS
internal import ChatWire
internal import DequeModule
internal import NIOCore
internal import Synchronization

/// Whether a connection takes new calls, readable from any thread.
final class ConnectionUsability: Sendable {
    private let usable = Atomic<Bool>(true)

    var isUsable: Bool { self.usable.load(ordering: .acquiring) }

    func markUnusable() {
        self.usable.store(false, ordering: .releasing)
    }
}

/// The client side of one chat/1 connection, above TLS and the frame decoder. Opens a stream per call, sends the
/// request within the flow-control windows, delivers response messages to the call's stream, and returns credit
/// only as the caller consumes messages, so a slow reader holds back only its own stream.
final class ClientConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = Frame
    typealias OutboundOut = ByteBuffer

    /// The receive window the client advertises per stream; bounds what a stream buffers.
    static let settings = ChatSettings(
        maxConcurrentStreams: 0,
        initialWindowSize: 256 * 1024,
        maxFrameSize: 16_384,
        maxMessageSize: 4 * 1024 * 1024,
        maxHeaderSize: 8 * 1024,
        keepaliveMinIntervalMilliseconds: 10_000,
        connectionWindow: 16 << 20
    )

    private final class Stream {
        let id: StreamID
        let token: UInt64
        var deframer = MessageDeframer(maxMessageSize: ClientConnectionHandler.settings.maxMessageSize)
        let continuation: AsyncThrowingStream<ByteBuffer, any Error>.Continuation
        var sendWindow: Int
        var pendingRequest: ByteBuffer?
        var unreturnedCredit = 0
        /// Credit already returned for the bytes of the partial message in the deframer.
        var prepaid = 0

        init(
            id: StreamID,
            token: UInt64,
            continuation: AsyncThrowingStream<ByteBuffer, any Error>.Continuation,
            sendWindow: Int
        ) {
            self.id = id
            self.token = token
            self.continuation = continuation
            self.sendWindow = sendWindow
        }
    }

    /// A call waiting for a stream slot (the server's MAX_CONCURRENT_STREAMS).
    private struct QueuedCall {
        let token: UInt64
        let header: CallHeader
        let request: ByteBuffer
        let continuation: AsyncThrowingStream<ByteBuffer, any Error>.Continuation
    }

    private var queued = Deque<QueuedCall>()
    private var tokens: [UInt64: StreamID] = [:]
    private var deadlines: [UInt64: Scheduled<Void>] = [:]
    private var context: ChannelHandlerContext?
    private var peer = ChatSettings.defaults
    private var streams: [StreamID: Stream] = [:]
    private var nextStreamID: StreamID = 1
    private var connectionSendWindow = ChatSettings.defaults.connectionWindow
    private var connectionUnreturned = 0
    private var goAwayLastStream: StreamID?
    private var closed = false
    private var lastError: (any Error)?
    private let ready: EventLoopPromise<Void>
    /// Read by callers on any thread, so that checking a connection before a call needs no hop to its event loop.
    private let usable: ConnectionUsability

    /// True once the connection will take no new calls.
    private(set) var isGoingAway = false {
        didSet {
            if self.isGoingAway { self.usable.markUnusable() }
        }
    }

    init(ready: EventLoopPromise<Void>, usable: ConnectionUsability) {
        self.ready = ready
        self.usable = usable
    }

    // MARK: - Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        // The context refers to the handler: keeping it would keep both (and the pipeline) alive forever.
        self.context = nil
        // A connection that never became active (connect failed) ends here: the caller waiting for it is told.
        self.ready.fail(RPCError(.unavailable, "the connection closed before it was ready"))
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is TLSEvent {
            var buffer = context.channel.allocator.buffer(capacity: 128)
            buffer.writeBytes(WireConstants.preface)
            buffer.writeFrame(.settings(Self.settings.entries))
            context.writeAndFlush(self.wrapOutboundOut(buffer), promise: nil)
            self.ready.succeed()
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .settings(let entries):
            do {
                self.peer = try ChatSettings.received(entries)
            } catch {
                self.fail(error)
                return
            }
            self.connectionSendWindow = self.peer.connectionWindow
            self.write(.settingsAck)
        case .settingsAck:
            break
        case .data(let id, let payload, _):
            self.dataReceived(id, payload)
        case .trailers(let id, let payload):
            guard let stream = self.streams[id] else { return }
            let status =
                (try? payload.withUnsafeReadableBytes { try CallStatus(serializedBytes: $0) })
                ?? CallStatus(code: .internal, message: "the server sent an unreadable status")
            if status.code == .ok {
                stream.continuation.finish()
            } else {
                stream.continuation.finish(throwing: RPCError(status: status))
            }
            self.streamEnded(stream)
        case .cancel(let id, let code):
            guard let stream = self.streams[id] else { return }
            let error: RPCError
            switch code {
            case .refusedStream:
                error = RPCError(.unavailable, "the server refused the call; it was not processed", notProcessed: true)
            case .cancel:
                // The server gave up on a stream whose responses were not read for two stall limits.
                error = RPCError(.resourceExhausted, "the server ended the call: its responses were not read in time")
            default:
                error = RPCError(.internal, "the server reset the call (\(code))")
            }
            stream.continuation.finish(throwing: error)
            self.streamEnded(stream)
        case .windowUpdate(let id, let increment):
            if id == 0 {
                self.connectionSendWindow += Int(increment)
                for stream in self.streams.values { self.pumpRequest(stream) }
            } else if let stream = self.streams[id] {
                stream.sendWindow += Int(increment)
                self.pumpRequest(stream)
            }
        case .ping(let payload, let ack):
            if !ack { self.write(.ping(payload: payload, ack: true)) }
        case .goAway(let lastStream, _, _):
            self.isGoingAway = true
            self.goAwayLastStream = lastStream
            for (id, stream) in self.streams where id > lastStream {
                stream.continuation.finish(
                    throwing: RPCError(
                        .unavailable,
                        "the server is going away; the call was not processed",
                        notProcessed: true
                    )
                )
                self.streamEnded(stream)
            }
            self.streamEnded(nil)
        case .headers, .unknown:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.lastError = error
        self.fail(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.closed = true
        self.isGoingAway = true
        self.usable.markUnusable()
        self.ready.fail(
            RPCError(
                .unavailable,
                "the connection closed before it was ready: \(self.lastError.map { "\($0)" } ?? "closed")"
            )
        )
        let streams = self.streams
        self.streams = [:]
        for stream in streams.values {
            stream.continuation.finish(throwing: RPCError(.unavailable, "the connection closed before the call ended"))
        }
        for call in self.queued {
            call.continuation.finish(
                throwing: RPCError(.unavailable, "the connection closed; not processed", notProcessed: true)
            )
        }
        self.queued.removeAll()
        for timer in self.deadlines.values { timer.cancel() }
        self.deadlines.removeAll()
        context.fireChannelInactive()
    }

    private func fail(_ error: any Error) {
        guard let context = self.context else { return }
        if let error = error as? WireError {
            self.write(.goAway(lastStream: 0, code: error.code, debug: error.message))
        }
        context.flush()
        context.close(promise: nil)
    }

    private func dataReceived(_ id: StreamID, _ payload: ByteBuffer) {
        let length = payload.readableBytes
        self.connectionUnreturned += length
        if self.connectionUnreturned >= Self.settings.connectionWindow / 2 {
            self.write(.windowUpdate(stream: 0, increment: UInt32(self.connectionUnreturned)))
            self.connectionUnreturned = 0
        }
        guard let stream = self.streams[id] else { return }
        stream.deframer.append(payload)
        do {
            while let message = try stream.deframer.nextMessage() {
                // Part of this message may have been credited while it was incomplete; the consumer returns the
                // rest when it reads the message (see `consumed`).
                let size = message.readableBytes + WireConstants.envelopePrefixSize
                let prepaid = min(stream.prepaid, size)
                stream.prepaid -= prepaid
                stream.unreturnedCredit -= prepaid
                stream.continuation.yield(message)
            }
        } catch {
            self.cancelCall(stream.token, error: RPCError(.resourceExhausted, error.message))
            return
        }
        // A message larger than the window could never complete if its bytes waited for the consumer: credit such a
        // partial message as it arrives (it is bounded by MAX_MESSAGE_SIZE). A message that fits in the window is
        // not prepaid: its bytes are credited when the consumer reads it, so a consumer that stops reading stops
        // the sender after one window.
        let partial = stream.deframer.bufferedBytes
        if let size = stream.deframer.pendingEnvelopeSize, size > Self.settings.initialWindowSize,
            partial > stream.prepaid
        {
            let credit = partial - stream.prepaid
            stream.prepaid = partial
            self.write(.windowUpdate(stream: id, increment: UInt32(credit)))
        }
    }

    // MARK: - Calls

    /// Starts a call: opens a stream at once, or when the server's MAX_CONCURRENT_STREAMS allows.
    func startCall(
        token: UInt64,
        header: CallHeader,
        request: ByteBuffer,
        continuation: AsyncThrowingStream<ByteBuffer, any Error>.Continuation,
        timeout: TimeAmount?
    ) {
        guard !self.isGoingAway, !self.closed, self.nextStreamID <= WireConstants.maxStreamID else {
            continuation.finish(
                throwing: RPCError(.unavailable, "the connection is closing; not processed", notProcessed: true)
            )
            return
        }
        if let timeout, let context = self.context {
            self.deadlines[token] = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) {
                self.cancelCall(token, error: RPCError(.deadlineExceeded, "the deadline passed"))
            }
        }
        let call = QueuedCall(token: token, header: header, request: request, continuation: continuation)
        if self.streams.count >= self.peer.maxConcurrentStreams {
            self.queued.append(call)
        } else {
            self.open(call)
        }
    }

    private func open(_ call: QueuedCall) {
        let id = self.nextStreamID
        self.nextStreamID += 2
        if self.nextStreamID > WireConstants.maxStreamID { self.isGoingAway = true }
        var headerBytes = ByteBuffer()
        do {
            let packed = try call.header.packed()
            headerBytes.writeWithUnsafeMutableBytes(minimumWritableBytes: packed.size) { packed.write(to: $0) }
        } catch {
            self.deadlines.removeValue(forKey: call.token)?.cancel()
            call.continuation.finish(throwing: RPCError(.invalidArgument, "call header: \(error)"))
            return
        }
        let stream = Stream(
            id: id,
            token: call.token,
            continuation: call.continuation,
            sendWindow: self.peer.initialWindowSize
        )
        self.streams[id] = stream
        self.tokens[call.token] = id
        self.write(.headers(stream: id, payload: headerBytes))
        stream.pendingRequest = call.request
        self.pumpRequest(stream)
    }

    /// A stream ended: forget it, and start a queued call in its slot.
    private func streamEnded(_ stream: Stream?) {
        if let stream {
            self.streams.removeValue(forKey: stream.id)
            self.tokens.removeValue(forKey: stream.token)
            self.deadlines.removeValue(forKey: stream.token)?.cancel()
        }
        while self.streams.count < self.peer.maxConcurrentStreams, !self.isGoingAway, let next = self.queued.popFirst()
        {
            self.open(next)
        }
        if self.isGoingAway {
            for call in self.queued {
                self.deadlines.removeValue(forKey: call.token)?.cancel()
                call.continuation.finish(
                    throwing: RPCError(.unavailable, "the connection is closing; not processed", notProcessed: true)
                )
            }
            self.queued.removeAll()
        }
        self.closeIfIdle()
    }

    /// Ends a call from the client side, queued or open: CANCEL to the server, `error` to the caller.
    func cancelCall(_ token: UInt64, error: RPCError) {
        if let index = self.queued.firstIndex(where: { $0.token == token }) {
            let call = self.queued.remove(at: index)
            self.deadlines.removeValue(forKey: token)?.cancel()
            call.continuation.finish(throwing: error)
            return
        }
        guard let id = self.tokens[token], let stream = self.streams[id] else { return }
        self.write(.cancel(stream: id, code: .cancel))
        self.context?.flush()
        stream.continuation.finish(throwing: error)
        self.streamEnded(stream)
    }

    private func pumpRequest(_ stream: Stream) {
        guard var request = stream.pendingRequest else { return }
        while true {
            let capacity = min(stream.sendWindow, self.connectionSendWindow, self.peer.maxFrameSize)
            let length = min(capacity, request.readableBytes)
            let last = length == request.readableBytes
            guard length > 0 || last else { break }
            let slice = request.readSlice(length: length)!
            stream.sendWindow -= length
            self.connectionSendWindow -= length
            self.write(.data(stream: stream.id, payload: slice, endStream: last))
            if last {
                stream.pendingRequest = nil
                self.context?.flush()
                return
            }
        }
        stream.pendingRequest = request
        self.context?.flush()
    }

    /// The caller consumed `bytes` of a call's messages: return the credit in batches.
    func consumed(_ token: UInt64, bytes: Int) {
        guard let id = self.tokens[token], let stream = self.streams[id] else { return }
        stream.unreturnedCredit += bytes
        if stream.unreturnedCredit >= Self.settings.initialWindowSize / 4 {
            self.write(.windowUpdate(stream: id, increment: UInt32(stream.unreturnedCredit)))
            stream.unreturnedCredit = 0
            self.context?.flush()
        }
    }

    /// Closes the connection: calls still open are cancelled (CANCEL to the server, CANCELLED to their callers).
    func closeNow() {
        self.isGoingAway = true
        for token in Array(self.tokens.keys) + self.queued.map(\.token) {
            self.cancelCall(token, error: RPCError(.cancelled, "the client closed the connection"))
        }
        self.closeIfIdle()
    }

    private func closeIfIdle() {
        guard self.isGoingAway, self.streams.isEmpty, !self.closed, let context = self.context else { return }
        self.closed = true
        context.close(promise: nil)
    }

    private func write(_ frame: Frame) {
        guard let context = self.context else { return }
        var buffer = context.channel.allocator.buffer(capacity: 64)
        buffer.writeFrame(frame)
        context.write(self.wrapOutboundOut(buffer), promise: nil)
    }
}
