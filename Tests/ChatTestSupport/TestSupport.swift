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

/// Adds "close every descriptor from 3 up" to `actions` (glibc's posix_spawn_file_actions_addclosefrom_np, 2.34
/// and later, which Swift's Glibc module does not declare). A spawned program must not inherit the sockets other
/// tests hold: pg_ctl's postgres lives on, and a socket it inherited stays open when its test closes it.
private func closeInheritedDescriptors(_ actions: inout posix_spawn_file_actions_t) {
    typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else {
        preconditionFailure("glibc 2.34 or later is required: posix_spawn_file_actions_addclosefrom_np")
    }
    let added = unsafeBitCast(symbol, to: AddCloseFrom.self)(&actions, 3)
    precondition(added == 0, "posix_spawn_file_actions_addclosefrom_np: \(added)")
}

/// Runs a program to completion with posix_spawn and waitpid (Foundation's `Process.waitUntilExit` can hang in
/// async tests) and returns its exit status and what it printed. Blocks the calling thread: from async code, use
/// `runProgram`. The program inherits no descriptor but its output (this process holds other tests' sockets).
public func runProgramBlocking(_ path: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let outputPath = FileManager.default.temporaryDirectory.appendingPathComponent("chat-run-\(UUID()).txt").path
    defer { try? FileManager.default.removeItem(atPath: outputPath) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    closeInheritedDescriptors(&actions)
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

/// Starts a program (`argv[0]` is its path) with its standard output and error in `log`, and returns its pid; the
/// caller waits for it. It inherits no descriptor but its output, as with `runProgramBlocking`.
public func spawnProgram(_ argv: [String], log: String) throws -> Int32 {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    closeInheritedDescriptors(&actions)
    var cArguments: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
    defer { cArguments.forEach { free($0) } }
    var pid: pid_t = 0
    let spawned = posix_spawn(&pid, argv[0], &actions, nil, &cArguments, environ)
    guard spawned == 0 else { throw POSIXError(POSIXErrorCode(rawValue: spawned) ?? .EINVAL) }
    return pid
}

/// A TCP connection to 127.0.0.1:`port` (a blocking socket the caller closes).
public func connectTCP(port: Int) throws -> Int32 {
    // Close-on-exec: a program another test spawns meanwhile (pg_ctl's postgres lives on) must not inherit the
    // socket, or closing it here would not end the connection.
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw POSIXError(.EMFILE) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
        }
    }
    guard connected else {
        close(fd)
        throw POSIXError(.ECONNREFUSED)
    }
    return fd
}

/// One HTTP/1.1 GET to 127.0.0.1 (`Connection: close`), read to the end: the status code and the body. Blocking
/// socket I/O, run off the cooperative pool. For the admin listener's endpoints.
public func httpGet(port: Int, _ path: String) async throws -> (status: Int, body: String) {
    try await offPool { try httpGetBlocking(port: port, path) }
}

/// `httpGet`, blocking the calling thread.
public func httpGetBlocking(port: Int, _ path: String) throws -> (status: Int, body: String) {
    try httpExchangeBlocking(port: port, "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
}

/// Sends `request` (a whole HTTP/1.1 request, as text) to 127.0.0.1 and reads the response to the end.
public func httpExchange(port: Int, _ request: String) async throws -> (status: Int, body: String) {
    try await offPool { try httpExchangeBlocking(port: port, request) }
}

/// `httpExchange`, blocking the calling thread.
public func httpExchangeBlocking(port: Int, _ request: String) throws -> (status: Int, body: String) {
    let fd = try connectTCP(port: port)
    defer { close(fd) }
    var timeout = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    let request = Array(request.utf8)
    guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == request.count else {
        throw POSIXError(.EPIPE)
    }
    var response: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if count <= 0 { break }
        response.append(contentsOf: chunk[0..<count])
    }
    let text = String(decoding: response, as: UTF8.self)
    guard let split = text.range(of: "\r\n\r\n"),
        let status = Int(text.split(separator: " ", maxSplits: 2).dropFirst().first ?? "")
    else {
        throw POSIXError(.EBADMSG)
    }
    let headers = text[..<split.lowerBound].lowercased()
    let body = String(text[split.upperBound...])
    return (status, headers.contains("transfer-encoding: chunked") ? dechunk(body) : body)
}

/// The body of a chunked HTTP/1.1 response: each chunk's size line dropped.
private func dechunk(_ text: String) -> String {
    var rest = Substring(text)
    var body = ""
    while let lineEnd = rest.range(of: "\r\n"), let size = Int(rest[..<lineEnd.lowerBound], radix: 16), size > 0 {
        let start = lineEnd.upperBound
        let chunk = rest[start...].utf8.prefix(size)
        body += String(decoding: chunk, as: UTF8.self)
        rest = Substring(rest[start...].utf8.dropFirst(size + 2)) ?? ""
    }
    return body
}
