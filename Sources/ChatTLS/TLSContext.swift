internal import COpenSSL
internal import Glibc

/// Why TLS failed. The message names what was wrong (a file, a verification failure); it holds no secret.
public struct TLSError: Error, Hashable, CustomStringConvertible {
    /// The kind of failure.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable {
            case configuration
            case handshakeFailed
            case handshakeTimeout
            case noApplicationProtocol
            case uncleanShutdown
            case failed
        }

        private let base: Base

        /// A certificate, key or CA file could not be used.
        public static let configuration = Code(base: .configuration)
        /// The handshake failed (wrong protocol, plaintext, verification).
        public static let handshakeFailed = Code(base: .handshakeFailed)
        /// The handshake did not complete in time.
        public static let handshakeTimeout = Code(base: .handshakeTimeout)
        /// The peer did not agree on the `chat/1` application protocol.
        public static let noApplicationProtocol = Code(base: .noApplicationProtocol)
        /// The connection ended without close_notify.
        public static let uncleanShutdown = Code(base: .uncleanShutdown)
        /// Reading or writing failed after the handshake.
        public static let failed = Code(base: .failed)

        public var description: String {
            switch self.base {
            case .configuration: "configuration"
            case .handshakeFailed: "handshake failed"
            case .handshakeTimeout: "handshake timeout"
            case .noApplicationProtocol: "no application protocol"
            case .uncleanShutdown: "unclean shutdown"
            case .failed: "failed"
            }
        }
    }

    /// The kind of failure.
    public let code: Code
    /// What OpenSSL or we said.
    public let message: String

    /// Creates an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "TLS \(self.code): \(self.message)" }

    /// The OpenSSL error queue as text (and emptied).
    static func drainErrorQueue() -> String {
        var messages: [String] = []
        while case let code = ERR_get_error(), code != 0 {
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buffer, buffer.count)
            messages.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return messages.isEmpty ? "unknown error" : messages.joined(separator: "; ")
    }
}

/// What a TLS context is for, and with which files.
public struct TLSConfiguration: Sendable, Hashable {
    /// Server or client.
    public enum Role: Sendable, Hashable {
        /// Presents `certificatePath`; verifies clients against `trustRootsPath` when set (mTLS).
        case server
        /// Verifies the server against `trustRootsPath` (the system's trust store when nil); presents
        /// `certificatePath` when set.
        case client
    }

    /// Server or client.
    public var role: Role
    /// PEM certificate chain to present.
    public var certificatePath: String?
    /// PEM private key of the certificate.
    public var privateKeyPath: String?
    /// PEM CA certificates to verify the peer with: the server's client CA (mTLS), the client's trust roots.
    public var trustRootsPath: String?
    /// How long a handshake may take.
    public var handshakeTimeoutSeconds: Int64
    /// What a client offers in ALPN; the server accepts only `chat/1` whatever this says.
    public var applicationProtocols: [String] = ["chat/1"]
    /// Whether the handshake fails when the peer agrees on none of `applicationProtocols` (always for chat/1; an
    /// HTTPS server may not speak ALPN at all).
    public var requireApplicationProtocol = true
    /// Server with a client CA: refuse clients without a certificate. Without it, a certificate is optional (an
    /// identity for internal callers), but one that is presented must verify.
    public var requireClientCertificate = false

    /// A server configuration.
    public static func server(
        certificate: String,
        privateKey: String,
        clientCA: String? = nil,
        requireClientCertificate: Bool = false
    ) -> TLSConfiguration {
        var configuration = TLSConfiguration(
            role: .server,
            certificatePath: certificate,
            privateKeyPath: privateKey,
            trustRootsPath: clientCA,
            handshakeTimeoutSeconds: 10
        )
        configuration.requireClientCertificate = requireClientCertificate
        return configuration
    }

    /// A client configuration.
    public static func client(
        trustRoots: String,
        certificate: String? = nil,
        privateKey: String? = nil
    ) -> TLSConfiguration {
        TLSConfiguration(
            role: .client,
            certificatePath: certificate,
            privateKeyPath: privateKey,
            trustRootsPath: trustRoots,
            handshakeTimeoutSeconds: 10
        )
    }

    /// A client of an HTTPS server (the identity provider's JWKS): ALPN `http/1.1`, the server verified against
    /// `trustRoots`, or the system's trust store when nil.
    public static func httpsClient(trustRoots: String?) -> TLSConfiguration {
        var configuration = TLSConfiguration(
            role: .client,
            certificatePath: nil,
            privateKeyPath: nil,
            trustRootsPath: trustRoots,
            handshakeTimeoutSeconds: 10
        )
        configuration.applicationProtocols = ["http/1.1"]
        configuration.requireApplicationProtocol = false
        return configuration
    }
}

/// An OpenSSL `SSL_CTX`: TLS 1.3 only, ALPN `chat/1` required, no compression, no renegotiation, idle buffers
/// released. Shared by all connections of a server or client; thread-safe once built.
public final class TLSContext: @unchecked Sendable {
    let context: OpaquePointer
    /// The configuration it was built from.
    public let configuration: TLSConfiguration

