internal import Synchronization

/// Live counts of one server's connections and buffers, readable from any thread: what tests assert returns to zero
/// after peers leave, and what metrics will export. Every count is of this server instance only.
public final class ServerStats: Sendable {
    /// Why a connection was refused or ended by chatd's limits.
    public enum Refusal: CaseIterable, Sendable {
        /// `maxConnections` were open.
        case tooManyConnections
        /// `maxHandshakingConnections` were still in the TLS handshake.
        case tooManyHandshakes
    }

    private let handlers = Atomic<Int>(0)
    private let open = Atomic<Int>(0)
    private let accepted = Atomic<Int>(0)
    private let handshaking = Atomic<Int>(0)
    private let outbound = Atomic<Int>(0)
    private let inbound = Atomic<Int>(0)
    private let refusedConnections = Atomic<Int>(0)
    private let refusedHandshakes = Atomic<Int>(0)
    private let controlFloods = Atomic<Int>(0)
    private let stalls = Atomic<Int>(0)
    private let waits = Atomic<Int>(0)

    public init() {}

    /// Connection handlers alive in memory (not yet deinitialised): 0 once every connection has closed and every
    /// call's task has ended.
    public var liveConnectionHandlers: Int { self.handlers.load(ordering: .relaxed) }
    /// Connections accepted within the limits since the server started.
    public var acceptedConnections: Int { self.accepted.load(ordering: .relaxed) }
    /// Connections accepted and not yet closed.
    public var openConnections: Int { self.open.load(ordering: .relaxed) }
    /// Connections still in the TLS handshake.
    public var handshakingConnections: Int { self.handshaking.load(ordering: .relaxed) }
    /// Response bytes queued for peers, all connections together.
    public var bufferedOutboundBytes: Int { self.outbound.load(ordering: .relaxed) }
    /// Partially received request bytes held, all connections together.
    public var bufferedInboundBytes: Int { self.inbound.load(ordering: .relaxed) }
    /// Connections refused for `reason`.
    public func refused(_ reason: Refusal) -> Int {
        switch reason {
        case .tooManyConnections: self.refusedConnections.load(ordering: .relaxed)
        case .tooManyHandshakes: self.refusedHandshakes.load(ordering: .relaxed)
        }
    }
    /// Connections closed with ENHANCE_YOUR_CALM because the peer made chatd queue too many control frames.
    public var controlFrameFloods: Int { self.controlFloods.load(ordering: .relaxed) }
    /// Writes that ended with the stall limit (the peer read nothing for that long).
    public var stalledWrites: Int { self.stalls.load(ordering: .relaxed) }
    /// Writes that had to wait for room (the peer's flow-control window or chatd's budgets were full).
    public var waitedWrites: Int { self.waits.load(ordering: .relaxed) }

    /// Admits a new connection within the limits, or counts the refusal.
    func admit(maxConnections: Int, maxHandshaking: Int) -> Refusal? {
        if self.open.add(1, ordering: .relaxed).newValue > maxConnections {
            self.open.subtract(1, ordering: .relaxed)
            self.refusedConnections.add(1, ordering: .relaxed)
            return .tooManyConnections
        }
        if self.handshaking.add(1, ordering: .relaxed).newValue > maxHandshaking {
            self.handshaking.subtract(1, ordering: .relaxed)
            self.open.subtract(1, ordering: .relaxed)
            self.refusedHandshakes.add(1, ordering: .relaxed)
            return .tooManyHandshakes
        }
        self.accepted.add(1, ordering: .relaxed)
        return nil
    }

    func handshakeEnded() { self.handshaking.subtract(1, ordering: .relaxed) }
    func connectionClosed() { self.open.subtract(1, ordering: .relaxed) }
    func handlerCreated() { self.handlers.add(1, ordering: .relaxed) }
    func handlerFreed() { self.handlers.subtract(1, ordering: .relaxed) }
    func outboundChanged(by delta: Int) { if delta != 0 { self.outbound.add(delta, ordering: .relaxed) } }
    func inboundChanged(by delta: Int) { if delta != 0 { self.inbound.add(delta, ordering: .relaxed) } }
    func controlFrameFlood() { self.controlFloods.add(1, ordering: .relaxed) }
    func writeStalled() { self.stalls.add(1, ordering: .relaxed) }
    func writeWaited() { self.waits.add(1, ordering: .relaxed) }
}
