// swift-tools-version: 6.1
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "UnixSockets",
    products: [
        .library(name: "UnixSockets", targets: ["UnixSockets"]),
        .executable(name: "uds", targets: ["uds"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        // The layers, each seeing only the ones below it (DESIGN.md):
        //   CUnixSockets: the C shim (CMSG_* macros as functions, _GNU_SOURCE calls); seen only by
        //   UnixSocketsSystem: the syscall layer, the one place that calls libc and reads errno; Swift
        //     values in and out (package access), so nothing above it imports Glibc or the shim.
        //   UnixSocketsCore: addresses, blocking sockets, messages and descriptors, socket files, TCP for
        //     `uds bridge`; it defines the interfaces the async layer plugs into.
        //   UnixSocketsAsync: the epoll reactor and the async face, framing, UnixServer, the relay engine.
        //   UnixSockets: the product; re-exports Core and Async.
        .target(name: "CUnixSockets"),
        .target(
            name: "UnixSocketsSystem",
            dependencies: ["CUnixSockets", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "UnixSocketsCore",
            dependencies: ["UnixSocketsSystem", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "UnixSocketsAsync",
            dependencies: [
                "UnixSocketsCore", "UnixSocketsSystem",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "UnixSockets",
            dependencies: ["UnixSocketsCore", "UnixSocketsAsync"],
            swiftSettings: swiftSettings
        ),
        .target(name: "CBaseline"),
        // `uds bench`: the library beside the C baseline; the only target that links CBaseline.
        .target(
            name: "UDSBench",
            dependencies: [
                "UnixSockets",
                "CBaseline",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Subprocess", package: "swift-subprocess"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "uds",
            dependencies: [
                "UnixSockets",
                "UDSBench",
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: swiftSettings
        ),
        // An example systemd service (README): UnixServer on an activated socket, sd_notify, ServiceGroup.
        .executableTarget(
            name: "echo-service",
            dependencies: [
                "UnixSockets",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            path: "Examples/echo-service",
            swiftSettings: swiftSettings
        ),
        // Test support: an echo UnixServer with the default limits, driven by scripts/soak.sh. Not a product.
        .executableTarget(
            name: "SoakEchoServer",
            dependencies: [
                "UnixSockets",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "UnixSocketsTests",
            dependencies: [
                "UnixSockets", "UnixSocketsCore", "UnixSocketsAsync", "UnixSocketsSystem", "CUnixSockets",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: swiftSettings
        ),
    ],
    swiftLanguageModes: [.v6]
)
