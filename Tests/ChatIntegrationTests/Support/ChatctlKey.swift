import ChatAuth
import ChatStoreTestSupport
import ChatTestSupport
import Foundation
import Testing

/// A signing key of chatctl's in a directory of its own: `chatctl token jwks` gives the keys a harness trusts, and
/// `mint` signs tokens with it, as an operator would.
struct ChatctlKey {
    let directory: String
    let path: String
    /// The JWKS of the key, for `ServiceHarness(extraKeys:)`.
    let trusted: [JWSVerificationKey]

    /// A fresh key in a new temporary directory named after `purpose`.
    static func make(_ purpose: String) async throws -> ChatctlKey {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("\(purpose)-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let path = "\(directory)/signing.pem"
        let generated = try await runProgram("/usr/bin/openssl", ["genpkey", "-algorithm", "ed25519", "-out", path])
        #expect(generated.status == 0, "\(generated.output)")
        let jwks = try await runProgram(CLITests.chatctl, ["token", "jwks", "--key", path, "--kid", "dev"])
        #expect(jwks.status == 0, "\(jwks.output)")
        let keys = try JWKSet(json: Array(jwks.output.utf8))
        return ChatctlKey(directory: directory, path: path, trusted: Array(keys.keys.values))
    }

    /// A token minted by chatctl (issuer `test`, the harness's).
    func mint(tenant: String = Fixture.tenantA, sub: String, role: String, extra: [String] = []) async throws -> String
    {
        let minted = try await runProgram(
            CLITests.chatctl,
            ["token", "mint", "--key", self.path, "--issuer", "test", "--tenant", tenant, "--sub", sub, "--role", role]
                + extra
        )
        #expect(minted.status == 0, "\(minted.output)")
        return minted.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Removes the directory.
    func remove() {
        try? FileManager.default.removeItem(atPath: self.directory)
    }
}
