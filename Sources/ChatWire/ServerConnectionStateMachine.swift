public import NIOCore

/// The server's view of one connection: settings, streams, flow-control windows, ping policing and drain, as a value.
/// Events go in and an `Action` comes out; the channel handler carries the action out and does no protocol logic of
/// its own (docs/PROTOCOL.md is the specification).
public struct ServerConnectionStateMachine {
    /// Limits and timers that are not settings.
    public struct Configuration: Sendable {
        /// What this server advertises.
        public var local: ChatSettings
        /// Pings received sooner than the minimum interval that are tolerated; one more closes the connection.
        public var pingStrikesAllowed: Int
        /// CANCEL frames tolerated within one second; one more closes the connection.
        public var cancelsPerSecondAllowed: Int
        /// Silence after which the server pings.
        public var keepaliveInterval: TimeAmount
        /// How long the server waits for the keepalive ping's ACK.
        public var keepaliveTimeout: TimeAmount
        /// A connection with no call for this long gets GOAWAY and is closed; nil for never.
        public var idleTimeout: TimeAmount?
        /// A connection this old is drained (GOAWAY), so that clients reconnect and load balancers can rebalance
        /// them (gRFC A9's MAX_CONNECTION_AGE); nil for never. The handler adds jitter.
        public var maxAge: TimeAmount?

        /// The idle timeout chatd applies unless told otherwise.
        public static let defaultIdleTimeout = TimeAmount.minutes(15)

        /// Creates a configuration.
        public init(
            local: ChatSettings = .server,
            pingStrikesAllowed: Int = 2,
            cancelsPerSecondAllowed: Int = 1_000,
            keepaliveInterval: TimeAmount = .seconds(60),
            keepaliveTimeout: TimeAmount = .seconds(20),
            idleTimeout: TimeAmount? = Configuration.defaultIdleTimeout,
            maxAge: TimeAmount? = nil
        ) {
            self.local = local
            self.pingStrikesAllowed = pingStrikesAllowed
            self.cancelsPerSecondAllowed = cancelsPerSecondAllowed
            self.keepaliveInterval = keepaliveInterval
            self.keepaliveTimeout = keepaliveTimeout
            self.idleTimeout = idleTimeout
            self.maxAge = maxAge
        }

        /// How often the handler should call `timerFired`: often enough for every timer configured.
        public var tickInterval: TimeAmount {
            var tick = self.keepaliveInterval.nanoseconds / 4
            if let idle = self.idleTimeout { tick = min(tick, idle.nanoseconds / 4) }
            if let age = self.maxAge { tick = min(tick, age.nanoseconds / 4) }
            return .nanoseconds(max(tick, 10_000_000))
        }
    }

    /// What the handler must do.
    public enum Action: Hashable, Sendable {
        /// Nothing.
        case none
        /// Write these frames.
        case send([Frame])
        /// A call was opened: decode the header and start the call.
        case openStream(StreamID, header: ByteBuffer)
        /// The stream's header is larger than MAX_HEADER_SIZE: answer TRAILERS RESOURCE_EXHAUSTED, then report
        /// `streamClosed`.
        case rejectStream(StreamID, reason: String)
        /// Request bytes for a stream; write `send` (connection window credit) too.
        case streamData(StreamID, ByteBuffer, endStream: Bool, send: [Frame])
        /// The peer cancelled the stream (or broke it): cancel its handler; write `send` if not empty.
        case cancelStream(StreamID, send: [Frame])
        /// Send credit arrived: resume writers of this stream, or of every stream when nil (connection window).
        case windowOpened(StreamID?)
        /// Write these frames, then close the connection.
        case closeConnection([Frame])
        /// The connection reached its maximum age: drain it (GOAWAY), giving calls in flight the age grace.
        case maxAgeReached
    }

    private enum State: Hashable {
        /// The first frame must be the client's SETTINGS.
        case awaitingSettings
        case active
        /// GOAWAY(max) and a PING were sent; waiting for the PING's ACK.
        case drainingAwaitingAck
        /// GOAWAY(last accepted) was sent; streams above it are refused.
        case drained(lastStream: StreamID)
        case closed
    }

    private enum StreamPhase: Hashable {
        /// HEADERS arrived; request DATA is coming.
        case receivingRequest
        /// The request ended (END_STREAM); the handler may still be running.
        case requestComplete
        /// Cancelled or rejected; the handler may still be running, so the stream still counts.
        case ended
    }

    private struct Stream: Hashable {
        var phase: StreamPhase
        /// What the peer may still send on this stream.
        var receiveWindow: Int
        /// What we may still send on this stream.
        var sendWindow: Int
    }