    /// Builds a context.
    ///
    /// - Throws: `TLSError.configuration` naming the file or setting that failed.
    public init(configuration: TLSConfiguration) throws(TLSError) {
        ERR_clear_error()
        let method = configuration.role == .server ? TLS_server_method() : TLS_client_method()
        guard let context = SSL_CTX_new(method) else {
            throw TLSError(.configuration, "SSL_CTX_new: \(TLSError.drainErrorQueue())")
        }
        self.context = context
        self.configuration = configuration

        guard chat_SSL_CTX_set_min_proto_version(context, TLS1_3_VERSION) == 1 else {
            throw TLSError(.configuration, "cannot require TLS 1.3")
        }
        SSL_CTX_set_options(context, chat_SSL_OP_NO_RENEGOTIATION() | chat_SSL_OP_NO_COMPRESSION())
        _ = chat_SSL_CTX_set_mode(context, chat_SSL_MODE_RELEASE_BUFFERS())

        if let certificate = configuration.certificatePath {
            guard SSL_CTX_use_certificate_chain_file(context, certificate) == 1 else {
                throw TLSError(.configuration, "certificate \(certificate): \(TLSError.drainErrorQueue())")
            }
            guard let key = configuration.privateKeyPath,
                SSL_CTX_use_PrivateKey_file(context, key, SSL_FILETYPE_PEM) == 1,
                SSL_CTX_check_private_key(context) == 1
            else {
                throw TLSError(
                    .configuration,
                    "private key \(configuration.privateKeyPath ?? "(none)"): \(TLSError.drainErrorQueue())"
                )
            }
        }
        switch configuration.role {
        case .server:
            guard configuration.certificatePath != nil else {
                throw TLSError(.configuration, "a server needs a certificate")
            }
            if let clientCA = configuration.trustRootsPath {
                guard SSL_CTX_load_verify_locations(context, clientCA, nil) == 1,
                    let names = SSL_load_client_CA_file(clientCA)
                else {
                    throw TLSError(.configuration, "client CA \(clientCA): \(TLSError.drainErrorQueue())")
                }
                SSL_CTX_set_client_CA_list(context, names)
                let mode =
                    configuration.requireClientCertificate
                    ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_PEER
                SSL_CTX_set_verify(context, mode, nil)
            }
            // A ClientHello without the ALPN extension never reaches the select callback below, so OpenSSL would
            // complete the handshake: refuse it here with the alert section 1 of PROTOCOL.md promises.
            SSL_CTX_set_client_hello_cb(
                context,
                { ssl, alert, _ in
                    var data: UnsafePointer<UInt8>?
                    var length = 0
                    let alpnExtension: UInt32 = 16  // TLSEXT_TYPE_application_layer_protocol_negotiation
                    if SSL_client_hello_get0_ext(ssl, alpnExtension, &data, &length) == 1 { return 1 }
                    alert?.pointee = 120  // no_application_protocol (RFC 7301, section 3.2)
                    return 0  // SSL_CLIENT_HELLO_ERROR
                },
                nil
            )
            SSL_CTX_set_alpn_select_cb(
                context,
                { _, out, outLength, offered, offeredLength, _ in
                    // Pick chat/1 from the client's list, or fail the handshake (no_application_protocol).
                    guard let offered, let out, let outLength else { return SSL_TLSEXT_ERR_ALERT_FATAL }
                    var index = 0
                    while index < Int(offeredLength) {
                        let length = Int(offered[index])
                        if length == 6, index + 1 + length <= Int(offeredLength),
                            memcmp(offered + index + 1, "chat/1", 6) == 0
                        {
                            out.pointee = offered + index + 1
                            outLength.pointee = 6
                            return SSL_TLSEXT_ERR_OK
                        }
                        index += 1 + length
                    }
                    return SSL_TLSEXT_ERR_ALERT_FATAL
                },
                nil
            )
        case .client:
            let loaded =
                configuration.trustRootsPath.map { SSL_CTX_load_verify_locations(context, $0, nil) }
                ?? SSL_CTX_set_default_verify_paths(context)
            guard loaded == 1 else {
                throw TLSError(
                    .configuration,
                    "trust roots \(configuration.trustRootsPath ?? "(the system's)"): \(TLSError.drainErrorQueue())"
                )
            }
            SSL_CTX_set_verify(context, SSL_VERIFY_PEER, nil)
            let offer = configuration.applicationProtocols.flatMap { [UInt8($0.utf8.count)] + Array($0.utf8) }
            let failed = offer.withUnsafeBufferPointer {
                SSL_CTX_set_alpn_protos(context, $0.baseAddress, UInt32($0.count))
            }
            guard failed == 0 else { throw TLSError(.configuration, "cannot set ALPN") }
        }
    }

    /// When the context's own certificate (the server's) stops being valid, in seconds since the epoch; nil when it
    /// has none.
    public var certificateNotAfter: Int64? {
        guard let certificate = SSL_CTX_get0_certificate(self.context), let notAfter = X509_get0_notAfter(certificate)
        else { return nil }
        var time = tm()
        guard ASN1_TIME_to_tm(notAfter, &time) == 1 else { return nil }
        return Int64(timegm(&time))
    }

    deinit {
        SSL_CTX_free(self.context)
    }
}
