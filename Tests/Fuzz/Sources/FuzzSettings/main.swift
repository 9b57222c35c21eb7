// SETTINGS entries through the settings parser; accepted settings survive a round trip.
import ChatWire
import FuzzDriver
import Glibc

func fuzzSettings(_ bytes: UnsafeRawBufferPointer) -> CInt {
    var entries: [Setting] = []
    var index = 0
    while index + 6 <= bytes.count, entries.count < 16 {
        let id = UInt16(bytes[index]) << 8 | UInt16(bytes[index + 1])
        var value: UInt32 = 0
        for offset in 2..<6 { value = value << 8 | UInt32(bytes[index + offset]) }
        entries.append(Setting(id: id, value: value))
        index += 6
    }
    guard let settings = try? ChatSettings.received(entries) else { return 0 }
    precondition(settings.maxHeaderSize <= settings.maxFrameSize, "accepted MAX_HEADER_SIZE over MAX_FRAME_SIZE")
    precondition((try? ChatSettings.received(settings.entries)) == settings, "settings do not round-trip")
    return 0
}

/// libFuzzer's entry for one input (its own `main` refers to it; ours runs its driver).
@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    fuzzSettings(fuzzBytes(data, count))
}

exit(runFuzzer(testOneInput))