    /// The payload of the PING that starts a drain (ASCII "chatdrn!").
    public static let drainPingPayload: UInt64 = 0x6368_6174_6472_6E21
    /// The payload of keepalive pings (ASCII "chatkeep").
    public static let keepalivePingPayload: UInt64 = 0x6368_6174_6B65_6570

    public let configuration: Configuration
    private var state: State = .awaitingSettings
    /// The peer's settings; the defaults until its SETTINGS arrives.
    public private(set) var peer: ChatSettings = .defaults
    private var streams: [StreamID: Stream] = [:]
    /// The highest stream id the client opened.
    public private(set) var lastStreamID: StreamID = 0
    private var connectionReceiveWindow: Int
    private var connectionReceivedUnacknowledged = 0
    private var connectionSendWindow: Int
    private var lastPingReceived: NIODeadline?
    private var pingStrikes = 0
    private var cancelWindowStart: NIODeadline
    private var cancelsInWindow = 0
    private var lastFrameReceived: NIODeadline
    private var keepalivePingSent: NIODeadline?
    private var peerWentAway = false
    /// Since when the connection has had no stream; nil while it has one.
    private var idleSince: NIODeadline?
    private let ageDeadline: NIODeadline?
    private var ageReported = false

    /// Creates the state machine of a new connection.
    ///
    /// - Parameters:
    ///   - configuration: settings and limits.
    ///   - now: the current time, for the keepalive and flood clocks.
    public init(configuration: Configuration = .init(), now: NIODeadline) {
        self.configuration = configuration
        self.connectionReceiveWindow = configuration.local.connectionWindow
        self.connectionSendWindow = ChatSettings.defaults.connectionWindow
        self.cancelWindowStart = now
        self.lastFrameReceived = now
        self.idleSince = now
        self.ageDeadline = configuration.maxAge.map { now + $0 }
    }

    /// The frames the server sends first: its SETTINGS, then connection credit beyond the default window.
    public var initialFrames: [Frame] {
        [.settings(self.configuration.local.entries)]
    }

    /// The number of streams that count against MAX_CONCURRENT_STREAMS (cancelled ones whose handlers still run
    /// included).
    public var openStreams: Int { self.streams.count }

    /// True once the connection is closed or closing.
    public var isClosed: Bool { self.state == .closed }

    // MARK: - Frames from the peer

    /// A frame arrived.
    public mutating func frameReceived(_ frame: Frame, now: NIODeadline) -> Action {
        guard self.state != .closed else { return .none }
        self.lastFrameReceived = now
        if self.state == .awaitingSettings {
            guard case .settings(let entries) = frame else {
                return self.connectionError(WireError(.protocolError, "the first frame must be SETTINGS"))
            }
            // The idle clock starts once the connection is set up: a slow TLS handshake is not idleness (the
            // preface timeout bounds it), and a client's first call must not race a timer that began at accept.
            self.idleSince = now
            return self.settingsReceived(entries)
        }
        switch frame {
        case .settings:
            return self.connectionError(WireError(.protocolError, "SETTINGS sent twice"))
        case .settingsAck:
            return .none
        case .headers(let stream, let payload):
            return self.headersReceived(stream, payload)
        case .data(let stream, let payload, let endStream):
            return self.dataReceived(stream, payload, endStream: endStream)
        case .trailers(let stream, _):
            return self.connectionError(WireError(.protocolError, "TRAILERS from a client on stream \(stream)"))
        case .cancel(let stream, _):
            return self.cancelReceived(stream, now: now)
        case .windowUpdate(let stream, let increment):
            return self.windowUpdateReceived(stream, Int(increment))
        case .ping(let payload, let ack):
            return self.pingReceived(payload, ack: ack, now: now)
        case .goAway:
            self.peerWentAway = true
            return self.streams.isEmpty ? self.close([]) : .none
        case .unknown:
            return .none
        }
    }

    private mutating func settingsReceived(_ entries: [Setting]) -> Action {
        do {
            self.peer = try ChatSettings.received(entries)
        } catch {
            return self.connectionError(error)
        }
        self.connectionSendWindow = self.peer.connectionWindow
        self.state = .active
        return .send([.settingsAck])
    }

