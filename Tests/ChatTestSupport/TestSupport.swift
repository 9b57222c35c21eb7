internal import Foundation

/// A small deterministic generator for reproducible random tests.
public struct SplitMix64: Sendable {
    private var state: UInt64

    /// Creates a generator.
    public init(seed: UInt64) {
        self.state = seed
    }

    /// The next value.
    public mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Runs a program to completion with posix_spawn and waitpid (Foundation's `Process.waitUntilExit` can hang in
/// async tests) and returns its exit status and what it printed. Blocks the calling thread: from async code, use
/// `runProgram`.
public func runProgramBlocking(_ path: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let outputPath = FileManager.default.temporaryDirectory.appendingPathComponent("chat-run-\(UUID()).txt").path
    defer { try? FileManager.default.removeItem(atPath: outputPath) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    var argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid: pid_t = 0
    let spawned = posix_spawn(&pid, path, &actions, nil, &argv, environ)
    guard spawned == 0 else { throw POSIXError(POSIXErrorCode(rawValue: spawned) ?? .EINVAL) }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 {
        guard errno == EINTR else { throw POSIXError(.ECHILD) }
    }
    let output = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
    return ((status & 0x7F) == 0 ? (status >> 8) & 0xFF : -1, output)
}

/// Runs a program to completion off the cooperative pool (waiting blocks a thread, and an in-process server's
/// handlers need the pool's few threads).
public func runProgram(_ path: String, _ arguments: [String]) async throws -> (status: Int32, output: String) {
    try await offPool { try runProgramBlocking(path, arguments) }
}

/// Runs blocking work on a Dispatch thread, never on the cooperative pool.
public func offPool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(with: Result { try work() }) }
    }
}

/// Polls `condition` until it holds, for at most `limit` (a loaded CI machine is slow; it returns at once when met).
public func waitUntil(
    _ what: String = "condition",
    limit: Duration = .seconds(20),
    _ condition: @Sendable () -> Bool
) async throws {
    let clock = ContinuousClock()
    let deadline = clock.now + limit
    while !condition() {
        guard clock.now < deadline else { throw WaitTimeout(what: what) }
        try await Task.sleep(for: .milliseconds(10))
    }
}

/// `waitUntil` gave up.
public struct WaitTimeout: Error, CustomStringConvertible {
    public let what: String
    public var description: String { "timed out waiting for \(self.what)" }
}

/// As `waitUntil`, for a condition that must await (a query, say).
public func waitUntil(
    _ what: String = "condition",
    limit: Duration = .seconds(20),
    async condition: @Sendable () async throws -> Bool
) async throws {
    let clock = ContinuousClock()
    let deadline = clock.now + limit
    while try await !condition() {
        guard clock.now < deadline else { throw WaitTimeout(what: what) }
        try await Task.sleep(for: .milliseconds(10))
    }
}
