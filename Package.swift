// swift-tools-version: 6.1
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
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
    ],
    targets: [
        .target(name: "CUnixSockets"),
        .target(
            name: "UnixSockets",
            dependencies: [
                "CUnixSockets",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
            ],
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
                "UnixSockets", "CUnixSockets",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: swiftSettings
        ),
    ],
    swiftLanguageModes: [.v6]
)
