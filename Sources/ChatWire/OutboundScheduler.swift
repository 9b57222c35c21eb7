public import NIOCore

/// chatd's own limits on what one connection may hold for its peer, whatever windows the peer advertises
/// (docs/PROTOCOL.md, section 6). A peer that advertises 2³¹−1 bytes of window and never reads gets no more than
/// these buffered for it.
public struct OutboundBudget: Hashable, Sendable {
    /// Response bytes queued for one stream beyond which its handler's writes wait.
    public var perStream: Int
    /// Response bytes queued for all streams of a connection beyond which every handler's writes wait.
    public var perConnection: Int
    /// Partially received request bytes a connection may hold; a stream whose DATA would exceed it is ended with
    /// RESOURCE_EXHAUSTED.
    public var inboundPerConnection: Int
    /// Control frames (and TRAILERS) written while the socket does not drain; one more is GOAWAY ENHANCE_YOUR_CALM.
    public var queuedControlFrames: Int

    /// chatd's defaults: 256 KiB a stream, 4 MiB a connection, 8 MiB of partial requests, 10,000 control frames.
    public init(
        perStream: Int = 256 * 1024,
        perConnection: Int = 4 * 1024 * 1024,
        inboundPerConnection: Int = 8 * 1024 * 1024,
        queuedControlFrames: Int = 10_000
    ) {
        self.perStream = perStream
        self.perConnection = perConnection
        self.inboundPerConnection = inboundPerConnection
        self.queuedControlFrames = queuedControlFrames
    }
}

/// What the server has queued to send on each stream of one connection, as a value: response envelopes within the
/// `OutboundBudget`, then each stream's TRAILERS. `pull` turns the queues into frames within the flow-control windows
/// of the connection state machine, one frame per ready stream in turn (round robin), and only while the socket
/// drains. The channel handler writes what comes out; nothing here knows about sockets.
public struct OutboundScheduler {
    private struct Queue {
        /// Whole batches of envelopes; the one at `head` may be partly sent.
        var chunks: [ByteBuffer] = []
        var head = 0
        var bytes = 0
        var trailers: ByteBuffer?
        var trailersSent = false

        var hasData: Bool { self.head < self.chunks.count }

        enum Step {
            /// A DATA payload to send.
            case data(ByteBuffer)
            /// The TRAILERS, now that the data is all sent.
            case trailers(ByteBuffer)
            /// Data is waiting for credit or for the socket.
            case blocked
            /// Nothing more to send for now.
            case idle
        }

        /// Takes the next frame's payload (mutated in place: no copy of the chunk list).
        mutating func next(capacity: Int) -> Step {
            if self.hasData {
                guard capacity > 0 else { return .blocked }
                let length = min(capacity, self.chunks[self.head].readableBytes)
                let slice = self.chunks[self.head].readSlice(length: length)!
                self.bytes -= length
                if self.chunks[self.head].readableBytes == 0 {
                    self.chunks[self.head] = ByteBuffer()
                    self.head += 1
                    if self.head == self.chunks.count {
                        self.chunks.removeAll(keepingCapacity: true)
                        self.head = 0
                    } else if self.head > 16, self.head * 2 > self.chunks.count {
                        self.chunks.removeFirst(self.head)
                        self.head = 0
                    }
                }
                return .data(slice)
            }
            if let trailers = self.trailers, !self.trailersSent {
                self.trailersSent = true
                return .trailers(trailers)
            }
            return .idle
        }
    }

    /// What one `pull` produced.
    public struct Pull {
        /// Frames to write, in order.
        public var frames: [Frame] = []
        /// Streams whose TRAILERS are among `frames`: their output is complete.
        public var completed: [StreamID] = []
        /// DATA payload bytes among `frames`.
        public var dataBytes = 0
        /// True when the pull stopped at `maxDataBytes` with data still sendable: pull again once it is written.
        public var reachedLimit = false
    }

    public let budget: OutboundBudget
    private var queues: [StreamID: Queue] = [:]
    /// Streams with something to send, in round-robin order.
    private var ready: [StreamID] = []
    /// Response bytes queued on this connection, all streams together.
    public private(set) var bufferedBytes = 0

    /// Creates an empty scheduler.
    public init(budget: OutboundBudget) {
        self.budget = budget
    }

    /// Response bytes queued for `stream`.
    public func bufferedBytes(_ stream: StreamID) -> Int { self.queues[stream]?.bytes ?? 0 }

    /// True while a handler may queue more for the connection without waiting.
    public var connectionHasRoom: Bool { self.bufferedBytes < self.budget.perConnection }

    /// True while a handler may queue more for `stream` without waiting: both it and the connection are within
    /// their budgets.
    public func hasRoom(_ stream: StreamID) -> Bool {
        self.connectionHasRoom && self.bufferedBytes(stream) < self.budget.perStream
    }

    /// True when the stream's TRAILERS are queued or sent.
    public func isFinishing(_ stream: StreamID) -> Bool { self.queues[stream]?.trailers != nil }

