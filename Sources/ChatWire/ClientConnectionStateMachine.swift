public import NIOCore

/// The client's view of one connection, as a value: the server's settings, stream ids, both directions' windows,
/// the calls waiting for a stream slot, credit returned as the caller consumes, GOAWAY and close. Events go in and
/// an `Output` comes out; the channel handler writes its frames, hands its messages to the calls and ends the calls
/// it names (docs/PROTOCOL.md is the specification).
public struct ClientConnectionStateMachine {
    /// A call, as the handler names it.
    public typealias Token = UInt64

    /// Why a call ended; the handler turns it into the caller's error.
    public enum Ending: Hashable, Sendable {
        /// TRAILERS arrived with this `CallStatus` payload.
        case status(ByteBuffer)
        /// The server reset the stream with CANCEL and this code (not REFUSED_STREAM).
        case reset(ErrorCode)
        /// The call was not processed (refused, above a GOAWAY, or the connection was closing): safe to retry.
        case notProcessed(String)
        /// The connection ended while the call was open: it may or may not have been processed.
        case interrupted(String)
        /// A response over MAX_MESSAGE_SIZE: the stream was cancelled.
        case tooLarge(String)
        /// The client closed the connection.
        case closedByClient
    }

    /// What the handler must do.
    public struct Output {
        /// Frames to write, in order (then flush).
        public var frames: [Frame] = []
        /// Response messages, in order, for the calls named.
        public var messages: [(token: Token, message: ByteBuffer)] = []
        /// Calls that are over.
        public var ended: [(token: Token, ending: Ending)] = []
        /// Close the connection.
        public var close = false

        public init() {}
    }

    private struct Stream {
        let token: Token
        var deframer: MessageDeframer
        var sendWindow: Int
        var pendingRequest: ByteBuffer?
        var unreturnedCredit = 0
        /// Credit already returned for the bytes of the partial message in the deframer.
        var prepaid = 0
    }

    private struct Queued {
        let token: Token
        let header: ByteBuffer
        let request: ByteBuffer
    }

    /// What the client advertises.
    public let local: ChatSettings
    /// The server's settings; the defaults until its SETTINGS arrives.
    public private(set) var peer: ChatSettings = .defaults
    /// True once the connection takes no new calls (GOAWAY, out of stream ids, closing).
    public private(set) var isGoingAway = false
    /// True once the connection is closed or closing.
    public private(set) var isClosed = false
    private var nextStreamID: StreamID = 1
    private var connectionSendWindow = ChatSettings.defaults.connectionWindow
    private var connectionUnreturned = 0
    private var streams: [StreamID: Stream] = [:]
    private var tokens: [Token: StreamID] = [:]
    private var queued: [Queued] = []
    private var queueHead = 0

    /// Creates the state machine of a new connection that advertises `local`.
    public init(local: ChatSettings) {
        self.local = local
    }

    /// Calls open on the connection (not counting the ones waiting for a slot).
    public var openStreams: Int { self.streams.count }

    /// Calls waiting for a stream slot.
    public var queuedCalls: Int { self.queued.count - self.queueHead }

    // MARK: - Calls

    /// Starts a call: opens a stream at once, or queues it until MAX_CONCURRENT_STREAMS allows.
    public mutating func startCall(_ token: Token, header: ByteBuffer, request: ByteBuffer) -> Output {
        var output = Output()
        guard !self.isGoingAway, !self.isClosed, self.nextStreamID <= WireConstants.maxStreamID else {
            output.ended.append((token, .notProcessed("the connection is closing; not processed")))
            return output
        }
        let call = Queued(token: token, header: header, request: request)
        if self.streams.count >= self.peer.maxConcurrentStreams {
            self.queued.append(call)
        } else {
            self.open(call, &output)
        }
        return output
    }

    /// The caller gave up on a call (cancelled, deadline passed): CANCEL if it is open; its slot goes to the next.
    /// The handler ends the call with its own error.
    public mutating func cancelCall(_ token: Token) -> Output {
        var output = Output()
        if let index = self.queued[self.queueHead...].firstIndex(where: { $0.token == token }) {
            self.queued.remove(at: index)
            return output
        }
        guard let id = self.tokens[token] else { return output }
        output.frames.append(.cancel(stream: id, code: .cancel))
        self.streamEnded(id, &output)
        return output
    }

