import ChatClient
import ChatProto
import ChatStoreTestSupport
import ChatTestSupport
import Foundation
import NIOCore
import NIOPosix
import Testing

/// libchat (clients/c) against the real chatd: built by its Makefile under AddressSanitizer and LeakSanitizer, its
/// test program (clients/c/tests/chat-test.c) run against this instance and against instances of its own that it
/// drains, kills and restarts; then the example, chat-send.
@Suite("The C client against chatd")
struct CClientTests {
    @Test(
        "libchat under ASan+LSan: unary calls, errors with details, deadlines and cancel, a slow consumer, eight threads on one connection, a large response, a token callback, drain and kill -9 mid-stream with resume, retries after RetryInfo, a reset mid-request without SIGPIPE; chat-send; installed and found with pkg-config"
    )
    func libchatAgainstChatd() async throws {
        let root = TestDatabase.repositoryRoot.appendingPathComponent("clients/c").path
        let build = FileManager.default.temporaryDirectory.appendingPathComponent("libchat-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: build) }
        let made = try await runProgram(
            "/usr/bin/make",
            ["-s", "-C", root, "-j2", "BUILD=\(build)", "SANITIZE=address", "CFLAGS=-O1 -g", "all"]
        )
        try #require(made.status == 0, "\(made.output)")

        let chatd = try await ChatdProcess.start(arguments: [
            "--rate-per-user", "100000", "--rate-per-tenant", "100000",
        ])
        let token = String(try await chatd.token(role: "tenant_admin", sub: "libchat").dropFirst("Bearer ".count))
        let tls = ProcessInfo.processInfo.environment["CHAT_TEST_TLS_DIR"] ?? ""
        // The tests start instances of their own with it (restarts, a rate limit).
        let argvFile = "\(build)/chatd.argv"
        try (chatd.baseArguments.joined(separator: "\n") + "\n").write(
            toFile: argvFile,
            atomically: true,
            encoding: .utf8
        )
        let environment = [
            "ASAN_OPTIONS=detect_leaks=1:abort_on_error=0", "LIBCHAT_TEST_ADDRESS=127.0.0.1:\(chatd.port)",
            "LIBCHAT_TEST_CA=\(tls)/ca.pem", "LIBCHAT_TEST_TOKEN=\(token)", "LIBCHAT_TEST_LEARNER=\(Fixture.learnerA1)",
            "LIBCHAT_TEST_CHATD=\(argvFile)",
        ]
        let run = try await runProgram("/usr/bin/env", environment + ["\(build)/chat-test"])
        #expect(run.status == 0, "\(run.output)")
        #expect(run.output.contains("11 passed, 0 failed"), "\(run.output)")
        #expect(!run.output.contains("LeakSanitizer"), "\(run.output)")
        print(run.output)

        // The example: a message sent, and what a bad one prints.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let client = try chatd.client("Bearer \(token)", group: group)
        let thread = try await client.createThread(
            CreateThreadRequest(learnerId: Fixture.learnerA1, title: "chat-send")
        )
        await client.close()
        try await group.shutdownGracefully()
        let threadID = try #require(thread.thread?.id)
        let send = ["/usr/bin/env", "CHAT_TOKEN=\(token)", "ASAN_OPTIONS=detect_leaks=1", "\(build)/chat-send"]
        let address = ["--address", "127.0.0.1:\(chatd.port)", "--ca", "\(tls)/ca.pem"]
        let sent = try await runProgram(send[0], Array(send.dropFirst()) + address + ["send", threadID, "from C"])
        #expect(sent.status == 0 && sent.output.contains("seq 1"), "\(sent.output)")
        let empty = try await runProgram(send[0], Array(send.dropFirst()) + address + ["send", threadID, ""])
        #expect(
            empty.status == 1 && empty.output.contains("INVALID_ARGUMENT") && empty.output.contains("body:"),
            "\(empty.output)"
        )

        // Installed (a release build), found with pkg-config, linked against the shared library.
        let prefix = "\(build)/prefix"
        let installed = try await runProgram(
            "/usr/bin/make",
            ["-s", "-C", root, "-j2", "BUILD=\(build)/release", "PREFIX=\(prefix)", "install"]
        )
        try #require(installed.status == 0, "\(installed.output)")
        let compiled = try await runProgram(
            "/bin/sh",
            [
                "-c",
                "cc -o \(build)/chat-send-shared \(root)/examples/chat-send.c "
                    + "$(PKG_CONFIG_PATH=\(prefix)/lib/pkgconfig pkg-config --cflags --libs libchat)",
            ]
        )
        try #require(compiled.status == 0, "\(compiled.output)")
        let shared = try await runProgram(
            "/usr/bin/env",
            ["LD_LIBRARY_PATH=\(prefix)/lib", "CHAT_TOKEN=\(token)", "\(build)/chat-send-shared"] + address
                + ["send", threadID, "through pkg-config"]
        )
        #expect(shared.status == 0 && shared.output.contains("seq 2"), "\(shared.output)")
        kill(chatd.pid, SIGTERM)
        #expect(try await chatd.wait() == 0)
    }
}
