// What client and server share (RPCError, ChatStatusConvertible, the TRAILERS encoding) lives in ChatRPCCore; the
// server runtime re-exports it, so that services and interceptors need only `import ChatRPC`.
@_exported public import ChatRPCCore
