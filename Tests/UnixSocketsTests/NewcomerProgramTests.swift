import Foundation
import Testing

// Issue 9: a newcomer's first program, an async seqpacket server in a `Task` and a client awaiting
// `send` and `receive`, written as top-level code picked the blocking overloads (with only a warning) and
// deadlocked the main actor. The blocking operations are `noasync` now: the top-level form must not compile,
// and must say what to do; the same code in a `@main` type's `static func main() async` must compile and
// run. Compiled with `swiftc` against the modules this test run was built with (well under a second each).

/// What `swiftc` needs to compile one file against the built library, or nil when the toolchain or the
/// build directory is not where `swift test` puts them.
struct NewcomerToolchain {
    let swiftc: String
    let build: URL
    let systemModuleMap: String

    static let found: NewcomerToolchain? = {
        guard let uds = CLI.executable else { return nil }
        let build = URL(fileURLWithPath: uds).deletingLastPathComponent()
        guard
            FileManager.default.fileExists(atPath: build.appendingPathComponent("Modules/UnixSockets.swiftmodule").path)
        else { return nil }
        let paths = (ProcessInfo.processInfo.environment["PATH"] ?? "") + ":/opt/swift/usr/bin:/usr/bin"
        guard
            let swiftc = paths.split(separator: ":").map({ "\($0)/swiftc" }).first(where: {
                FileManager.default.isExecutableFile(atPath: $0)
            })
        else { return nil }
        var directory = build
        for _ in 0..<4 {  // .build/<triple>/debug -> .build/checkouts
            directory = directory.deletingLastPathComponent()
            let map = directory.appendingPathComponent(
                "checkouts/swift-system/Sources/CSystem/include/module.modulemap"
            )
            if FileManager.default.fileExists(atPath: map.path) {
                return NewcomerToolchain(swiftc: swiftc, build: build, systemModuleMap: map.path)
            }
        }
        return nil
    }()

    /// The arguments that compile `file` (and, when `output` is given, link it with the library's objects).
    func arguments(_ file: String, output: String?, parseAsLibrary: Bool) -> [String] {
        var arguments = [
            swiftc, "-swift-version", "6", "-I", build.appendingPathComponent("Modules").path,
            "-Xcc", "-fmodule-map-file=\(systemModuleMap)",
            "-Xcc", "-fmodule-map-file=\(build.appendingPathComponent("CUnixSockets.build/module.modulemap").path)",
        ]
        if parseAsLibrary { arguments.append("-parse-as-library") }
        // Under .ci/run's sanitizer passes the library's objects are instrumented: link the runtime too.
        if let sanitizer = ProcessInfo.processInfo.environment["UDS_SANITIZER"],
            ["thread", "address"].contains(sanitizer)
        {
            arguments.append("-sanitize=\(sanitizer)")
        }
        arguments.append(file)
        guard let output else { return arguments + ["-typecheck"] }
        let targets = [
            "UnixSockets", "UnixSocketsAsync", "UnixSocketsCore", "UnixSocketsSystem", "SystemPackage", "CSystem",
            "Logging", "CUnixSockets",
            // swift-service-lifecycle (UnixServer is a Service) and what it is built on.
            "ServiceLifecycle", "UnixSignals", "ConcurrencyHelpers", "AsyncAlgorithms", "DequeModule",
            "OrderedCollections", "InternalCollectionsUtilities", "ContainersPreview",
        ]
        for target in targets {
            arguments += Self.objects(of: build.appendingPathComponent("\(target).build"))
        }
        return arguments + ["-o", output]
    }

    /// A Swift target's objects as its build recorded them (output-file-map.json: an object left behind by a
    /// file since moved or deleted is not linked); every object of a C target.
    static func objects(of directory: URL) -> [String] {
        let map = directory.appendingPathComponent("output-file-map.json")
        if let data = FileManager.default.contents(atPath: map.path),
            let entries = try? JSONSerialization.jsonObject(with: data) as? [String: [String: String]]
        {
            return entries.values.compactMap { $0["object"] }.sorted()
        }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.filter { $0.hasSuffix(".o") }.sorted().map { directory.appendingPathComponent($0).path }
    }
}

@Suite("the newcomer's first program")
struct NewcomerProgramTests {
    static func program(_ name: String) -> String {
        """
        let address = try UnixAddress.abstract("\(name)-\(UInt32.random(in: 0...UInt32.max))")
        let listener = try UnixSeqPacketListener.bind(address)
        let server = Task {
            let connection = try await listener.accept()
            let message = try await connection.receive(maxBytes: 64, maxDescriptors: 0)
            try await connection.send(message.bytes)
        }
        let client = try await UnixSeqPacket.connect(to: address)
        try await client.send(Array("ping".utf8))
        let reply = try await client.receive(maxBytes: 64, maxDescriptors: 0)
        print(String(decoding: reply.bytes, as: UTF8.self))
        try await server.value
        """
    }

    @Test(
        "top-level code awaiting the socket calls does not compile, and the error says what to do",
        .enabled(
            if: NewcomerToolchain.found != nil,
            "swiftc or the built UnixSockets module is not where swift test puts them"
        )
    )
    func topLevelFormIsAnError() throws {
        let toolchain = try #require(NewcomerToolchain.found)
        let directory = try TempDirectory()
        let source = directory.write("main.swift", Array(("import UnixSockets\n\n" + Self.program("top")).utf8))
        let result = try CLI.runProcess(
            toolchain.arguments(source, output: nil, parseAsLibrary: false),
            in: directory,
            seconds: 120
        )
        let output = result.error + result.outputText
        #expect(result.status != nil && result.status != 0, "top-level program compiled: \(output)")
        for call in ["static method 'connect'", "instance method 'send'", "instance method 'receive'"] {
            #expect(output.contains("\(call) is unavailable from asynchronous contexts"), "\(output)")
        }
        #expect(output.contains("this blocking call would stall async code"), "\(output)")
        #expect(output.contains("'try await' it inside an async func"), "\(output)")
    }

    @Test(
        "the same code in a @main type's async main compiles and runs to completion",
        .enabled(
            if: NewcomerToolchain.found != nil,
            "swiftc or the built UnixSockets module is not where swift test puts them"
        )
    )
    func asyncMainFormRuns() throws {
        let toolchain = try #require(NewcomerToolchain.found)
        let directory = try TempDirectory()
        let body = Self.program("main").split(separator: "\n").map { "        " + $0 }.joined(separator: "\n")
        let text = """
            import UnixSockets

            @main
            struct Newcomer {
                static func main() async throws {
            \(body)
                }
            }
            """
        let source = directory.write("main.swift", Array(text.utf8))
        let binary = directory.file("newcomer")
        let compiled = try CLI.runProcess(
            toolchain.arguments(source, output: binary, parseAsLibrary: true),
            in: directory,
            seconds: 120
        )
        #expect(compiled.status == 0, "\(compiled.error)")
        // The compiler's warnings on the program (such as "no 'async' operations occur within 'await'"); the
        // linker's notes on the sanitizer runtime are not the program's.
        let warnings = compiled.error.split(separator: "\n").filter {
            $0.contains(".swift:") && $0.contains("warning:")
        }
        #expect(warnings.isEmpty, "\(compiled.error)")
        guard compiled.status == 0 else { return }
        let run = try CLI.runProcess([binary], in: directory, seconds: 20)
        #expect(run.status == 0, "exit status \(String(describing: run.status)): \(run.error)")
        #expect(run.outputText == "ping\n")
    }
}
