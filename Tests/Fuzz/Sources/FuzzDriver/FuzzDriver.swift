// Runs libFuzzer from a Swift executable's own entry point (SwiftPM renames an executable's `main`, so libFuzzer's
// cannot be used): LLVMFuzzerRunDriver is libFuzzer's public driver.

internal import CFuzzer

/// One fuzz input: bytes in, 0 out.
public typealias FuzzInput = @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt

/// Hands the command line to libFuzzer, which calls `input` for every input, and returns its exit code.
public func runFuzzer(_ input: FuzzInput) -> CInt {
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    return LLVMFuzzerRunDriver(&argc, &argv, input)
}

/// The input's bytes (an empty buffer for none).
public func fuzzBytes(_ data: UnsafePointer<UInt8>?, _ count: Int) -> UnsafeRawBufferPointer {
    guard let data, count > 0 else { return UnsafeRawBufferPointer(start: nil, count: 0) }
    return UnsafeRawBufferPointer(start: data, count: count)
}
