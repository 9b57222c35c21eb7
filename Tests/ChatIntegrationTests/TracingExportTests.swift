import ChatClient
import ChatProto
import ChatRPCCore
import ChatStoreTestSupport
import ChatTestSupport
import Foundation
import NIOCore
import NIOPosix
import Testing

/// One span as the test's OTLP receiver (Tests/Tools/otlp_receiver.py) decoded it with the official OTLP protobuf
/// definitions.
private struct ReceivedSpan: Decodable {
    let service: String?
    let traceID: String
    let spanID: String
    let parentSpanID: String
    let name: String
    /// OTLP's SpanKind: 2 server, 3 client.
    let kind: Int
    /// OTLP's StatusCode: 0 unset, 1 ok, 2 error.
    let status: Int
    let attributes: [String: Attribute]

    enum Attribute: Decodable, Equatable {
        case string(String)
        case int(Int)
        case other

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let value = try? container.decode(Int.self) {
                self = .int(value)
            } else if let value = try? container.decode(String.self) {
                self = .string(value)
            } else {
                self = .other
            }
        }
    }

    enum CodingKeys: String, CodingKey {
        case service, name, kind, status, attributes
        case traceID = "trace_id"
        case spanID = "span_id"
        case parentSpanID = "parent_span_id"
    }
}

/// A real OTLP/HTTP receiver (Tests/Tools/otlp_receiver.py); what it decoded, line by line.
private struct OTLPReceiver {
    let tool: PythonTool
    var port: Int { self.tool.port }

    static func start() async throws -> OTLPReceiver {
        OTLPReceiver(tool: try await PythonTool.start("otlp_receiver.py"))
    }

    /// Every line after the port: spans, and any request it could not decode (as `error` lines).
    var lines: [String] { self.tool.lines }

    var spans: [ReceivedSpan] {
        self.lines.compactMap { try? JSONDecoder().decode(ReceivedSpan.self, from: Data($0.utf8)) }
    }
}

@Suite("Tracing exported over OTLP/HTTP to a real receiver", .serialized)
struct TracingExportTests {
    @Test("the caller's span is the server span's parent, a span per database round trip, the trace id in the logs")
    func exportedSpans() async throws {
        let receiver = try await OTLPReceiver.start()
        let chatd = try await ChatdProcess.start(arguments: [
            "--otlp-traces-endpoint", "http://127.0.0.1:\(receiver.port)/v1/traces",
        ])
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let client = try chatd.client(try await chatd.token(role: "tenant_admin"), group: group)
        try await chatd.waitServing(client)

        let traceID: [UInt8] = (0..<16).map { UInt8(0x40 + $0) }
        let callerSpan: [UInt8] = [0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xC7]
        let traced = CallOptions(trace: TraceContext(traceId: traceID, spanId: callerSpan, flags: 1))
        _ = try await client.placeLegalHold(
            PlaceLegalHoldRequest(learnerId: Fixture.learnerA1, reason: "traced"),
            options: traced
        )
        // SIGTERM: the exporter sends what it holds before chatd exits (no waiting for its 5 s batch delay).
        await client.close()
        kill(chatd.pid, SIGTERM)
        #expect(try await chatd.wait() == 0)
        try await group.shutdownGracefully()

        let traceHex = traceID.map { String(format: "%02x", $0) }.joined()
        #expect(!receiver.lines.contains { $0.contains("\"error\"") }, "\(receiver.lines)")
        let spans = receiver.spans.filter { $0.traceID == traceHex }
        let server = try #require(
            spans.first { $0.name == "chat.v1.PrivacyService/PlaceLegalHold" },
            "\(receiver.lines)"
        )
        #expect(server.service == "chatd")
        #expect(server.kind == 2)
        #expect(server.parentSpanID == "c0c1c2c3c4c5c6c7", "the caller's span is the parent")
        #expect(server.attributes["rpc.system"] == .string("chat"))
        #expect(server.attributes["rpc.method"] == .string("PlaceLegalHold"))
        #expect(server.attributes["rpc.grpc.status_code"] == .int(0))
        let database = spans.filter { $0.parentSpanID == server.spanID }
        #expect(!database.isEmpty, "\(receiver.lines)")
        for span in database {
            #expect(span.kind == 3 && span.attributes["db.system.name"] == .string("postgresql"), "\(span)")
        }
        // The hold's INSERT went in one of them (its transaction's statements, values bound, never in the text).
        #expect(database.contains { ($0.attributes["db.query.text"].map { "\($0)" } ?? "").contains("INSERT") })
        #expect(spans.allSatisfy { $0.spanID == server.spanID || $0.parentSpanID == server.spanID })

        // The call's log line carries the trace id.
        let log = try String(contentsOfFile: chatd.log, encoding: .utf8)
        let line = try #require(log.split(separator: "\n").first { $0.contains("legal hold placed") })
        #expect(line.contains("trace.id=\(traceHex)"), "\(line)")
    }
}
