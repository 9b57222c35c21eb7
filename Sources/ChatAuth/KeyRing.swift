internal import Synchronization

/// The keys tokens are verified with, replaceable while chatd runs (a JWKS file rewritten at the identity
/// provider's key rotation). Each replacement bumps `generation`; what was verified under an older generation is
/// verified again, so a removed key stops working at once, cached tokens included.
public final class KeyRing: Sendable {
    private let state: Mutex<(keys: JWKSet, generation: UInt64)>
    /// Told the key id of a token the ring had no key for (the JWKS fetcher refreshes on it).
    private let unknownKeyHandler = Mutex<(@Sendable (String) -> Void)?>(nil)

    /// A ring holding `keys`.
    public init(_ keys: JWKSet) {
        self.state = Mutex((keys, 0))
    }

    /// The keys now.
    public var keys: JWKSet { self.state.withLock { $0.keys } }

    /// The keys now and their generation.
    var current: (keys: JWKSet, generation: UInt64) { self.state.withLock { $0 } }

    /// Replaces the keys.
    public func replace(with keys: JWKSet) {
        self.state.withLock { $0 = (keys, $0.generation + 1) }
    }

    /// Calls `handler` with the key id of every token that names a key the ring lacks (the identity provider may
    /// have published a new key); it must return at once.
    public func onUnknownKeyID(_ handler: @escaping @Sendable (String) -> Void) {
        self.unknownKeyHandler.withLock { $0 = handler }
    }

    /// A token named a key the ring lacks.
    func unknownKeyID(_ keyID: String) {
        self.unknownKeyHandler.withLock { $0 }?(keyID)
    }
}
