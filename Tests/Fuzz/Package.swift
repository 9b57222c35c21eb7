// swift-tools-version:6.1
// libFuzzer targets for chatd's decoders (scripts/fuzz builds them with -sanitize=fuzzer,address). A package of its
// own, so that the main build never carries the fuzzer flags; it depends on chatd by path.
import PackageDescription

let swiftSettings: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "chatd-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "chatd", path: "../.."),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        .target(name: "CFuzzer"),
        .target(name: "FuzzDriver", dependencies: ["CFuzzer"], swiftSettings: swiftSettings),
        .executableTarget(
            name: "FuzzFrames",
            dependencies: [
                "FuzzDriver",
                .product(name: "ChatWire", package: "chatd"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "FuzzEnvelopes",
            dependencies: [
                "FuzzDriver",
                .product(name: "ChatWire", package: "chatd"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "FuzzSettings",
            dependencies: ["FuzzDriver", .product(name: "ChatWire", package: "chatd")],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "FuzzProto",
            dependencies: ["FuzzDriver", .product(name: "ChatProto", package: "chatd")],
            swiftSettings: swiftSettings
        ),
    ]
)
