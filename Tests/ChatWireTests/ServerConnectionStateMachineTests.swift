import NIOCore
import Testing

@testable import ChatWire

typealias Machine = ServerConnectionStateMachine

let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000_000)

/// A machine past the SETTINGS exchange.
func activeMachine(
    _ configuration: Machine.Configuration = .init(),
    peer: [Setting] = ChatSettings.defaults.entries
) -> Machine {
    var machine = Machine(configuration: configuration, now: t0)
    _ = machine.frameReceived(.settings(peer), now: t0)
    return machine
}

func header(_ size: Int = 4) -> ByteBuffer {
    ByteBuffer(repeating: 0x41, count: size)
}

func isGoAway(_ action: Machine.Action, _ code: ErrorCode) -> Bool {
    guard case .closeConnection(let frames) = action, case .goAway(_, let sent, _)? = frames.last else { return false }
    return sent == code
}

@Suite("Server connection state machine")
struct ServerConnectionStateMachineTests {
    // MARK: Start

    @Test("the server's first frame is its SETTINGS")
    func initialFrames() {
        let machine = Machine(now: t0)
        #expect(machine.initialFrames == [.settings(ChatSettings.server.entries)])
    }

    @Test("the client's SETTINGS is acknowledged and applied")
    func settingsAcknowledged() {
        var machine = Machine(now: t0)
        var peer = ChatSettings.defaults
        peer.initialWindowSize = 1234
        #expect(machine.frameReceived(.settings(peer.entries), now: t0) == .send([.settingsAck]))
        #expect(machine.peer.initialWindowSize == 1234)
    }

    @Test("a first frame other than SETTINGS is a connection error")
    func firstFrameMustBeSettings() {
        var machine = Machine(now: t0)
        #expect(isGoAway(machine.frameReceived(.headers(stream: 1, payload: header()), now: t0), .protocolError))
        #expect(machine.isClosed)
    }

    @Test("a second SETTINGS is a connection error")
    func settingsTwice() {
        var machine = activeMachine()
        #expect(isGoAway(machine.frameReceived(.settings([]), now: t0), .protocolError))
    }

    @Test("out-of-range settings are a connection error")
    func badSettings() {
        var machine = Machine(now: t0)
        let action = machine.frameReceived(.settings([Setting(id: ChatSettings.ID.maxFrameSize, value: 1)]), now: t0)
        #expect(isGoAway(action, .protocolError))
    }

    // MARK: Streams

