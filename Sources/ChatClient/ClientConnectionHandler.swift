internal import ChatProto
internal import ChatRPCCore
internal import ChatTLS
internal import ChatWire
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

/// The client side of one chat/1 connection, above TLS and the frame decoder: carries out what
/// `ClientConnectionStateMachine` decides (streams, windows, credit, GOAWAY), delivers response messages to each
/// call's stream and ends the calls, and keeps the calls' deadline timers.
final class ClientConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = Frame
    typealias OutboundOut = ByteBuffer

    /// What the client advertises (ChatSettings.client).
    static let settings = ChatSettings.client

    private var machine = ClientConnectionStateMachine(local: ClientConnectionHandler.settings)
    private var continuations: [UInt64: AsyncThrowingStream<ByteBuffer, any Error>.Continuation] = [:]
    private var deadlines: [UInt64: Scheduled<Void>] = [:]
    private var context: ChannelHandlerContext?
    private var lastError: (any Error)?
    private let ready: EventLoopPromise<Void>
    /// Read by callers on any thread, so that checking a connection before a call needs no hop to its event loop.
    private let usable: ConnectionUsability

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
        self.execute(self.machine.frameReceived(self.unwrapInboundIn(data)), flush: false)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.lastError = error
        if let error = error as? WireError {
            self.execute(self.machine.connectionError(error))
        } else {
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.usable.markUnusable()
        self.ready.fail(
            RPCError(
                .unavailable,
                "the connection closed before it was ready: \(self.lastError.map { "\($0)" } ?? "closed")"
            )
        )
        self.execute(self.machine.connectionClosed())
        for timer in self.deadlines.values { timer.cancel() }
        self.deadlines.removeAll()
        context.fireChannelInactive()
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
        var headerBytes = ByteBuffer()
        do {
            let packed = try header.packed()
            headerBytes.writeWithUnsafeMutableBytes(minimumWritableBytes: packed.size) { packed.write(to: $0) }
        } catch {
            continuation.finish(throwing: RPCError(.invalidArgument, "call header: \(error)"))
            return
        }
        self.continuations[token] = continuation
        if let timeout, let context = self.context {
            self.deadlines[token] = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) {
                self.cancelCall(token, error: RPCError(.deadlineExceeded, "the deadline passed"))
            }
        }
        self.execute(self.machine.startCall(token, header: headerBytes, request: request))
    }

    /// Ends a call from the client side, queued or open: CANCEL to the server, `error` to the caller.
    func cancelCall(_ token: UInt64, error: RPCError) {
        guard let continuation = self.continuations.removeValue(forKey: token) else { return }
        self.deadlines.removeValue(forKey: token)?.cancel()
        continuation.finish(throwing: error)
        self.execute(self.machine.cancelCall(token))
    }

    /// The caller consumed `bytes` of a call's messages: return the credit in batches.
    func consumed(_ token: UInt64, bytes: Int) {
        self.execute(self.machine.consumed(token, bytes: bytes))
    }

    /// Closes the connection: calls still open are cancelled (CANCEL to the server, CANCELLED to their callers).
    func closeNow() {
        self.execute(self.machine.closeRequested())
    }

    // MARK: - Carrying out the machine's decisions

    private func execute(_ output: ClientConnectionStateMachine.Output, flush: Bool = true) {
        if self.machine.isGoingAway { self.usable.markUnusable() }
        if let context = self.context, !output.frames.isEmpty {
            for frame in output.frames {
                var buffer = context.channel.allocator.buffer(capacity: 64)
                buffer.writeFrame(frame)
                context.write(self.wrapOutboundOut(buffer), promise: nil)
            }
            if flush || output.close { context.flush() }
        }
        for (token, message) in output.messages {
            self.continuations[token]?.yield(message)
        }
        for (token, ending) in output.ended {
            self.deadlines.removeValue(forKey: token)?.cancel()
            guard let continuation = self.continuations.removeValue(forKey: token) else { continue }
            switch Self.error(for: ending) {
            case nil: continuation.finish()
            case let error?: continuation.finish(throwing: error)
            }
        }
        if output.close { self.context?.close(promise: nil) }
    }

    /// The caller's error for a call's ending (nil for OK).
    private static func error(for ending: ClientConnectionStateMachine.Ending) -> RPCError? {
        switch ending {
        case .status(let payload):
            let status =
                (try? payload.withUnsafeReadableBytes { try CallStatus(serializedBytes: $0) })
                ?? CallStatus(code: .internal, message: "the server sent an unreadable status")
            return status.code == .ok ? nil : RPCError(status: status)
        case .reset(.cancel):
            // The server gave up on a stream whose responses were not read for two stall limits.
            return RPCError(.resourceExhausted, "the server ended the call: its responses were not read in time")
        case .reset(let code):
            return RPCError(.internal, "the server reset the call (\(code))")
        case .notProcessed(let reason):
            return RPCError(.unavailable, reason, notProcessed: true)
        case .interrupted(let reason):
            return RPCError(.unavailable, reason)
        case .tooLarge(let reason):
            return RPCError(.resourceExhausted, reason)
        case .closedByClient:
            return RPCError(.cancelled, "the client closed the connection")
        }
    }
}