    private mutating func headersReceived(_ id: StreamID, _ payload: ByteBuffer) -> Action {
        guard id & 1 == 1, id > self.lastStreamID else {
            return self.connectionError(WireError(.protocolError, "stream id \(id) is not odd and increasing"))
        }
        self.lastStreamID = id
        let refuse: Bool
        switch self.state {
        case .drained(let last): refuse = id > last
        case .active, .drainingAwaitingAck: refuse = self.peerWentAway
        case .awaitingSettings, .closed: refuse = true
        }
        if refuse || self.streams.count >= self.configuration.local.maxConcurrentStreams {
            return .send([.cancel(stream: id, code: .refusedStream)])
        }
        let tooLarge = payload.readableBytes > self.configuration.local.maxHeaderSize
        self.idleSince = nil
        self.streams[id] = Stream(
            phase: tooLarge ? .ended : .receivingRequest,
            receiveWindow: self.configuration.local.initialWindowSize,
            sendWindow: self.peer.initialWindowSize
        )
        if tooLarge {
            return .rejectStream(
                id,
                reason: "call header of \(payload.readableBytes) bytes exceeds MAX_HEADER_SIZE "
                    + "\(self.configuration.local.maxHeaderSize)"
            )
        }
        return .openStream(id, header: payload)
    }

    private mutating func dataReceived(_ id: StreamID, _ payload: ByteBuffer, endStream: Bool) -> Action {
        let length = payload.readableBytes
        guard length <= self.connectionReceiveWindow else {
            return self.connectionError(WireError(.flowControlError, "DATA beyond the connection window"))
        }
        self.connectionReceiveWindow -= length
        self.connectionReceivedUnacknowledged += length
        var credit: [Frame] = []
        // Connection credit returns as soon as the bytes are read: only stream windows wait for the application.
        if self.connectionReceivedUnacknowledged >= self.configuration.local.connectionWindow / 2 {
            credit.append(.windowUpdate(stream: 0, increment: UInt32(self.connectionReceivedUnacknowledged)))
            self.connectionReceiveWindow += self.connectionReceivedUnacknowledged
            self.connectionReceivedUnacknowledged = 0
        }
        guard var stream = self.streams[id] else {
            if id > self.lastStreamID {
                return self.connectionError(WireError(.protocolError, "DATA on stream \(id), which was never opened"))
            }
            return credit.isEmpty ? .none : .send(credit)  // a stream that ended: ignored
        }
        switch stream.phase {
        case .receivingRequest:
            guard length <= stream.receiveWindow else {
                return self.connectionError(WireError(.flowControlError, "DATA beyond the window of stream \(id)"))
            }
            stream.receiveWindow -= length
            if endStream { stream.phase = .requestComplete }
            self.streams[id] = stream
            return .streamData(id, payload, endStream: endStream, send: credit)
        case .requestComplete:
            stream.phase = .ended
            self.streams[id] = stream
            return .cancelStream(id, send: credit + [.cancel(stream: id, code: .streamClosed)])
        case .ended:
            return credit.isEmpty ? .none : .send(credit)
        }
    }

    private mutating func cancelReceived(_ id: StreamID, now: NIODeadline) -> Action {
        if now - self.cancelWindowStart >= .seconds(1) {
            self.cancelWindowStart = now
            self.cancelsInWindow = 0
        }
        self.cancelsInWindow += 1
        if self.cancelsInWindow > self.configuration.cancelsPerSecondAllowed {
            return self.connectionError(WireError(.enhanceYourCalm, "too many cancels"))
        }
        guard var stream = self.streams[id], stream.phase != .ended else { return .none }
        stream.phase = .ended
        self.streams[id] = stream
        return .cancelStream(id, send: [])
    }

    private mutating func windowUpdateReceived(_ id: StreamID, _ increment: Int) -> Action {
        if id == 0 {
            guard self.connectionSendWindow + increment <= WireConstants.maxWindow else {
                return self.connectionError(WireError(.flowControlError, "connection window over 2^31-1"))
            }
            self.connectionSendWindow += increment
            return .windowOpened(nil)
        }
        guard var stream = self.streams[id] else { return .none }
        guard stream.sendWindow + increment <= WireConstants.maxWindow else {
            return self.connectionError(WireError(.flowControlError, "window of stream \(id) over 2^31-1"))
        }
        stream.sendWindow += increment
        self.streams[id] = stream
        return .windowOpened(id)
    }

    private mutating func pingReceived(_ payload: UInt64, ack: Bool, now: NIODeadline) -> Action {
        if ack {
            if payload == Self.drainPingPayload, self.state == .drainingAwaitingAck {
                self.state = .drained(lastStream: self.lastStreamID)
                let goAway = Frame.goAway(lastStream: self.lastStreamID, code: .noError, debug: "draining")
                return self.streams.isEmpty ? self.close([goAway]) : .send([goAway])
            }
            if payload == Self.keepalivePingPayload { self.keepalivePingSent = nil }
            return .none
        }
        let minimum = TimeAmount.milliseconds(Int64(self.configuration.local.keepaliveMinIntervalMilliseconds))
        if let last = self.lastPingReceived, now - last < minimum {
            self.pingStrikes += 1
            if self.pingStrikes > self.configuration.pingStrikesAllowed {
                return self.connectionError(WireError(.enhanceYourCalm, "too_many_pings"))
            }
        }
        self.lastPingReceived = now
        return .send([.ping(payload: payload, ack: true)])
    }