    @Test("HEADERS on a new odd id opens a stream")
    func openStream() {
        var machine = activeMachine()
        #expect(
            machine.frameReceived(.headers(stream: 1, payload: header()), now: t0) == .openStream(1, header: header())
        )
        #expect(machine.openStreams == 1)
        #expect(machine.lastStreamID == 1)
    }

    @Test("an even stream id is a connection error")
    func evenStreamID() {
        var machine = activeMachine()
        #expect(isGoAway(machine.frameReceived(.headers(stream: 2, payload: header()), now: t0), .protocolError))
    }

    @Test("reusing or going back to an older stream id is a connection error")
    func streamIDReuse() {
        var machine = activeMachine()
        _ = machine.frameReceived(.headers(stream: 5, payload: header()), now: t0)
        _ = machine.streamClosed(5)
        #expect(isGoAway(machine.frameReceived(.headers(stream: 5, payload: header()), now: t0), .protocolError))
    }

    @Test("streams beyond MAX_CONCURRENT_STREAMS are refused, not processed")
    func concurrencyLimit() {
        var configuration = Machine.Configuration()
        configuration.local.maxConcurrentStreams = 2
        var machine = activeMachine(configuration)
        _ = machine.frameReceived(.headers(stream: 1, payload: header()), now: t0)
        _ = machine.frameReceived(.headers(stream: 3, payload: header()), now: t0)
        #expect(
            machine.frameReceived(.headers(stream: 5, payload: header()), now: t0)
                == .send([.cancel(stream: 5, code: .refusedStream)])
        )
    }

    @Test("a cancelled stream counts against the limit until its handler has finished")
    func cancelledStreamsStillCount() {
        var configuration = Machine.Configuration()
        configuration.local.maxConcurrentStreams = 1
        var machine = activeMachine(configuration)
        _ = machine.frameReceived(.headers(stream: 1, payload: header()), now: t0)
        #expect(machine.frameReceived(.cancel(stream: 1, code: .cancel), now: t0) == .cancelStream(1, send: []))
        // The handler of stream 1 is still running: stream 3 is refused.
        #expect(
            machine.frameReceived(.headers(stream: 3, payload: header()), now: t0)
                == .send([.cancel(stream: 3, code: .refusedStream)])
        )
        #expect(machine.streamClosed(1) == .none)
        #expect(
            machine.frameReceived(.headers(stream: 5, payload: header()), now: t0) == .openStream(5, header: header())
        )
    }

    @Test("a call header over MAX_HEADER_SIZE is rejected as a stream error")
    func headerTooLarge() {
        var configuration = Machine.Configuration()
        configuration.local.maxHeaderSize = 1024
        var machine = activeMachine(configuration)
        guard case .rejectStream(1, _) = machine.frameReceived(.headers(stream: 1, payload: header(1025)), now: t0)
        else {
            Issue.record("expected rejectStream")
            return
        }
        // The connection goes on.
        #expect(
            machine.frameReceived(.headers(stream: 3, payload: header()), now: t0) == .openStream(3, header: header())
        )
    }

    @Test("request DATA is delivered, with END_STREAM")
    func requestData() {
        var machine = activeMachine()
        _ = machine.frameReceived(.headers(stream: 1, payload: header()), now: t0)
        let payload = ByteBuffer(bytes: [0, 0, 0, 0, 0])
        #expect(
            machine.frameReceived(.data(stream: 1, payload: payload, endStream: true), now: t0)
                == .streamData(1, payload, endStream: true, send: [])
        )
    }

    @Test("DATA after END_STREAM cancels the stream with STREAM_CLOSED")
    func dataAfterEndStream() {
        var machine = activeMachine()
        _ = machine.frameReceived(.headers(stream: 1, payload: header()), now: t0)
        _ = machine.frameReceived(.data(stream: 1, payload: ByteBuffer(), endStream: true), now: t0)
        #expect(
            machine.frameReceived(.data(stream: 1, payload: ByteBuffer(), endStream: false), now: t0)
                == .cancelStream(1, send: [.cancel(stream: 1, code: .streamClosed)])
        )
    }

    @Test("DATA on a stream that was never opened is a connection error; on an ended one it is ignored")
    func dataOnUnknownStreams() {
        var machine = activeMachine()
        _ = machine.frameReceived(.headers(stream: 1, payload: header()), now: t0)
        _ = machine.streamClosed(1)
        #expect(machine.frameReceived(.data(stream: 1, payload: ByteBuffer(), endStream: false), now: t0) == .none)
        #expect(
            isGoAway(
                machine.frameReceived(.data(stream: 9, payload: ByteBuffer(), endStream: false), now: t0),
                .protocolError
            )
        )
    }

    @Test("TRAILERS from a client is a connection error")
    func trailersFromClient() {
        var machine = activeMachine()
        #expect(isGoAway(machine.frameReceived(.trailers(stream: 1, payload: ByteBuffer()), now: t0), .protocolError))
    }

    // MARK: Flow control

    @Test("DATA beyond the stream window is FLOW_CONTROL_ERROR")
    func streamWindowExceeded() {
        var configuration = Machine.Configuration()
        configuration.local.initialWindowSize = 10
        var machine = activeMachine(configuration)
        _ = machine.frameReceived(.headers(stream: 1, payload: header()), now: t0)
        _ = machine.frameReceived(
            .data(stream: 1, payload: ByteBuffer(repeating: 0, count: 10), endStream: false),
            now: t0
        )
        let action = machine.frameReceived(
            .data(stream: 1, payload: ByteBuffer(repeating: 0, count: 1), endStream: false),
            now: t0
        )
        #expect(isGoAway(action, .flowControlError))
    }

    @Test("the application's consumption returns stream credit")
    func streamCreditReturned() {
        var configuration = Machine.Configuration()
        configuration.local.initialWindowSize = 10
        var machine = activeMachine(configuration)
        _ = machine.frameReceived(.headers(stream: 1, payload: header()), now: t0)
        _ = machine.frameReceived(
            .data(stream: 1, payload: ByteBuffer(repeating: 0, count: 10), endStream: false),
            now: t0
        )
        #expect(machine.requestConsumed(1, bytes: 10) == .send([.windowUpdate(stream: 1, increment: 10)]))
        guard
            case .streamData = machine.frameReceived(
                .data(stream: 1, payload: ByteBuffer(repeating: 0, count: 10), endStream: true),
                now: t0
            )
        else {
            Issue.record("credit was not returned")
            return
        }
    }

    @Test("connection credit returns once half the connection window was read, whatever the streams do")
    func connectionCredit() {
        var configuration = Machine.Configuration()
        configuration.local.connectionWindow = 100_000
        var machine = activeMachine(configuration)
        _ = machine.frameReceived(.headers(stream: 1, payload: header()), now: t0)
        let first = machine.frameReceived(
            .data(stream: 1, payload: ByteBuffer(repeating: 0, count: 40_000), endStream: false),
            now: t0
        )
        #expect(first == .streamData(1, ByteBuffer(repeating: 0, count: 40_000), endStream: false, send: []))
        let second = machine.frameReceived(
            .data(stream: 1, payload: ByteBuffer(repeating: 0, count: 10_000), endStream: false),
            now: t0
        )
        #expect(
            second
                == .streamData(
                    1,
                    ByteBuffer(repeating: 0, count: 10_000),
                    endStream: false,
                    send: [.windowUpdate(stream: 0, increment: 50_000)]
                )
        )
    }

    @Test("DATA beyond the connection window is FLOW_CONTROL_ERROR")
    func connectionWindowExceeded() {
        var configuration = Machine.Configuration()
        configuration.local.connectionWindow = 65_535
        configuration.local.initialWindowSize = 1 << 20
        var machine = activeMachine(configuration)
        _ = machine.frameReceived(.headers(stream: 1, payload: header()), now: t0)
        _ = machine.frameReceived(.headers(stream: 3, payload: header()), now: t0)
        // Half the window triggers credit; without it being honoured by the test, push past the window at once.
        let action = machine.frameReceived(
            .data(stream: 3, payload: ByteBuffer(repeating: 0, count: 65_536), endStream: false),
            now: t0
        )
        #expect(isGoAway(action, .flowControlError))
    }

    @Test("send capacity is the smaller of the stream and connection windows, and WINDOW_UPDATE reopens it")
    func sendWindowExhaustion() {
        var peer = ChatSettings.defaults
        peer.initialWindowSize = 100
        var machine = activeMachine(peer: peer.entries)
        _ = machine.frameReceived(.headers(stream: 1, payload: header()), now: t0)
        #expect(machine.sendCapacity(1) == 100)
        machine.dataSent(1, bytes: 100)
        #expect(machine.sendCapacity(1) == 0)
        #expect(machine.frameReceived(.windowUpdate(stream: 1, increment: 50), now: t0) == .windowOpened(1))
        #expect(machine.sendCapacity(1) == 50)
        #expect(machine.frameReceived(.windowUpdate(stream: 0, increment: 1), now: t0) == .windowOpened(nil))
        #expect(machine.sendCapacity(99) == 0)
    }

    @Test("a window pushed over 2^31-1 is FLOW_CONTROL_ERROR")
    func windowOverflow() {
        var machine = activeMachine()
        _ = machine.frameReceived(.headers(stream: 1, payload: header()), now: t0)
        let action = machine.frameReceived(.windowUpdate(stream: 1, increment: 0x7FFF_FFFF), now: t0)
        #expect(isGoAway(action, .flowControlError))
    }

    // MARK: Liveness and floods

    @Test("a PING is answered with its payload")
    func pingAnswered() {
        var machine = activeMachine()
        #expect(
            machine.frameReceived(.ping(payload: 77, ack: false), now: t0) == .send([.ping(payload: 77, ack: true)])
        )
    }

    @Test("pings faster than the advertised minimum earn strikes; the third closes the connection")
    func pingFlood() {
        var machine = activeMachine()
        var now = t0
        var actions: [Machine.Action] = []
        for _ in 0..<4 {
            actions.append(machine.frameReceived(.ping(payload: 1, ack: false), now: now))
            now = now + .milliseconds(100)
        }
        #expect(actions[0] == .send([.ping(payload: 1, ack: true)]))
        #expect(actions[2] == .send([.ping(payload: 1, ack: true)]))
        guard case .closeConnection(let frames) = actions[3] else {
            Issue.record("a flood of pings did not close the connection")
            return
        }
        #expect(frames == [.goAway(lastStream: 0, code: .enhanceYourCalm, debug: "too_many_pings")])
    }

    @Test("pings at the advertised interval are never strikes")
    func politePings() {
        var machine = activeMachine()
        var now = t0
        for _ in 0..<50 {
            #expect(
                machine.frameReceived(.ping(payload: 1, ack: false), now: now) == .send([.ping(payload: 1, ack: true)])
            )
            now = now + .seconds(10)
        }
    }

    @Test("a flood of open-and-cancel closes the connection with ENHANCE_YOUR_CALM")
    func cancelFlood() {
        var configuration = Machine.Configuration()
        configuration.cancelsPerSecondAllowed = 10
        var machine = activeMachine(configuration)
        var last: Machine.Action = .none
        var stream: StreamID = 1
        for _ in 0..<11 {
            _ = machine.frameReceived(.headers(stream: stream, payload: header()), now: t0)
            last = machine.frameReceived(.cancel(stream: stream, code: .cancel), now: t0)
            _ = machine.streamClosed(stream)
            stream += 2
        }
        #expect(isGoAway(last, .enhanceYourCalm))
    }

    @Test("keepalive: a silent connection is pinged, and closed when the ACK does not come")
    func keepalive() {
        var machine = activeMachine()
        #expect(machine.timerFired(now: t0 + .seconds(30)) == .none)
        #expect(
            machine.timerFired(now: t0 + .seconds(60))
                == .send([.ping(payload: Machine.keepalivePingPayload, ack: false)])
        )
        #expect(machine.timerFired(now: t0 + .seconds(70)) == .none)
        guard case .closeConnection = machine.timerFired(now: t0 + .seconds(80)) else {
            Issue.record("no close after the keepalive timeout")
            return
        }
    }

    @Test("keepalive: an answered ping keeps the connection")
    func keepaliveAnswered() {
        var machine = activeMachine()
        _ = machine.timerFired(now: t0 + .seconds(60))
        _ = machine.frameReceived(.ping(payload: Machine.keepalivePingPayload, ack: true), now: t0 + .seconds(61))
        #expect(machine.timerFired(now: t0 + .seconds(90)) == .none)
        #expect(!machine.isClosed)
    }

    // MARK: Drain

    @Test("drain: GOAWAY(max) and a PING; streams opened meanwhile are still accepted")
    func drainFirstPhase() {
        var machine = activeMachine()
        _ = machine.frameReceived(.headers(stream: 1, payload: header()), now: t0)
        #expect(
            machine.drainRequested()
                == .send([
                    .goAway(lastStream: WireConstants.maxStreamID, code: .noError, debug: "draining"),
                    .ping(payload: Machine.drainPingPayload, ack: false),
                ])
        )
        #expect(
            machine.frameReceived(.headers(stream: 3, payload: header()), now: t0) == .openStream(3, header: header())
        )
    }

    @Test("drain: after the PING's ACK, GOAWAY names the last stream; later streams are refused, not processed")
    func drainSecondPhase() {
        var machine = activeMachine()
        _ = machine.frameReceived(.headers(stream: 1, payload: header()), now: t0)
        _ = machine.drainRequested()
        _ = machine.frameReceived(.headers(stream: 3, payload: header()), now: t0)
        #expect(
            machine.frameReceived(.ping(payload: Machine.drainPingPayload, ack: true), now: t0)
                == .send([.goAway(lastStream: 3, code: .noError, debug: "draining")])
        )
        #expect(
            machine.frameReceived(.headers(stream: 5, payload: header()), now: t0)
                == .send([.cancel(stream: 5, code: .refusedStream)])
        )
        // In-flight calls finish; the last one closes the connection.
        #expect(machine.streamClosed(1) == .none)
        #expect(machine.streamClosed(3) == .closeConnection([]))
    }

    @Test("drain with no calls in flight closes at once, GOAWAY naming the last stream")
    func drainIdle() {
        var machine = activeMachine()
        _ = machine.frameReceived(.headers(stream: 1, payload: header()), now: t0)
        _ = machine.streamClosed(1)
        #expect(
            machine.drainRequested() == .closeConnection([.goAway(lastStream: 1, code: .noError, debug: "draining")])
        )
        #expect(machine.isClosed)
    }

    @Test("idle timeout: no call for the limit closes with GOAWAY idle; an open call keeps it")
    func idleTimeout() {
        var configuration = Machine.Configuration()
        configuration.idleTimeout = .seconds(10)
        var machine = activeMachine(configuration)
        #expect(machine.timerFired(now: t0 + .seconds(5)) == .none)
        _ = machine.frameReceived(.headers(stream: 1, payload: header()), now: t0 + .seconds(5))
        #expect(machine.timerFired(now: t0 + .seconds(40)) != .closeConnection([]))
        #expect(!machine.isClosed)
        _ = machine.streamClosed(1, now: t0 + .seconds(41))
        #expect(machine.timerFired(now: t0 + .seconds(50)) == .none)
        #expect(
            machine.timerFired(now: t0 + .seconds(51))
                == .closeConnection([.goAway(lastStream: 1, code: .noError, debug: "idle")])
        )
    }

    @Test("idle timeout: the clock starts when the client's SETTINGS arrive, not when the connection was accepted")
    func idleFromSettings() {
        var configuration = Machine.Configuration()
        configuration.idleTimeout = .seconds(10)
        var machine = Machine(configuration: configuration, now: t0)
        // The TLS handshake and the preface took 9 s (a loaded machine).
        _ = machine.frameReceived(.settings([]), now: t0 + .seconds(9))
        #expect(machine.timerFired(now: t0 + .seconds(12)) == .none, "idle only 3 s since the connection was set up")
        #expect(
            machine.timerFired(now: t0 + .seconds(19))
                == .closeConnection([.goAway(lastStream: 0, code: .noError, debug: "idle")])
        )
    }

    @Test("maximum age: reported once, when reached")
    func maxAge() {
        var configuration = Machine.Configuration()
        configuration.maxAge = .seconds(30)
        var machine = activeMachine(configuration)
        _ = machine.frameReceived(.headers(stream: 1, payload: header()), now: t0)
        #expect(machine.timerFired(now: t0 + .seconds(29)) == .none)
        #expect(machine.timerFired(now: t0 + .seconds(30)) == .maxAgeReached)
        #expect(machine.timerFired(now: t0 + .seconds(31)) == .none)
    }

    @Test("a framing error from the decoder closes with GOAWAY naming the last stream")
    func decoderError() {
        var machine = activeMachine()
        _ = machine.frameReceived(.headers(stream: 7, payload: header()), now: t0)
        #expect(
            machine.connectionError(WireError(.frameSizeError, "too big"))
                == .closeConnection([.goAway(lastStream: 7, code: .frameSizeError, debug: "too big")])
        )
    }
}
