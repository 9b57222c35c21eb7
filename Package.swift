// swift-tools-version:6.1
// chatd: a chat service for education platforms, over a binary RPC protocol on TLS, backed by PostgreSQL.
import PackageDescription

/// One list of settings for every target (the grpc-swift-2 and hummingbird convention).
let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "chatd",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "chatd", targets: ["chatd"]),
        .executable(name: "chatctl", targets: ["chatctl"]),
        .executable(name: "chat-bench", targets: ["chat-bench"]),
        .library(name: "ChatProto", targets: ["ChatProto"]),
        // The Swift client, for other packages (clients/swift/Example): the client, its TLS context, and the
        // statuses it throws.
        .library(name: "ChatClient", targets: ["ChatClient", "ChatTLS", "ChatRPCCore"]),
        // For the fuzz targets in Tests/Fuzz.
        .library(name: "ChatWire", targets: ["ChatWire"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.2.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-distributed-tracing", from: "1.7.3"),
        // The OTLP/HTTP exporter only (its gRPC exporter would bring a second RPC stack for nothing).
        .package(url: "https://github.com/swift-otel/swift-otel", from: "1.6.0", traits: ["OTLPHTTP"]),
        // `swift package generate-documentation --target ChatClient` (Sources/ChatClient/ChatClient.docc).
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        // MARK: C libraries
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]
        ),
        .systemLibrary(
            name: "CNats",
            pkgConfig: "libnats",
            providers: [.apt(["libnats-dev"])]
        ),
        .systemLibrary(
            name: "CProtobufC",
            pkgConfig: "libprotobuf-c",
            providers: [.apt(["libprotobuf-c-dev"])]
        ),

        // MARK: The contract
        .target(
            name: "ChatProtoC",
            dependencies: ["CProtobufC"],
            cSettings: [.unsafeFlags(["-Wno-unused-parameter"])],
            linkerSettings: [.linkedLibrary("protobuf-c")]
        ),
        .target(
            name: "ChatProto",
            dependencies: ["CProtobufC", "ChatProtoC"],
            swiftSettings: swiftSettings
        ),

        // MARK: The domain's facts: roles, permissions, principals, event-type groups (from the contract's enums)
        .target(
            name: "ChatDomain",
            dependencies: ["ChatProto"],
            swiftSettings: swiftSettings
        ),

        // MARK: Wire protocol
        .target(
            name: "ChatWire",
            dependencies: [
                "ChatProto",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: TLS
        .target(
            name: "ChatTLS",
            dependencies: [
                "COpenSSL",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: RPC runtime
        // What the client and the server share: statuses and errors.
        .target(
            name: "ChatRPCCore",
            dependencies: [
                "ChatProto",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "ChatRPC",
            dependencies: [
                "ChatDomain",
                "ChatRPCCore",
                "ChatProto",
                "ChatWire",
                "ChatTLS",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: Authentication and authorization
        .target(
            name: "ChatAuth",
            dependencies: [
                "COpenSSL",
                "ChatDomain",
                "ChatProto",
                "ChatRPC",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: Services
        .target(
            name: "ChatServices",
            dependencies: [
                "CNats", "ChatAuth", "ChatDomain", "ChatProto", "ChatRPC", "ChatStore",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: The composition root: one chatd instance from one configuration value
        .target(
            name: "ChatApp",
            dependencies: [
                "ChatAuth", "ChatProto", "ChatRPC", "ChatServices", "ChatStore", "ChatTLS", "ChatWire",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: Client (a library product; its DocC catalog is Sources/ChatClient/ChatClient.docc)
        .target(
            name: "ChatClient",
            dependencies: [
                "ChatProto",
                "ChatRPCCore",
                "ChatTLS",
                "ChatWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: Storage
        .target(
            name: "ChatStore",
            dependencies: [
                "CLibPQ",
                "ChatDomain",
                "ChatProto",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: Tracing export: OTLP/HTTP through swift-otel (only the chatd executable links it)
        .target(
            name: "ChatTelemetry",
            dependencies: [
                "ChatRPC",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "OTel", package: "swift-otel"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: Executables
        .executableTarget(
            name: "chatd",
            dependencies: [
                "ChatApp",
                "ChatAuth",
                "ChatDomain",
                "ChatStore",
                "ChatProto",
                "ChatRPC",
                "ChatServices",
                "ChatTelemetry",
                "ChatTLS",
                "ChatWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),

        .executableTarget(
            name: "chatctl",
            dependencies: [
                "ChatAuth",
                "ChatDomain",
                "ChatClient",
                "ChatProto",
                "ChatRPC",
                "ChatTLS",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),

        .executableTarget(
            name: "chat-bench",
            dependencies: [
                "ChatClient",
                "ChatProto",
                "ChatTLS",
                "ChatWire",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: Tests
        .target(
            name: "ChatTestSupport",
            dependencies: [.product(name: "Logging", package: "swift-log")],
            path: "Tests/ChatTestSupport",
            swiftSettings: swiftSettings
        ),
        .target(
            name: "CMallocStats",
            path: "Tests/CMallocStats"
        ),
        .testTarget(
            name: "ChatProtoTests",
            dependencies: [
                "ChatTestSupport", "ChatProto",
            ],
            exclude: ["Resources"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ChatWireTests",
            dependencies: [
                "ChatWire",
                "ChatProto",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ChatTLSTests",
            dependencies: [
                "ChatTLS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ChatRPCTests",
            dependencies: [
                "ChatTestSupport",
                "CMallocStats",
                "ChatAuth",
                "ChatDomain",
                "ChatClient",
                "ChatProto",
                "ChatRPC",
                "ChatServices",
                "ChatTLS",
                "ChatWire",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ChatAuthTests",
            dependencies: [
                "ChatTestSupport", "ChatAuth", "ChatDomain", "ChatProto",
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ChatDomainTests",
            dependencies: ["ChatDomain", "ChatProto"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ChatServicesTests",
            dependencies: ["ChatServices", "ChatAuth", "ChatDomain", "ChatStore", "ChatProto"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "ChatStoreTestSupport",
            dependencies: [
                "ChatTestSupport", "ChatDomain", "ChatProto", "ChatStore",
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/ChatStoreTestSupport",
            swiftSettings: swiftSettings
        ),
        // The storage layer against the real PostgreSQL of scripts/test: connections, pipelines, the pool's
        // bounds, migrations, row-level security, sequences, the SQL's roles.
        .testTarget(
            name: "ChatStoreTests",
            dependencies: [
                "ChatTestSupport", "ChatStoreTestSupport", "ChatDomain", "ChatProto", "ChatServices", "ChatStore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: swiftSettings
        ),
        // End to end: the services assembled by ChatApp over real TLS and PostgreSQL, the chatctl and chatd
        // executables, live delivery, privacy, idempotency.
        .testTarget(
            name: "ChatIntegrationTests",
            dependencies: [
                "ChatTestSupport",
                "ChatStoreTestSupport",
                "ChatApp",
                "ChatAuth",
                "ChatClient",
                "ChatDomain",
                "ChatProto",
                "ChatRPC",
                "ChatServices",
                "ChatStore",
                "ChatTLS",
                "ChatWire",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
