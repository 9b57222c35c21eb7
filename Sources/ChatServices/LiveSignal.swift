internal import Synchronization

/// A wake-up flag with one waiter: `signal()` sets it, `wait(timeout:)` returns when it is set (clearing it) or when
/// the timeout passes. A signal sent while nobody waits is kept for the next wait, so none is lost between a
/// reader's query and its next wait.
final class LiveSignal: Sendable {
    private struct State {
        var signaled = false
        var waiter: CheckedContinuation<Void, Never>?
        var waitCancelled = false
    }

    private let state = Mutex(State())

    /// Wakes the waiter, or the next one.
    func signal() {
        let waiter = self.state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.signaled = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// Waits for a signal for at most `timeout`.
    ///
    /// - Returns: true when signaled (the flag is cleared), false when the timeout passed or the task was cancelled.
    func wait(timeout: Duration) async -> Bool {
        if self.takeSignal() { return true }
        self.state.withLock { $0.waitCancelled = false }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.waitForSignal() }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
        }
        return self.takeSignal()
    }

    private func takeSignal() -> Bool {
        self.state.withLock { state in
            defer { state.signaled = false }
            return state.signaled
        }
    }

    private func waitForSignal() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = self.state.withLock { state -> Bool in
                    if state.signaled || state.waitCancelled { return true }
                    state.waiter = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let waiter = self.state.withLock { state -> CheckedContinuation<Void, Never>? in
                state.waitCancelled = true
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume()
        }
    }
}
