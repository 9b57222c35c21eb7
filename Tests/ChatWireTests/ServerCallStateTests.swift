import ChatWire
import Testing

@Suite("Server call state")
struct ServerCallStateTests {
    @Test("a call closes only when its output is done and its handler has returned")
    func closesWhenBothSidesAreDone() {
        var state = ServerCallState()
        state.handlerStarted()
        let finished1 = state.finish()
        #expect(finished1)
        let finished2 = state.finish()
        #expect(!finished2, "TRAILERS are queued once")
        #expect(state.isFinished && !state.canClose)
        state.outputDone()
        #expect(!state.canClose, "the handler still runs: its slot stays taken")
        state.handlerReturned()
        #expect(state.canClose)
    }

    @Test("a call refused before its handler ran closes once its TRAILERS are out")
    func refusedBeforeRunning() {
        var state = ServerCallState()
        let finished3 = state.finish()
        #expect(finished3)
        #expect(!state.canClose)
        state.outputDone()
        #expect(state.canClose && state.handler == .notStarted)
    }

    @Test("a peer's cancel ends the output at once; a drain marks the handler")
    func cancelAndDrain() {
        var state = ServerCallState()
        state.handlerStarted()
        state.drainCancelled()
        state.outputDone()
        #expect(state.isFinished && state.cancelledByDrain && !state.canClose)
        let finished4 = state.finish()
        #expect(!finished4, "no TRAILERS after the output is done")
        state.handlerReturned()
        #expect(state.canClose)
    }
}