    // MARK: - Events from the server

    /// The call's application consumed `bytes` of the stream's request: return the credit.
    public mutating func requestConsumed(_ id: StreamID, bytes: Int) -> Action {
        guard bytes > 0, var stream = self.streams[id], stream.phase == .receivingRequest else { return .none }
        stream.receiveWindow += bytes
        self.streams[id] = stream
        return .send([.windowUpdate(stream: id, increment: UInt32(bytes))])
    }

    /// How many DATA bytes may be sent on the stream now (the smaller of its window and the connection's).
    public func sendCapacity(_ id: StreamID) -> Int {
        guard let stream = self.streams[id] else { return 0 }
        return max(0, min(stream.sendWindow, self.connectionSendWindow))
    }

    /// DATA of `bytes` was sent on the stream.
    public mutating func dataSent(_ id: StreamID, bytes: Int) {
        guard var stream = self.streams[id] else { return }
        precondition(bytes <= min(stream.sendWindow, self.connectionSendWindow), "sent beyond the window")
        stream.sendWindow -= bytes
        self.connectionSendWindow -= bytes
        self.streams[id] = stream
    }

    /// The server ended the stream (its handler returned and TRAILERS or CANCEL went out): free its slot.
    ///
    /// - Parameter now: when, for the idle timeout (nil: not tracked, as in tests that do not care).
    public mutating func streamClosed(_ id: StreamID, now: NIODeadline? = nil) -> Action {
        guard self.streams.removeValue(forKey: id) != nil else { return .none }
        if self.streams.isEmpty {
            self.idleSince = now ?? self.lastFrameReceived
            switch self.state {
            case .drained: return self.close([])
            case .active, .drainingAwaitingAck: if self.peerWentAway { return self.close([]) }
            case .awaitingSettings, .closed: break
            }
        }
        return .none
    }

    /// The server ends a stream itself (deadline, slow consumer): stop accepting its frames.
    public mutating func streamEndedLocally(_ id: StreamID) {
        guard var stream = self.streams[id] else { return }
        stream.phase = .ended
        self.streams[id] = stream
    }

    /// Graceful shutdown: GOAWAY(2^31-1) and a PING; when its ACK arrives, GOAWAY(last accepted stream). A
    /// connection with no stream open is closed at once with GOAWAY(last accepted stream): a client's HEADERS still
    /// in flight are above it, so they are known not processed and retried elsewhere.
    public mutating func drainRequested() -> Action {
        switch self.state {
        case .active where self.streams.isEmpty:
            return self.close([.goAway(lastStream: self.lastStreamID, code: .noError, debug: "draining")])
        case .active:
            self.state = .drainingAwaitingAck
            return .send([
                .goAway(lastStream: WireConstants.maxStreamID, code: .noError, debug: "draining"),
                .ping(payload: Self.drainPingPayload, ack: false),
            ])
        case .awaitingSettings:
            return self.close([.goAway(lastStream: 0, code: .noError, debug: "shutting down")])
        case .drainingAwaitingAck, .drained, .closed:
            return .none
        }
    }

    /// The connection's timer fired: close an idle connection, report the maximum age once, ping a silent peer,
    /// or give up on one that did not answer.
    public mutating func timerFired(now: NIODeadline) -> Action {
        guard self.state != .closed else { return .none }
        if let idle = self.configuration.idleTimeout, let since = self.idleSince, self.streams.isEmpty,
            now - since >= idle
        {
            return self.close([.goAway(lastStream: self.lastStreamID, code: .noError, debug: "idle")])
        }
        if let deadline = self.ageDeadline, now >= deadline, !self.ageReported {
            self.ageReported = true
            return .maxAgeReached
        }
        if let sent = self.keepalivePingSent {
            if now - sent >= self.configuration.keepaliveTimeout {
                return self.close([.goAway(lastStream: self.lastStreamID, code: .noError, debug: "keepalive timeout")])
            }
            return .none
        }
        if now - self.lastFrameReceived >= self.configuration.keepaliveInterval {
            self.keepalivePingSent = now
            return .send([.ping(payload: Self.keepalivePingPayload, ack: false)])
        }
        return .none
    }

    /// A framing error from the decoder (or any violation of the protocol): GOAWAY and close.
    public mutating func connectionError(_ error: WireError) -> Action {
        self.close([.goAway(lastStream: self.lastStreamID, code: error.code, debug: error.message)])
    }

    private mutating func close(_ frames: [Frame]) -> Action {
        self.state = .closed
        return .closeConnection(frames)
    }
}
