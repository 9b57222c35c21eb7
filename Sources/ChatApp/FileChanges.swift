internal import Foundation

/// Calls `changed` with the files' new contents whenever any of them differs from what the previous check read,
/// checking every `interval` until the task is cancelled. The JWKS watcher and the TLS reloader both rotate by it.
func pollFileChanges(
    _ paths: [String],
    every interval: Duration,
    _ changed: ([Data?]) -> Void
) async throws {
    func read() -> [Data?] { paths.map { FileManager.default.contents(atPath: $0) } }
    var last = read()
    while !Task.isCancelled {
        try await Task.sleep(for: interval)
        let now = read()
        if now != last {
            last = now
            changed(now)
        }
    }
}
