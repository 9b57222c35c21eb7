// swift-tools-version:6.1
// An example package that depends on chatd's Swift client, as another team's package would. It depends on this
// repository by path; a package elsewhere names it by URL: .package(url: "https://.../chatd.git", from: "1.0.0"),
// and then `package: "chatd"` in the products below.
import PackageDescription

// A path dependency's identity is its folder's name (the clone's: chatd, main, ci-clone...).
let root = Context.packageDirectory + "/../../.."
let identity = String(
    (Context.packageDirectory.split(separator: "/").dropLast(3).last ?? "chatd").lowercased()
)

let package = Package(
    name: "chat-example",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: root)
    ],
    targets: [
        .executableTarget(
            name: "chat-example",
            dependencies: [
                .product(name: "ChatClient", package: identity),
                .product(name: "ChatProto", package: identity),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        )
    ]
)