    /// Queues whole envelopes for a stream. Returns false (and queues nothing) once its TRAILERS are queued.
    @discardableResult
    public mutating func enqueue(_ stream: StreamID, _ envelopes: ByteBuffer) -> Bool {
        guard self.queues[stream]?.trailers == nil else { return false }
        guard envelopes.readableBytes > 0 else { return true }
        let wasIdle = !(self.queues[stream]?.hasData ?? false)
        // In place, through the dictionary's accessor: the chunk list is not copied.
        self.queues[stream, default: Queue()].chunks.append(envelopes)
        self.queues[stream]!.bytes += envelopes.readableBytes
        self.bufferedBytes += envelopes.readableBytes
        if wasIdle { self.ready.append(stream) }
        return true
    }

    /// Queues the stream's TRAILERS after its data. Returns false when they were queued before.
    @discardableResult
    public mutating func finish(_ stream: StreamID, trailers: ByteBuffer) -> Bool {
        guard self.queues[stream]?.trailers == nil else { return false }
        let wasIdle = !(self.queues[stream]?.hasData ?? false)
        self.queues[stream, default: Queue()].trailers = trailers
        if wasIdle { self.ready.append(stream) }
        return true
    }

    /// Drops the stream's queued data (deadline passed, cancelled): returns the bytes freed. Queued TRAILERS stay.
    @discardableResult
    public mutating func discardData(_ stream: StreamID) -> Int {
        guard let queue = self.queues[stream], queue.hasData else { return 0 }
        let freed = queue.bytes
        self.queues[stream]!.chunks = []
        self.queues[stream]!.head = 0
        self.queues[stream]!.bytes = 0
        self.bufferedBytes -= freed
        if queue.trailers == nil || queue.trailersSent { self.ready.removeAll { $0 == stream } }
        return freed
    }

    /// Forgets the stream entirely (it closed, or the peer cancelled it): returns the bytes freed.
    @discardableResult
    public mutating func remove(_ stream: StreamID) -> Int {
        guard let queue = self.queues.removeValue(forKey: stream) else { return 0 }
        self.bufferedBytes -= queue.bytes
        self.ready.removeAll { $0 == stream }
        return queue.bytes
    }

    /// Forgets every stream (the connection closed): returns the bytes freed.
    @discardableResult
    public mutating func removeAll() -> Int {
        let freed = self.bufferedBytes
        self.queues = [:]
        self.ready = []
        self.bufferedBytes = 0
        return freed
    }

    /// Takes frames off the queues: for each ready stream in turn, one DATA frame within its send capacity, the
    /// peer's MAX_FRAME_SIZE and what is left of `maxDataBytes`, or its TRAILERS once its data is all sent. The
    /// caller passes 0 for `maxDataBytes` while the socket does not drain (the channel is not writable); TRAILERS of
    /// streams with nothing left to send go out regardless (they are small and free the stream; the caller counts
    /// them as control frames).
    public mutating func pull(_ machine: inout ServerConnectionStateMachine, maxDataBytes: Int) -> Pull {
        var pull = Pull()
        var index = 0
        var progressed = false
        while !self.ready.isEmpty {
            if index >= self.ready.count {
                guard progressed else { break }
                index = 0
                progressed = false
            }
            let stream = self.ready[index]
            guard self.queues[stream] != nil else {
                self.ready.remove(at: index)
                continue
            }
            let left = maxDataBytes - pull.dataBytes
            let capacity = min(machine.sendCapacity(stream), machine.peer.maxFrameSize, left)
            if maxDataBytes > 0, left <= 0, self.queues[stream]!.hasData, machine.sendCapacity(stream) > 0 {
                pull.reachedLimit = true
            }
            switch self.queues[stream]!.next(capacity: capacity) {
            case .data(let payload):
                pull.frames.append(.data(stream: stream, payload: payload, endStream: false))
                machine.dataSent(stream, bytes: payload.readableBytes)
                self.bufferedBytes -= payload.readableBytes
                pull.dataBytes += payload.readableBytes
                progressed = true
                if self.queues[stream]!.hasData || self.queues[stream]!.trailers != nil {
                    index += 1
                } else {
                    self.ready.remove(at: index)
                }
            case .trailers(let payload):
                pull.frames.append(.trailers(stream: stream, payload: payload))
                pull.completed.append(stream)
                progressed = true
                self.ready.remove(at: index)
            case .blocked:
                index += 1
            case .idle:
                self.ready.remove(at: index)
            }
        }
        return pull
    }
}

/// Counts the control frames written while the socket does not drain: a peer that elicits frames (PING and
/// SETTINGS acknowledgements, refusals, TRAILERS of rejected streams) without reading them would otherwise grow the
/// server's buffers without bound (the CVE-2019-9512/9515 class).
public struct ControlFrameAllowance: Hashable, Sendable {
    public let limit: Int
    /// Control frames written since the socket last drained.
    public private(set) var queued = 0

    public init(limit: Int) {
        self.limit = limit
    }

    /// Frames were written; `socketDrains` is the channel's writability after them. Returns false when the peer
    /// has made the server queue more than the limit.
    public mutating func wrote(_ count: Int, socketDrains: Bool) -> Bool {
        if socketDrains {
            self.queued = 0
            return true
        }
        self.queued += count
        return self.queued <= self.limit
    }

    /// The socket drained.
    public mutating func drained() {
        self.queued = 0
    }
}
