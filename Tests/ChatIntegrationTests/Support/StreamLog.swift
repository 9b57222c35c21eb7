import ChatClient
import ChatProto
import ChatRPC
import ChatStoreTestSupport
import Synchronization

/// A live stream read by a task of its own: its events as they arrive, and how it ended.
final class StreamLog<Response: ProtoMessage>: Sendable {
    private struct State {
        var events: [Response] = []
        var ended = false
        var error: (any Error)?
    }

    private let state = Mutex(State())
    private let task = Mutex<Task<Void, Never>?>(nil)

    private init() {}

    /// Opens the stream (`open`) and starts reading it.
    static func start(_ open: @escaping @Sendable () async throws -> ResponseStream<Response>) -> StreamLog {
        let log = StreamLog()
        log.task.withLock { $0 = Task { await log.read(open) } }
        return log
    }

    private func read(_ open: @Sendable () async throws -> ResponseStream<Response>) async {
        do {
            for try await response in try await open() {
                self.state.withLock { $0.events.append(response) }
            }
            self.state.withLock { $0.ended = true }
        } catch {
            self.state.withLock {
                $0.error = error
                $0.ended = true
            }
        }
    }

    var events: [Response] { self.state.withLock { $0.events } }
    var ended: Bool { self.state.withLock { $0.ended } }
    var error: (any Error)? { self.state.withLock { $0.error } }
    var rpcError: RPCError? { self.error as? RPCError }

    /// Cancels the stream (the client goes away) and waits for the reader to stop.
    func cancel() async {
        let task = self.task.withLock { $0 }
        task?.cancel()
        await task?.value
    }
}

extension WatchEvent {
    /// The message of a message event.
    var messageEvent: MessageEvent? {
        if case .message(let event)? = self.event { return event }
        return nil
    }

    var isHeartbeat: Bool {
        if case .heartbeat? = self.event { return true }
        return false
    }

    var head: StreamHead? {
        if case .head(let head)? = self.event { return head }
        return nil
    }
}

extension RPCError {
    /// The resume position the server gave, when it gave one.
    var resumeInfo: ResumeInfo? {
        for detail in self.details {
            if case .resumeInfo(let info)? = detail.detail { return info }
        }
        return nil
    }
}
