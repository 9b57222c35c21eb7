import ArgumentParser
import ChatAuth
import ChatDomain
import ChatProto
import Foundation

/// `chatctl token`: development tokens.
struct Token: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Development tokens, signed with the development key that scripts/dev creates.",
        subcommands: [Mint.self, JWKS.self]
    )

    /// `chatctl token mint`: prints a signed token.
    struct Mint: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Sign a development bearer token.")

        @Option(name: .customLong("key"), help: "Ed25519 PEM private key (scripts/dev: .dev/auth/signing.pem).")
        var key: String = ".dev/auth/signing.pem"

        @Option(name: .customLong("kid"), help: "The key id in the JWKS.")
        var kid: String = "dev"

        @Option(name: .customLong("issuer"), help: "iss")
        var issuer: String = "chatd-dev"

        @Option(name: .customLong("audience"), help: "aud")
        var audience: String = "chatd"

        @Option(name: .customLong("tenant"), help: "tenant_id (a UUID).")
        var tenant: String = "00000000-0000-4000-8000-000000000001"

        @Option(name: .customLong("sub"), help: "The user id.")
        var subject: String = "dev-user"

        @Option(
            name: .customLong("role"),
            help: ArgumentHelp("One of: \(Role.assignable.map(\.claimName).joined(separator: ", ")).")
        )
        var role: String = "tenant_admin"

        @Option(name: .customLong("learner"), help: "A learner in scope (repeat for more).")
        var learners: [String] = []

        @Option(name: .customLong("ttl"), help: "Seconds until the token expires.")
        var ttl: Int = 3600

        func validate() throws {
            guard Role(name: self.role) != nil else {
                throw ValidationError("unknown --role \(self.role)")
            }
            guard self.ttl > 0 else { throw ValidationError("--ttl must be positive") }
        }

        func run() async throws {
            let signer = try JWSSigningKey.ed25519(id: self.kid, pemFile: self.key)
            let now = Int64(Date().timeIntervalSince1970)
            let token = try signer.sign(claims: [
                "iss": self.issuer, "aud": self.audience, "sub": self.subject, "tenant_id": self.tenant,
                "role": self.role, "learner_scope": self.learners, "iat": now, "nbf": now,
                "exp": now + Int64(self.ttl),
            ])
            print(token)
        }
    }

    /// `chatctl token jwks`: prints the JWKS of a signing key, for `chatd --auth-jwks`.
    struct JWKS: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the JWKS of an Ed25519 signing key.")

        @Option(name: .customLong("key"), help: "Ed25519 PEM private key.")
        var key: String = ".dev/auth/signing.pem"

        @Option(name: .customLong("kid"), help: "The key id.")
        var kid: String = "dev"

        func run() async throws {
            let signer = try JWSSigningKey.ed25519(id: self.kid, pemFile: self.key)
            let document = try JSONSerialization.data(
                withJSONObject: ["keys": [signer.publicJWK]],
                options: [.prettyPrinted, .sortedKeys]
            )
            print(String(decoding: document, as: UTF8.self))
        }
    }
}
