internal import ChatDomain
internal import Synchronization

/// A wake-up flag with one waiter: `signal()` sets it, `wait(timeout:)` returns when it is set (clearing it) or when
/// the timeout passes. A signal sent while nobody waits is kept for the next wait, so none is lost between a
/// reader's query and its next wait.
///
/// A wait is one suspended continuation: its timeout is kept by the process-wide `DeadlineTimer`, not by a sleeping
/// task of its own (a task group with a sleeper per wait cost every idle stream two child tasks and a timer).
final class LiveSignal: Sendable {
    private struct State {
        var signaled = false
        var waiter: CheckedContinuation<Void, Never>?
        /// Every wait gets the next number; the timer and cancellation end only the wait they were meant for.
        var generation: UInt64 = 0
        /// The wait whose time ran out or that was cancelled (it may not have suspended yet).
        var ended: UInt64 = 0
    }

    private let state = Mutex(State())
    private let timer: DeadlineTimer

    /// Creates a signal whose waits time out through `timer`.
    init(timer: DeadlineTimer = .shared) {
        self.timer = timer
    }

    /// Wakes the waiter, or the next one.
    func signal() {
        let waiter = self.state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.signaled = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// Waits for a signal for at most `timeout` (give or take the timer's resolution).
    ///
    /// - Returns: true when signaled (the flag is cleared), false when the timeout passed or the task was cancelled.
    func wait(timeout: Duration) async -> Bool {
        if self.takeSignal() { return true }
        guard timeout > .zero, !Task.isCancelled else { return false }
        let generation = self.state.withLock { state -> UInt64 in
            state.generation &+= 1
            return state.generation
        }
        self.timer.schedule(self, generation: generation, at: .now + timeout)
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = self.state.withLock { state -> Bool in
                    if state.signaled || state.ended == generation { return true }
                    state.waiter = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            self.end(generation: generation)
        }
        return self.takeSignal()
    }

    /// Ends wait number `generation` without a signal (its time ran out, or its task was cancelled); a later wait is
    /// not affected.
    func end(generation: UInt64) {
        let waiter = self.state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard state.generation == generation else { return nil }
            state.ended = generation
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    private func takeSignal() -> Bool {
        self.state.withLock { state in
            defer { state.signaled = false }
            return state.signaled
        }
    }
}

/// The timeouts of every `LiveSignal` wait in the process: a min-heap of deadlines with at most one entry per signal
/// (a new wait moves its signal's entry), and one task that ticks while the heap is not empty and ends the waits
/// whose deadline passed. Memory per waiting stream: one heap entry.
final class DeadlineTimer: Sendable {
    static let shared = DeadlineTimer(resolution: .milliseconds(20))

    private struct Entry {
        var deadline: ContinuousClock.Instant
        var generation: UInt64
        var signal: LiveSignal
    }

    private struct State {
        var heap: [Entry] = []
        /// Where each signal's entry is in the heap.
        var index: [ObjectIdentifier: Int] = [:]
        var ticking = false

        mutating func swap(_ a: Int, _ b: Int) {
            self.heap.swapAt(a, b)
            self.index[ObjectIdentifier(self.heap[a].signal)] = a
            self.index[ObjectIdentifier(self.heap[b].signal)] = b
        }

        mutating func siftUp(_ start: Int) {
            var child = start
            while child > 0 {
                let parent = (child - 1) / 2
                guard self.heap[child].deadline < self.heap[parent].deadline else { return }
                self.swap(child, parent)
                child = parent
            }
        }

        mutating func siftDown(_ start: Int) {
            var parent = start
            while true {
                let left = 2 * parent + 1
                let right = left + 1
                var smallest = parent
                if left < self.heap.count && self.heap[left].deadline < self.heap[smallest].deadline { smallest = left }
                if right < self.heap.count && self.heap[right].deadline < self.heap[smallest].deadline {
                    smallest = right
                }
                if smallest == parent { return }
                self.swap(parent, smallest)
                parent = smallest
            }
        }

        mutating func removeFirst() -> Entry {
            self.swap(0, self.heap.count - 1)
            let first = self.heap.removeLast()
            self.index[ObjectIdentifier(first.signal)] = nil
            if !self.heap.isEmpty { self.siftDown(0) }
            return first
        }
    }

    private let resolution: Duration
    private let state = Mutex(State())

    init(resolution: Duration) {
        self.resolution = resolution
    }

    /// Ends wait `generation` of `signal` at `deadline` (unless it ended before); replaces the signal's earlier wait.
    func schedule(_ signal: LiveSignal, generation: UInt64, at deadline: ContinuousClock.Instant) {
        let start = self.state.withLock { state -> Bool in
            let entry = Entry(deadline: deadline, generation: generation, signal: signal)
            if let position = state.index[ObjectIdentifier(signal)] {
                state.heap[position] = entry
                state.siftUp(position)
                state.siftDown(state.index[ObjectIdentifier(signal)] ?? position)
            } else {
                state.heap.append(entry)
                state.index[ObjectIdentifier(signal)] = state.heap.count - 1
                state.siftUp(state.heap.count - 1)
            }
            defer { state.ticking = true }
            return !state.ticking
        }
        if start {
            Task.detached { [self] in await self.tick() }
        }
    }

    /// Signals with a wait scheduled (for tests).
    var pending: Int { self.state.withLock { $0.heap.count } }

    private func tick() async {
        while true {
            try? await Task.sleep(for: self.resolution)
            let now = ContinuousClock.now
            let (due, more) = self.state.withLock { state -> ([Entry], Bool) in
                var due: [Entry] = []
                while let first = state.heap.first, first.deadline <= now { due.append(state.removeFirst()) }
                if state.heap.isEmpty { state.ticking = false }
                return (due, !state.heap.isEmpty)
            }
            for entry in due { entry.signal.end(generation: entry.generation) }
            if !more { return }
        }
    }
}
