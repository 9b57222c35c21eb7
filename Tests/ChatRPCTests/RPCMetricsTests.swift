import ChatProto
import Testing

@testable import ChatRPC

@Suite("RPC metric labels")
struct RPCMetricsTests {
    @Test("status codes are labelled as gRPC spells them")
    func codeLabels() {
        let labels = StatusCode.allCases.map(RPCMetrics.codeLabel)
        #expect(
            labels == [
                "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound", "AlreadyExists",
                "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange",
                "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated",
            ]
        )
        #expect(RPCMetrics.codeLabel(.unrecognized(99)) == "Unknown")
    }

    @Test("a path becomes its service and method; anything else is unknown")
    func pathLabels() {
        #expect(
            RPCMetrics.labels(path: "/chat.v1.ThreadService/CreateThread") == ("chat.v1.ThreadService", "CreateThread")
        )
        for junk in ["", "/", "CreateThread", "/a/b/c", "//x"] {
            #expect(RPCMetrics.labels(path: junk) == ("unknown", "unknown"), "\(junk)")
        }
    }
}
