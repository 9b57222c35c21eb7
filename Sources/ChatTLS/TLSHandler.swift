public import NIOCore

/// Events the TLS handler sends up the pipeline.
public enum TLSEvent: Sendable, Hashable {
    /// The handshake completed with `chat/1` (`http/1.1` for an HTTPS client); `peerIdentity` is the common name of
    /// the peer's verified certificate: on a server, the client's (mTLS), when it presented one; on a client, the
    /// server's.
    case handshakeCompleted(applicationProtocol: String, peerIdentity: String?)
}

/// TLS as a channel handler: ciphertext below, plaintext above, OpenSSL over memory BIOs in between.
///
/// Writes wait until the handshake is done. A handshake that fails, or does not finish within the configured time,
/// or does not agree on `chat/1`, closes the connection with a `TLSError`. A clean close sends close_notify; an end
/// of stream without the peer's close_notify is reported as `TLSError.uncleanShutdown`.
public final class TLSHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private enum State {
        case idle
        case handshaking
        case active
        case closing
        case closed
    }

    private let tlsContext: TLSContext
    private let serverName: String?
    private var connection: TLSConnection?
    private var state: State = .idle
    private var pendingWrites: [(ByteBuffer, EventLoopPromise<Void>?)] = []
    private var timeout: Scheduled<Void>?
    private var receivedCloseNotify = false
    private var plaintext = ByteBuffer()
    /// Plaintext written since the last flush, encrypted at the flush with one SSL_write: the frames of one flush
    /// share TLS records (and one ciphertext buffer) instead of taking one each.
    private var unencrypted: ByteBuffer?
    private var unencryptedPromises: [EventLoopPromise<Void>] = []

    /// Past this many bytes waiting, a write encrypts them without waiting for the flush: the channel sees them
    /// (and its writability follows) within this much of what a handler wrote.
    static let coalesceLimit = 64 * 1024

    /// Creates a handler.
    ///
    /// - Parameters:
    ///   - context: the shared TLS context (server or client).
    ///   - serverName: a client's expected server name or IP address, verified against the certificate.
    public init(context: TLSContext, serverName: String? = nil) {
        self.tlsContext = context
        self.serverName = serverName
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { self.start(context: context) }
    }

    public func channelActive(context: ChannelHandlerContext) {
        self.start(context: context)
        context.fireChannelActive()
    }

    private func start(context: ChannelHandlerContext) {
        guard case .idle = self.state else { return }
        do {
            self.connection = try TLSConnection(context: self.tlsContext, serverName: self.serverName)
        } catch {
            self.fail(context: context, error)
            return
        }
        self.state = .handshaking
        let seconds = self.tlsContext.configuration.handshakeTimeoutSeconds
        self.timeout = context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(seconds)) {
            if case .handshaking = self.state {
                self.fail(context: context, TLSError(.handshakeTimeout, "no handshake within \(seconds) s"))
            }
        }
        if self.tlsContext.configuration.role == .client {
            self.advanceHandshake(context: context)
        }
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let connection = self.connection else { return }
        connection.feed(self.unwrapInboundIn(data))
        switch self.state {
        case .handshaking:
            self.advanceHandshake(context: context)
        case .active, .closing:
            self.readPlaintext(context: context)
        case .idle, .closed:
            break
        }
    }

    private func advanceHandshake(context: ChannelHandlerContext) {
        guard let connection = self.connection else { return }
        switch connection.handshake() {
        case .incomplete:
            self.flushOutput(context: context)
        case .failed(let error):
            self.flushOutput(context: context)  // the alert
            self.fail(context: context, error)
        case .complete:
            self.timeout?.cancel()
            self.timeout = nil
            let configuration = self.tlsContext.configuration
            let negotiated = connection.negotiatedProtocol
            guard
                negotiated.map(configuration.applicationProtocols.contains) ?? !configuration.requireApplicationProtocol
            else {
                let wanted = configuration.applicationProtocols.joined(separator: " or ")
                self.fail(context: context, TLSError(.noApplicationProtocol, "the peer did not agree on \(wanted)"))
                return
            }
            // Without ALPN (allowed for HTTPS only), HTTP/1.1.
            let application = negotiated ?? "http/1.1"
            self.state = .active
            self.flushOutput(context: context)
            context.fireUserInboundEventTriggered(
                TLSEvent.handshakeCompleted(applicationProtocol: application, peerIdentity: connection.peerCommonName)
            )
            let writes = self.pendingWrites
            self.pendingWrites = []
            for (buffer, promise) in writes {
                self.encrypt(context: context, buffer, promise: promise)
            }
            if !writes.isEmpty { context.flush() }
            // Application data may have come with the last handshake message.
            self.readPlaintext(context: context)
        }
    }

    private func readPlaintext(context: ChannelHandlerContext) {
        guard let connection = self.connection else { return }
        self.plaintext.clear()
        let result = connection.read(into: &self.plaintext)
        if self.plaintext.readableBytes > 0 {
            context.fireChannelRead(self.wrapInboundOut(self.plaintext))
            self.plaintext = ByteBuffer()
            context.fireChannelReadComplete()
        }
        switch result {
        case .wantRead:
            self.flushOutput(context: context)  // session tickets, key updates
        case .closed:
            self.receivedCloseNotify = true
            if case .active = self.state {
                connection.shutdown()
                self.flushOutput(context: context)
                self.state = .closing
                context.close(promise: nil)
            }
        case .failed(let error):
            self.fail(context: context, error)
        }
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let buffer = self.unwrapOutboundIn(data)
        switch self.state {
        case .idle, .handshaking:
            self.pendingWrites.append((buffer, promise))
        case .active:
            self.coalesce(context: context, buffer, promise: promise)
        case .closing, .closed:
            promise?.fail(ChannelError.ioOnClosedChannel)
        }
    }

    private func coalesce(context: ChannelHandlerContext, _ buffer: ByteBuffer, promise: EventLoopPromise<Void>?) {
        if let promise { self.unencryptedPromises.append(promise) }
        if var pending = self.unencrypted {
            self.unencrypted = nil
            if pending.writableBytes < buffer.readableBytes {
                // A buffer of our own, with room for a few more frames (the first was the writer's).
                var grown = context.channel.allocator.buffer(
                    capacity: max(4_096, 2 * (pending.readableBytes + buffer.readableBytes))
                )
                grown.writeImmutableBuffer(pending)
                pending = grown
            }
            pending.writeImmutableBuffer(buffer)
            self.unencrypted = pending
        } else {
            self.unencrypted = buffer
        }
        if let waiting = self.unencrypted, waiting.readableBytes >= Self.coalesceLimit {
            self.encryptPending(context: context)
        }
    }

    /// Encrypts what was written since the last flush, as one SSL_write, and passes the ciphertext on.
    private func encryptPending(context: ChannelHandlerContext) {
        guard let pending = self.unencrypted else { return }
        self.unencrypted = nil
        let promises = self.unencryptedPromises
        self.unencryptedPromises = []
        var promise: EventLoopPromise<Void>?
        if promises.count == 1 {
            promise = promises[0]
        } else if !promises.isEmpty {
            let combined = context.eventLoop.makePromise(of: Void.self)
            combined.futureResult.whenComplete { result in
                for waiting in promises { waiting.completeWith(result) }
            }
            promise = combined
        }
        self.encrypt(context: context, pending, promise: promise)
    }

    private func failUnencrypted(_ error: any Error) {
        self.unencrypted = nil
        let promises = self.unencryptedPromises
        self.unencryptedPromises = []
        for promise in promises { promise.fail(error) }
    }

    private func encrypt(context: ChannelHandlerContext, _ buffer: ByteBuffer, promise: EventLoopPromise<Void>?) {
        guard let connection = self.connection else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        if let error = connection.write(buffer) {
            promise?.fail(error)
            self.fail(context: context, error)
            return
        }
        if let output = connection.takeOutput(allocator: context.channel.allocator) {
            context.write(self.wrapOutboundOut(output), promise: promise)
        } else {
            promise?.succeed()
        }
    }

    public func flush(context: ChannelHandlerContext) {
        if case .active = self.state {
            self.encryptPending(context: context)
            context.flush()
        }
    }

    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        switch self.state {
        case .active:
            // What was written before the close goes first, then close_notify.
            self.encryptPending(context: context)
            self.state = .closing
            self.connection?.shutdown()
            if let output = self.connection?.takeOutput(allocator: context.channel.allocator) {
                context.writeAndFlush(self.wrapOutboundOut(output), promise: nil)
            }
            context.close(mode: mode, promise: promise)
        default:
            context.close(mode: mode, promise: promise)
        }
    }

    public func channelInactive(context: ChannelHandlerContext) {
        let wasActive: Bool
        if case .active = self.state { wasActive = true } else { wasActive = false }
        self.state = .closed
        self.timeout?.cancel()
        let writes = self.pendingWrites
        self.pendingWrites = []
        for (_, promise) in writes { promise?.fail(ChannelError.ioOnClosedChannel) }
        self.failUnencrypted(ChannelError.ioOnClosedChannel)
        if wasActive && !self.receivedCloseNotify {
            context.fireErrorCaught(TLSError(.uncleanShutdown, "the connection ended without close_notify"))
        }
        context.fireChannelInactive()
    }

    private func flushOutput(context: ChannelHandlerContext) {
        guard let output = self.connection?.takeOutput(allocator: context.channel.allocator) else { return }
        context.writeAndFlush(self.wrapOutboundOut(output), promise: nil)
    }

    private func fail(context: ChannelHandlerContext, _ error: TLSError) {
        switch self.state {
        case .closed, .closing:
            return
        default:
            self.state = .closing
            self.timeout?.cancel()
            self.failUnencrypted(error)
            context.fireErrorCaught(error)
            context.close(promise: nil)
        }
    }
}