    /// The caller consumed `bytes` of a call's messages: credit goes back in batches of a quarter window.
    public mutating func consumed(_ token: Token, bytes: Int) -> Output {
        var output = Output()
        guard let id = self.tokens[token], self.streams[id] != nil else { return output }
        self.streams[id]!.unreturnedCredit += bytes
        let credit = self.streams[id]!.unreturnedCredit
        if credit >= self.local.initialWindowSize / 4 {
            output.frames.append(.windowUpdate(stream: id, increment: UInt32(credit)))
            self.streams[id]!.unreturnedCredit = 0
        }
        return output
    }

    /// The client closes the connection: every call is cancelled (CANCEL for the open ones).
    public mutating func closeRequested() -> Output {
        var output = Output()
        self.isGoingAway = true
        for token in Array(self.tokens.keys) + self.queued[self.queueHead...].map(\.token) {
            let cancelled = self.cancelCall(token)
            output.frames += cancelled.frames
            output.close = output.close || cancelled.close
            output.ended.append((token, .closedByClient))
        }
        self.closeIfIdle(&output)
        return output
    }

    /// The connection closed: every open call was interrupted, every queued one was not processed.
    public mutating func connectionClosed() -> Output {
        var output = Output()
        self.isClosed = true
        self.isGoingAway = true
        for (_, stream) in self.streams.sorted(by: { $0.key < $1.key }) {
            output.ended.append((stream.token, .interrupted("the connection closed before the call ended")))
        }
        for call in self.queued[self.queueHead...] {
            output.ended.append((call.token, .notProcessed("the connection closed; not processed")))
        }
        self.streams = [:]
        self.tokens = [:]
        self.queued = []
        self.queueHead = 0
        return output
    }

    /// A framing error (from the decoder): GOAWAY and close.
    public mutating func connectionError(_ error: WireError) -> Output {
        var output = Output()
        output.frames.append(.goAway(lastStream: 0, code: error.code, debug: error.message))
        output.close = true
        self.isGoingAway = true
        return output
    }

    // MARK: - Frames from the server

    /// A frame arrived.
    public mutating func frameReceived(_ frame: Frame) -> Output {
        var output = Output()
        switch frame {
        case .settings(let entries):
            do {
                self.peer = try ChatSettings.received(entries)
            } catch {
                return self.connectionError(error)
            }
            self.connectionSendWindow = self.peer.connectionWindow
            output.frames.append(.settingsAck)
            // A lower MAX_CONCURRENT_STREAMS than the default leaves calls queued; a higher one lets them open.
            self.streamEnded(nil, &output)
        case .data(let id, let payload, _):
            self.dataReceived(id, payload, &output)
        case .trailers(let id, let payload):
            guard let stream = self.streams[id] else { break }
            output.ended.append((stream.token, .status(payload)))
            self.streamEnded(id, &output)
        case .cancel(let id, let code):
            guard let stream = self.streams[id] else { break }
            let ending: Ending =
                code == .refusedStream
                ? .notProcessed("the server refused the call; it was not processed") : .reset(code)
            output.ended.append((stream.token, ending))
            self.streamEnded(id, &output)
        case .windowUpdate(let id, let increment):
            if id == 0 {
                self.connectionSendWindow += Int(increment)
                for id in self.streams.keys.sorted() { self.pumpRequest(id, &output) }
            } else if self.streams[id] != nil {
                self.streams[id]!.sendWindow += Int(increment)
                self.pumpRequest(id, &output)
            }
        case .ping(let payload, let ack):
            if !ack { output.frames.append(.ping(payload: payload, ack: true)) }
        case .goAway(let lastStream, _, _):
            self.isGoingAway = true
            for (id, stream) in self.streams.sorted(by: { $0.key < $1.key }) where id > lastStream {
                output.ended.append(
                    (stream.token, .notProcessed("the server is going away; the call was not processed"))
                )
                self.streams.removeValue(forKey: id)
                self.tokens.removeValue(forKey: stream.token)
            }
            self.streamEnded(nil, &output)
        case .settingsAck, .headers, .unknown:
            break
        }
        return output
    }

