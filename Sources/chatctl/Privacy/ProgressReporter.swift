import ArgumentParser
import ChatClient
import ChatProto
import ChatRPC
import Foundation

/// Progress on standard error: a bar redrawn in place on a terminal, plain lines every few seconds otherwise (logs of
/// batch jobs).
final class ProgressReporter {
    private let terminal = isatty(STDERR_FILENO) == 1
    private var last = Date.distantPast
    private var drawn = false

    /// Shows `text`, with a bar when `fraction` is known.
    func update(_ text: String, fraction: Double? = nil) {
        let now = Date()
        guard now.timeIntervalSince(self.last) >= (self.terminal ? 0.1 : 5) else { return }
        self.last = now
        if self.terminal {
            var line = text
            if let fraction {
                let width = 30
                let filled = Int((min(1, max(0, fraction)) * Double(width)).rounded(.down))
                line =
                    "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
                    + "] \(Int(fraction * 100))%  " + text
            }
            FileHandle.standardError.write(Data("\r\u{1B}[K\(line)".utf8))
            self.drawn = true
        } else {
            FileHandle.standardError.write(Data("\(text)\n".utf8))
        }
    }

    /// Ends the progress display with a final line.
    func finish(_ text: String) {
        if self.terminal && self.drawn { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        self.drawn = false
        self.last = .distantPast
        FileHandle.standardError.write(Data("\(text)\n".utf8))
    }
}
