internal import COpenSSL
internal import Glibc
internal import NIOCore

/// One TLS session over memory BIOs: ciphertext goes in with `feed`, plaintext comes out of `read`, and whatever
/// OpenSSL wants to send waits in `takeOutput`. It does no I/O itself (the shape of swift-nio-ssl's
/// `SSLConnection`); `TLSHandler` drives it.
final class TLSConnection {
    enum HandshakeResult {
        case complete
        case incomplete
        case failed(TLSError)
    }

    enum ReadResult {
        /// Plaintext was appended (possibly none); more needs ciphertext.
        case wantRead
        /// The peer sent close_notify.
        case closed
        case failed(TLSError)
    }

    private let ssl: OpaquePointer
    private let readBIO: OpaquePointer
    private let writeBIO: OpaquePointer
    let context: TLSContext

    init(context: TLSContext, serverName: String?) throws(TLSError) {
        guard let ssl = SSL_new(context.context) else {
            throw TLSError(.configuration, "SSL_new: \(TLSError.drainErrorQueue())")
        }
        guard let readBIO = BIO_new(BIO_s_mem()), let writeBIO = BIO_new(BIO_s_mem()) else {
            SSL_free(ssl)
            throw TLSError(.configuration, "BIO_new failed")
        }
        SSL_set_bio(ssl, readBIO, writeBIO)  // The SSL owns both BIOs from here on.
        self.ssl = ssl
        self.readBIO = readBIO
        self.writeBIO = writeBIO
        self.context = context
        switch context.configuration.role {
        case .server:
            SSL_set_accept_state(ssl)
        case .client:
            SSL_set_connect_state(ssl)
            if let serverName {
                if Self.isIPAddress(serverName) {
                    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), serverName)
                } else {
                    _ = chat_SSL_set_tlsext_host_name(ssl, serverName)
                    SSL_set1_host(ssl, serverName)
                }
            }
        }
    }

    deinit {
        SSL_free(self.ssl)
    }

    private static func isIPAddress(_ name: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, name, &v4) == 1 || inet_pton(AF_INET6, name, &v6) == 1
    }

    /// Hands ciphertext from the network to OpenSSL.
    func feed(_ bytes: ByteBuffer) {
        bytes.withUnsafeReadableBytes { buffer in
            guard let base = buffer.baseAddress, buffer.count > 0 else { return }
            _ = BIO_write(self.readBIO, base, Int32(buffer.count))
        }
    }

    /// Advances the handshake with what was fed so far.
    func handshake() -> HandshakeResult {
        ERR_clear_error()
        let result = SSL_do_handshake(self.ssl)
        if result == 1 { return .complete }
        switch SSL_get_error(self.ssl, result) {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            return .incomplete
        default:
            let verify = SSL_get_verify_result(self.ssl)
            var message = TLSError.drainErrorQueue()
            if verify != X509_V_OK {
                message += "; certificate verification: " + String(cString: X509_verify_cert_error_string(verify))
            }
            if message.contains("no application protocol") || message.contains("no_application_protocol") {
                return .failed(TLSError(.noApplicationProtocol, message))
            }
            return .failed(TLSError(.handshakeFailed, message))
        }
    }

    /// Decrypts everything available into `output`.
    func read(into output: inout ByteBuffer) -> ReadResult {
        while true {
            ERR_clear_error()
            output.reserveCapacity(minimumWritableBytes: 16 * 1024)
            let count = output.writeWithUnsafeMutableBytes(minimumWritableBytes: 16 * 1024) { buffer in
                Int(max(0, SSL_read(self.ssl, buffer.baseAddress, Int32(min(buffer.count, Int(Int32.max))))))
            }
            if count > 0 { continue }
            switch SSL_get_error(self.ssl, 0) {
            case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
                return .wantRead
            case SSL_ERROR_ZERO_RETURN:
                return .closed
            default:
                return .failed(TLSError(.failed, TLSError.drainErrorQueue()))
            }
        }
    }

    /// Encrypts plaintext; the ciphertext waits in `takeOutput`.
    func write(_ plaintext: ByteBuffer) -> TLSError? {
        var failure: TLSError?
        plaintext.withUnsafeReadableBytes { buffer in
            guard let base = buffer.baseAddress, buffer.count > 0 else { return }
            ERR_clear_error()
            // A memory BIO never returns WANT_WRITE: one call writes everything.
            if SSL_write(self.ssl, base, Int32(buffer.count)) <= 0 {
                failure = TLSError(.failed, TLSError.drainErrorQueue())
            }
        }
        return failure
    }

    /// Sends close_notify (into `takeOutput`).
    func shutdown() {
        ERR_clear_error()
        _ = SSL_shutdown(self.ssl)
        ERR_clear_error()
    }

    /// Ciphertext OpenSSL produced, to send to the peer; nil when there is none.
    func takeOutput(allocator: ByteBufferAllocator) -> ByteBuffer? {
        let pending = Int(BIO_ctrl_pending(self.writeBIO))
        guard pending > 0 else { return nil }
        var buffer = allocator.buffer(capacity: pending)
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: pending) { target in
            Int(max(0, BIO_read(self.writeBIO, target.baseAddress, Int32(pending))))
        }
        return buffer
    }

    /// The negotiated application protocol.
    var negotiatedProtocol: String? {
        var data: UnsafePointer<UInt8>?
        var length: UInt32 = 0
        SSL_get0_alpn_selected(self.ssl, &data, &length)
        guard let data, length > 0 else { return nil }
        return String(decoding: UnsafeBufferPointer(start: data, count: Int(length)), as: UTF8.self)
    }

    /// The verified peer certificate's subject common name (mTLS identity); nil without a verified certificate.
    var peerCommonName: String? {
        guard let certificate = SSL_get1_peer_certificate(self.ssl) else { return nil }
        defer { X509_free(certificate) }
        guard SSL_get_verify_result(self.ssl) == X509_V_OK, let subject = X509_get_subject_name(certificate) else {
            return nil
        }
        var buffer = [CChar](repeating: 0, count: 256)
        let length = X509_NAME_get_text_by_NID(subject, NID_commonName, &buffer, Int32(buffer.count))
        guard length > 0 else { return nil }
        return String(decoding: buffer.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
