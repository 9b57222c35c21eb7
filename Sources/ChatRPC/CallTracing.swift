internal import ChatDomain
public import ChatProto
public import Tracing

/// How calls are traced, when they are: the tracer that makes the spans, and how to read the trace id of a span's
/// context for the logs. With none configured (`ChatServer.Configuration.tracing` nil) a call makes no span and
/// pays nothing for tracing: the caller's trace id still goes into its log lines.
public struct CallTracing: Sendable {
    /// Makes the server span of every call and the database spans under it.
    public let tracer: any Tracer
    /// The trace id (32 lowercase hex digits) of a context holding a span of `tracer`'s, for the logs.
    public let traceID: @Sendable (ServiceContext) -> String?

    /// Creates a tracing configuration.
    public init(tracer: any Tracer, traceID: @escaping @Sendable (ServiceContext) -> String?) {
        self.tracer = tracer
        self.traceID = traceID
    }

    /// The context a call's server span starts in: the caller's span as remote parent (handed to the tracer as a
    /// W3C `traceparent`, which every tracer's propagator reads), or a new trace when the caller sent none.
    func parentContext(_ trace: CallTrace?) -> ServiceContext {
        var context = ServiceContext.topLevel
        if let trace {
            self.tracer.extract(["traceparent": trace.traceparent], into: &context, using: TraceparentExtractor())
        }
        return context
    }
}

/// The trace context of a call header, checked against the contract: a 16-byte trace id and an 8-byte span id,
/// neither all zero, and flags that fit the 8 bits of W3C trace-flags.
public struct CallTrace: Sendable, Hashable {
    /// The caller's trace id.
    public let traceID: [UInt8]
    /// The caller's span: the parent of the call's server span.
    public let spanID: [UInt8]
    /// W3C trace-flags (bit 0: sampled).
    public let flags: UInt8

    /// The header's trace context; nil when it has none.
    ///
    /// - Throws: `RPCError.invalidArgument` naming the field that breaks the contract.
    public init?(_ header: CallHeader) throws(RPCError) {
        guard let trace = header.trace else { return nil }
        guard trace.traceId.count == 16, trace.traceId.contains(where: { $0 != 0 }) else {
            throw RPCError.invalidArgument(field: "trace.trace_id", "exactly 16 bytes, not all zero")
        }
        guard trace.spanId.count == 8, trace.spanId.contains(where: { $0 != 0 }) else {
            throw RPCError.invalidArgument(field: "trace.span_id", "exactly 8 bytes, not all zero")
        }
        guard trace.flags <= 0xFF else {
            throw RPCError.invalidArgument(field: "trace.flags", "at most 0xff (W3C trace-flags)")
        }
        self.traceID = trace.traceId
        self.spanID = trace.spanId
        self.flags = UInt8(trace.flags)
    }

    /// The trace id as 32 lowercase hex digits, as logs and trace backends show it.
    public var traceIDHex: String { Hex.encode(self.traceID) }

    /// The W3C `traceparent` value: `00-<trace id>-<span id>-<flags>`.
    public var traceparent: String {
        "00-\(Hex.encode(self.traceID))-\(Hex.encode(self.spanID))-\(Hex.encode([self.flags]))"
    }
}

/// Reads the one `traceparent` entry `CallTracing.parentContext` hands the tracer.
private struct TraceparentExtractor: Extractor {
    func extract(key: String, from carrier: [String: String]) -> String? { carrier[key] }
}
