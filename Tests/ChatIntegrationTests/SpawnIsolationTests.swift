import ChatTestSupport
import Foundation
import Testing

/// The tests run in parallel in one process, which holds their sockets while others spawn programs (pg_ctl, whose
/// postgres lives on; chatd; Python). A program that inherited a test's socket keeps its connection open after the
/// test closes it, and the test waits for an end that never comes.
@Suite("Spawned programs inherit no test's descriptors")
struct SpawnIsolationTests {
    @Test("a descriptor opened without close-on-exec is not in the spawned program; its output is")
    func inheritsOnlyOutput() async throws {
        let fd = open("/dev/null", O_RDONLY)
        try #require(fd > 2)
        defer { close(fd) }
        // sh's `test` looks at its own descriptors: status 0 when the descriptor is open in the program.
        #expect(try await runProgram("/bin/sh", ["-c", "test -e /proc/self/fd/1"]).status == 0)
        #expect(try await runProgram("/bin/sh", ["-c", "test -e /proc/self/fd/\(fd)"]).status == 1)
    }

    @Test("test sockets are close-on-exec")
    func socketsCloseOnExec() throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, length) == 0 && listen(listener, 1) == 0
                    && getsockname(listener, $0, &length) == 0
            }
        }
        try #require(bound)
        let fd = try connectTCP(port: Int(UInt16(bigEndian: address.sin_port)))
        defer { close(fd) }
        #expect(fcntl(fd, F_GETFD) & FD_CLOEXEC != 0)
    }
}
