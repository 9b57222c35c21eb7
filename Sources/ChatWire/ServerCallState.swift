/// Where one call's stream is in its life on the server, as a value: whether its handler runs, whether the server's
/// side has ended, whether its last frame went out, and whether a drain asked it to end. The stream closes (its slot
/// is freed) when its output is done and its handler is not running; the connection handler asks `canClose`.
public struct ServerCallState: Hashable, Sendable {
    /// The call's handler.
    public enum Handler: Hashable, Sendable {
        /// The request is still arriving, or the call was refused before it ran.
        case notStarted
        case running
        case returned
    }

    /// The server's side of the stream.
    public enum Output: Hashable, Sendable {
        /// Responses may still be queued.
        case open
        /// TRAILERS are queued behind the stream's data.
        case finishing
        /// TRAILERS or CANCEL went out, or the peer cancelled: nothing more is written.
        case done
    }

    public private(set) var handler: Handler = .notStarted
    public private(set) var output: Output = .open
    /// A drain (shutdown, or the connection's maximum age) cancelled the handler: its ending becomes UNAVAILABLE.
    public private(set) var cancelledByDrain = false

    public init() {}

    /// True once the server's side has ended (TRAILERS queued or sent, or CANCEL either way).
    public var isFinished: Bool { self.output != .open }

    /// True when the stream may be closed and its slot freed.
    public var canClose: Bool { self.output == .done && self.handler != .running }

    public mutating func handlerStarted() {
        precondition(self.handler == .notStarted, "a call's handler starts once")
        self.handler = .running
    }

    public mutating func handlerReturned() {
        if self.handler == .running { self.handler = .returned }
    }

    /// TRAILERS are queued. Returns false (and changes nothing) when the server's side had already ended.
    public mutating func finish() -> Bool {
        guard self.output == .open else { return false }
        self.output = .finishing
        return true
    }

    /// The stream's last frame went out, or the peer cancelled it.
    public mutating func outputDone() {
        self.output = .done
    }

    /// A drain cancels the handler.
    public mutating func drainCancelled() {
        self.cancelledByDrain = true
    }
}
