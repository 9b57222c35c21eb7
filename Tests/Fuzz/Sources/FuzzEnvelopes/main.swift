// A stream's DATA payloads, cut at arbitrary points, through the message deframer.
import ChatWire
import FuzzDriver
import Glibc
import NIOCore

func fuzzEnvelopes(_ bytes: UnsafeRawBufferPointer) -> CInt {
    guard let first = bytes.first else { return 0 }
    var deframer = MessageDeframer(maxMessageSize: 1 << 16)
    let chunk = Int(first) + 1
    var rest = bytes.dropFirst()
    var total = 0
    while !rest.isEmpty {
        let piece = rest.prefix(chunk)
        rest = rest.dropFirst(chunk)
        deframer.append(ByteBuffer(bytes: piece))
        do {
            while let message = try deframer.nextMessage() { total += message.readableBytes }
        } catch {
            return 0
        }
        precondition(deframer.bufferedBytes <= (1 << 16) + 5 + chunk, "the deframer holds more than a message")
    }
    precondition(total <= bytes.count, "more message bytes than input")
    return 0
}

/// libFuzzer's entry for one input (its own `main` refers to it; ours runs its driver).
@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    fuzzEnvelopes(fuzzBytes(data, count))
}

exit(runFuzzer(testOneInput))