    private mutating func dataReceived(_ id: StreamID, _ payload: ByteBuffer, _ output: inout Output) {
        self.connectionUnreturned += payload.readableBytes
        if self.connectionUnreturned >= self.local.connectionWindow / 2 {
            output.frames.append(.windowUpdate(stream: 0, increment: UInt32(self.connectionUnreturned)))
            self.connectionUnreturned = 0
        }
        guard let token = self.streams[id]?.token else { return }
        self.streams[id]!.deframer.append(payload)
        do {
            while let message = try self.streams[id]!.deframer.nextMessage() {
                // Part of this message may have been credited while it was incomplete; the consumer returns the
                // rest when it reads the message (see `consumed`).
                let size = message.readableBytes + WireConstants.envelopePrefixSize
                let prepaid = min(self.streams[id]!.prepaid, size)
                self.streams[id]!.prepaid -= prepaid
                self.streams[id]!.unreturnedCredit -= prepaid
                output.messages.append((token, message))
            }
        } catch {
            output.frames.append(.cancel(stream: id, code: .cancel))
            output.ended.append((token, .tooLarge(error.message)))
            self.streamEnded(id, &output)
            return
        }
        // A message larger than the window could never complete if its bytes waited for the consumer: credit such a
        // partial message as it arrives (it is bounded by MAX_MESSAGE_SIZE). A message that fits in the window is
        // not prepaid: its bytes are credited when the consumer reads it, so a consumer that stops reading stops
        // the sender after one window.
        let stream = self.streams[id]!
        let partial = stream.deframer.bufferedBytes
        if let size = stream.deframer.pendingEnvelopeSize, size > self.local.initialWindowSize, partial > stream.prepaid
        {
            output.frames.append(.windowUpdate(stream: id, increment: UInt32(partial - stream.prepaid)))
            self.streams[id]!.prepaid = partial
        }
    }

    // MARK: - Streams

    private mutating func open(_ call: Queued, _ output: inout Output) {
        let id = self.nextStreamID
        self.nextStreamID += 2
        if self.nextStreamID > WireConstants.maxStreamID { self.isGoingAway = true }
        self.streams[id] = Stream(
            token: call.token,
            deframer: MessageDeframer(maxMessageSize: self.local.maxMessageSize),
            sendWindow: self.peer.initialWindowSize,
            pendingRequest: call.request
        )
        self.tokens[call.token] = id
        output.frames.append(.headers(stream: id, payload: call.header))
        self.pumpRequest(id, &output)
    }

    /// Sends what the windows allow of the stream's request; END_STREAM with its last bytes.
    private mutating func pumpRequest(_ id: StreamID, _ output: inout Output) {
        guard var request = self.streams[id]?.pendingRequest else { return }
        while true {
            let capacity = min(self.streams[id]!.sendWindow, self.connectionSendWindow, self.peer.maxFrameSize)
            let length = min(capacity, request.readableBytes)
            let last = length == request.readableBytes
            guard length > 0 || last else { break }
            let slice = request.readSlice(length: length)!
            self.streams[id]!.sendWindow -= length
            self.connectionSendWindow -= length
            output.frames.append(.data(stream: id, payload: slice, endStream: last))
            if last {
                self.streams[id]!.pendingRequest = nil
                return
            }
        }
        self.streams[id]!.pendingRequest = request
    }

    /// A stream ended (or none, when only the slots or GOAWAY changed): start queued calls in the free slots, refuse
    /// them all when the connection is going away, and close when nothing is left.
    private mutating func streamEnded(_ id: StreamID?, _ output: inout Output) {
        if let id, let stream = self.streams.removeValue(forKey: id) {
            self.tokens.removeValue(forKey: stream.token)
        }
        while self.streams.count < self.peer.maxConcurrentStreams, !self.isGoingAway, self.queueHead < self.queued.count
        {
            let next = self.queued[self.queueHead]
            self.queueHead += 1
            self.open(next, &output)
        }
        if self.isGoingAway {
            for call in self.queued[self.queueHead...] {
                output.ended.append((call.token, .notProcessed("the connection is closing; not processed")))
            }
            self.queued = []
            self.queueHead = 0
        } else if self.queueHead > 64, self.queueHead * 2 > self.queued.count {
            self.queued.removeFirst(self.queueHead)
            self.queueHead = 0
        }
        self.closeIfIdle(&output)
    }

    private mutating func closeIfIdle(_ output: inout Output) {
        guard self.isGoingAway, self.streams.isEmpty, !self.isClosed else { return }
        self.isClosed = true
        output.close = true
    }
}
