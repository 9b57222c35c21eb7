import Foundation
import Testing

@testable import ChatProto

@Suite("Cross-implementation: protobuf-c against Python's protobuf")
struct CrossImplementationTests {
    static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test("every fixture encoded by us decodes in Python to the same value and bytes, and the reverse")
    func crossCheck() throws {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("chat-crosscheck-\(getpid())")
        let swiftDir = work.appendingPathComponent("swift")
        let pythonDir = work.appendingPathComponent("python")
        try FileManager.default.createDirectory(at: swiftDir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }

        for fixture in Fixtures.all {
            let bytes = try fixture.value.serializedBytes()
            try Data(bytes).write(to: swiftDir.appendingPathComponent("\(fixture.protoName).\(fixture.seed).bin"))
        }

        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [
            Self.root.appendingPathComponent("scripts/protogen/crosscheck.py").path,
            Self.root.appendingPathComponent("Tests/ChatProtoTests/Resources/chat.desc").path,
            swiftDir.path,
            pythonDir.path,
        ]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let report = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "\(report)")
        #expect(report.contains("crosscheck: \(Fixtures.all.count) checked, 0 failed"), "\(report)")

        // The reverse: Python's encodings decode with protobuf-c into our fixtures.
        for fixture in Fixtures.all {
            let url = pythonDir.appendingPathComponent("\(fixture.protoName).\(fixture.seed).bin")
            let bytes = [UInt8](try Data(contentsOf: url))
            let decoded = try RoundTripTests.decode(like: fixture.value, bytes)
            #expect(decoded == fixture.value, "\(fixture.protoName) seed \(fixture.seed)")
        }
    }
}
