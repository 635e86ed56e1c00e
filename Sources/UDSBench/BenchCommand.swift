public import ArgumentParser
import Foundation
import SystemPackage
import UnixSockets

/// `uds bench`: the library beside a C baseline, interleaved, in one run. The `uds` executable lists it
/// as a subcommand; everything it needs (CBaseline included) lives in this module.
public struct Bench: AsyncParsableCommand {
    public init() {}

    public static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure the library beside a C baseline: latency, throughput, descriptor and accept rates.",
        discussion: """
            Every scenario runs with the Swift library (UnixSockets server + client) and with the C \
            baseline (CBaseline server + client, plain blocking syscalls), interleaved Swift, C, Swift, C, \
            ... Each side is two processes over a socket file in a temporary directory: this process is \
            the client, the server is this executable run again. Both are pinned with sched_setaffinity: \
            "same" (both on one CPU) is the headline, "split" (two CPUs) the second row. Medians over the \
            runs, with min-max; ratio = Swift median / C median. Only a release build measures anything \
            (swift build -c release).
            """
    )

    @Flag(help: "A smoke run: tiny iteration counts, one run per side, same-CPU placement only.")
    var quick = false

    @Flag(help: "Print the results as JSON on stdout instead of a table.")
    var json = false

    @Option(help: "Runs per side and scenario (default 5; 1 with --quick).")
    var runs: Int?

    @Option(help: "CPU placement: same, split or both (default both; same with --quick).")
    var placement: String?

    @Option(name: .customLong("only"), help: "Run only the scenarios whose id contains this text (repeatable).")
    var only: [String] = []

    @Option(help: .hidden)
    var peer: String?

    public func validate() throws {
        if let runs, runs < 1 { throw ValidationError("--runs must be at least 1") }
        if let placement, !["same", "split", "both"].contains(placement) {
            throw ValidationError("--placement takes same, split or both (got '\(placement)')")
        }
    }

    /// Returns on success; a failure is one `uds: ` line on stderr and status 1.
    public func run() async throws {
        do {
            if let peer {
                try await BenchPeerMode.run(peer)
                return
            }
            let failed = try await BenchDriver(
                quick: quick,
                json: json,
                runs: runs ?? (quick ? 1 : 5),
                placement: placement ?? (quick ? "same" : "both"),
                only: only
            ).run()
            if failed > 0 { throw BenchError("\(failed) scenario(s) failed (see above)") }
        } catch {
            BenchSystem.writeStderr("uds: " + "\(error)".replacingOccurrences(of: "\n", with: " ") + "\n")
            throw ExitCode(1)
        }
    }
}

/// `uds bench --peer JOB`: one side of one run, started by the measuring process.
enum BenchPeerMode {
    static func run(_ text: String) async throws {
        let job = try JSONDecoder().decode(BenchJob.self, from: Data(text.utf8))
        BenchSystem.raiseDescriptorLimit()
        if let cpu = job.cpu { try BenchSystem.pin(cpu) }
        if job.watchdog > 0 { ProcessControl.endAfter(seconds: job.watchdog) }
        switch job.role {
        case .server:
            try await BenchRunner.runServer(job)
        case .client:
            // For profiling one side alone (valgrind): prints what it measured.
            switch try await BenchRunner.runClient(job) {
            case .samples(let samples):
                let sorted = samples.sorted()
                print(
                    "median_ns \(BenchStats.percentile(sorted, 50)) p99_ns \(BenchStats.percentile(sorted, 99))"
                )
            case .elapsed(let ns): print("elapsed_ns \(ns)")
            }
        }
    }
}

// MARK: - The scenarios

/// What a row measures, and how it is shown.
enum BenchMetric: String, Codable {
    case latency = "round_trip_ns"
    case bytesPerSecond = "bytes_per_second"
    case messagesPerSecond = "messages_per_second"
    case descriptorsPerSecond = "descriptors_per_second"
    case connectionsPerSecond = "connections_per_second"

    var higherIsBetter: Bool { self != .latency }
}

struct BenchTarget: Codable {
    /// "<=" (latency ratio) or ">=" (rate ratio).
    let op: String
    let ratio: Double
    /// What the C side of the ratio is ("c-blocking").
    let against: String

    func met(_ ratio: Double) -> Bool { op == "<=" ? ratio <= self.ratio : ratio >= self.ratio }
    var text: String { "\(op)\(String(format: "%.2f", ratio))" }
}

struct BenchRow {
    let id: String
    let title: String
    let job: BenchJob
    let hasC: Bool
    let metric: BenchMetric
    let target: BenchTarget?
    let note: String?
}

struct BenchConfig {
    let rttWarmup: Int
    let rttIterations: Int
    let fdIterations: Int
    let acceptIterations: Int
    let manyClients: Int
    let manyRounds: Int
    let totals: [Int: UInt64]  // message size -> total bytes per run

    static let full = BenchConfig(
        rttWarmup: 1000,
        rttIterations: 10000,
        fdIterations: 20000,
        acceptIterations: 5000,
        manyClients: 1000,
        manyRounds: 100,
        totals: [64: 4 << 20, 4096: 64 << 20, 65536: 256 << 20, 1 << 20: 256 << 20]
    )
    static let quick = BenchConfig(
        rttWarmup: 10,
        rttIterations: 200,
        fdIterations: 200,
        acceptIterations: 100,
        manyClients: 1000,
        manyRounds: 2,
        totals: [64: 64 << 10, 4096: 1 << 20, 65536: 4 << 20, 1 << 20: 8 << 20]
    )
}

let benchSizes = [64, 4096, 65536, 1 << 20]
let benchTypes = UnixSocketType.allCases
/// SO_SNDBUF/SO_RCVBUF requested for 1 MiB messages (the kernel doubles it: messages up to 4 MiB - 32).
let benchLargeSockbuf = 2 << 20

func sizeText(_ size: Int) -> String {
    size >= 1 << 20 ? "\(size >> 20) MiB" : size >= 1024 ? "\(size >> 10) KiB" : "\(size) B"
}

func benchRows(_ config: BenchConfig) -> [BenchRow] {
    var rows: [BenchRow] = []
    func job(_ scenario: BenchJob.Scenario, _ api: BenchJob.API, _ type: UnixSocketType) -> BenchJob {
        BenchJob(scenario: scenario, impl: .swift, api: api, type: type, path: "", clientPath: "")
    }
    for api in [BenchJob.API.blocking, .async, .asyncReactor] {
        for type in benchTypes {
            var template = job(.rtt, api, type)
            template.size = 64
            template.warmup = config.rttWarmup
            template.iterations = config.rttIterations
            let target =
                api == .blocking
                ? BenchTarget(op: "<=", ratio: 1.10, against: "c-blocking")
                : BenchTarget(op: "<=", ratio: 1.30, against: "c-blocking")
            rows.append(
                BenchRow(
                    id: "rtt.\(type.rawValue).\(api.rawValue)",
                    title: "round trip \(type.rawValue) 64 B \(api.rawValue)",
                    job: template,
                    hasC: true,
                    metric: .latency,
                    target: target,
                    note: api == .blocking ? nil : "C side: blocking"
                )
            )
        }
    }
    let wmemMax =
        (try? String(contentsOfFile: "/proc/sys/net/core/wmem_max", encoding: .utf8))
        .flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 0
    for api in [BenchJob.API.blocking, .async] {
        for type in benchTypes {
            for size in benchSizes {
                var template = job(.throughput, api, type)
                template.size = size
                template.totalBytes = config.totals[size]!
                var note: String? = api == .blocking ? nil : "C side: blocking"
                if size > 128 << 10 {
                    template.sockbuf = benchLargeSockbuf
                    note = (note.map { $0 + "; " } ?? "") + "SO_SNDBUF/SO_RCVBUF set to 2 MiB on both sides"
                    if type != .stream && wmemMax < size + 64 {
                        note = "skipped: net.core.wmem_max (\(wmemMax)) is below the message size"
                    }
                }
                var target: BenchTarget?
                if type == .stream && size == 65536 {
                    target = BenchTarget(op: ">=", ratio: 0.95, against: "c-blocking")
                } else if type != .stream && (size == 64 || size == 65536) {
                    target = BenchTarget(op: ">=", ratio: 0.90, against: "c-blocking")
                }
                rows.append(
                    BenchRow(
                        id:
                            "throughput.\(type.rawValue).\(sizeText(size).replacingOccurrences(of: " ", with: "")).\(api.rawValue)",
                        title: "one-way \(type.rawValue) \(sizeText(size)) \(api.rawValue)",
                        job: template,
                        hasC: true,
                        metric: type == .stream ? .bytesPerSecond : .messagesPerSecond,
                        target: target,
                        note: note
                    )
                )
            }
        }
    }
    for type in benchTypes {
        var template = job(.fdpass, .blocking, type)
        template.iterations = config.fdIterations
        rows.append(
            BenchRow(
                id: "fdpass.\(type.rawValue).blocking",
                title: "descriptor passing \(type.rawValue) blocking",
                job: template,
                hasC: true,
                metric: .descriptorsPerSecond,
                target: BenchTarget(op: ">=", ratio: 0.90, against: "c-blocking"),
                note: nil
            )
        )
    }
    for type in [UnixSocketType.stream, .seqPacket] {
        var template = job(.accept, .blocking, type)
        template.iterations = config.acceptIterations
        rows.append(
            BenchRow(
                id: "accept.\(type.rawValue).blocking",
                title: "accept \(type.rawValue) blocking",
                job: template,
                hasC: true,
                metric: .connectionsPerSecond,
                target: BenchTarget(op: ">=", ratio: 0.85, against: "c-blocking"),
                note: nil
            )
        )
    }
    var many = job(.many, .async, .stream)
    many.size = 64
    many.clients = config.manyClients
    many.iterations = config.manyRounds
    rows.append(
        BenchRow(
            id: "many.stream.async",
            title: "\(config.manyClients) clients, async server, stream 64 B",
            job: many,
            hasC: false,
            metric: .messagesPerSecond,
            target: nil,
            note: "Swift only: CBaseline has no many-clients scenario; messages = echoed round trips"
        )
    )
    return rows
}

// MARK: - Results

struct BenchSideStats: Codable {
    var median: Double
    var min: Double
    var max: Double
    /// Latency rows: the median over runs of each run's 99th percentile.
    var p99: Double?
    /// One value per run (latency: each run's median).
    var runs: [Double]
}

struct BenchRowResult: Codable {
    var id: String
    var title: String
    var scenario: String
    var type: String
    var api: String
    var size: Int
    var placement: String
    var clientCPU: Int
    var serverCPU: Int
    var metric: String
    var better: String
    var swift: BenchSideStats?
    var c: BenchSideStats?
    var ratio: Double?
    var target: BenchTarget?
    var met: Bool?
    var note: String?
    var error: String?
}

struct BenchReport: Codable {
    var schema = "uds-bench/1"
    var build: String
    var quick: Bool
    var kernel: String
    var allowedCPUs: [Int]
    var runsPerSide: Int
    var order = "interleaved: swift, c, swift, c, ..."
    var results: [BenchRowResult]
}

// MARK: - The driver

struct BenchDriver {
    let quick: Bool
    let json: Bool
    let runs: Int
    let placement: String
    let only: [String]

    #if DEBUG
    static let build = "debug"
    #else
    static let build = "release"
    #endif

    /// Runs the selected scenarios; returns the number that failed.
    func run() async throws -> Int {
        #if DEBUG
        BenchSystem.writeStderr(
            "uds bench: WARNING: this is a debug build: its numbers measure nothing. "
                + "Build with `swift build -c release` and run .build/release/uds bench.\n"
        )
        #endif
        BenchSystem.raiseDescriptorLimit()
        let cpus = BenchSystem.allowedCPUs()  // before pinning
        let clientCPU = cpus[0]
        try BenchSystem.pin(clientCPU)  // every thread, those that exist already included
        var placements: [(String, Int)] = []
        if placement != "split" { placements.append(("same", clientCPU)) }
        if placement != "same" {
            if cpus.count > 1 {
                placements.append(("split", cpus[1]))
            } else {
                BenchSystem.writeStderr("uds bench: only one CPU is allowed: no split placement\n")
            }
        }
        let rows = benchRows(quick ? .quick : .full).filter { row in
            only.isEmpty || only.contains { row.id.contains($0) }
        }
        if rows.isEmpty { throw BenchError("no scenario matches --only \(only.joined(separator: " "))") }
        let directory = try BenchSystem.makeTempDir()
        defer { BenchSystem.removeTree(directory) }
        var context = RunContext(
            executable: BenchSystem.executablePath(),
            directory: directory,
            clientCPU: clientCPU,
            total: rows.count * placements.count
        )
        var results: [BenchRowResult] = []
        var failed = 0
        for row in rows {
            for (name, serverCPU) in placements {
                var result = BenchRowResult(
                    id: row.id,
                    title: row.title,
                    scenario: row.job.scenario.rawValue,
                    type: row.job.type.rawValue,
                    api: row.job.api.rawValue,
                    size: row.job.size,
                    placement: name,
                    clientCPU: clientCPU,
                    serverCPU: serverCPU,
                    metric: row.metric.rawValue,
                    better: row.metric.higherIsBetter ? "higher" : "lower",
                    target: row.target,
                    note: row.note
                )
                context.index += 1
                if row.note?.hasPrefix("skipped") == true {
                    results.append(result)
                    continue
                }
                do {
                    try await context.measure(row, placement: name, serverCPU: serverCPU, runs: runs, into: &result)
                } catch {
                    failed += 1
                    result.error = "\(error)"
                    context.clearProgress()
                    BenchSystem.writeStderr("uds bench: \(row.id) (\(name)): \(error)\n")
                }
                results.append(result)
            }
        }
        context.clearProgress()
        let report = BenchReport(
            build: Self.build,
            quick: quick,
            kernel: BenchSystem.kernelRelease(),
            allowedCPUs: cpus,
            runsPerSide: runs,
            results: results
        )
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print(BenchTable.render(report), terminator: "")
        }
        return failed
    }
}

/// Per-run bookkeeping of the driver: paths, the progress line.
struct RunContext {
    let executable: String
    let directory: String
    let clientCPU: Int
    let total: Int
    var index = 0
    var counter = 0
    var progressShown = false
    let terminal = BenchSystem.stderrIsTerminal()

    mutating func progress(_ text: String) {
        if terminal {
            BenchSystem.writeStderr("\r\u{1B}[K" + text)
            progressShown = true
        }
    }

    mutating func clearProgress() {
        if progressShown {
            BenchSystem.writeStderr("\r\u{1B}[K")
            progressShown = false
        }
    }

    mutating func measure(
        _ row: BenchRow,
        placement: String,
        serverCPU: Int,
        runs: Int,
        into result: inout BenchRowResult
    ) async throws {
        if !terminal {
            BenchSystem.writeStderr("uds bench: [\(index)/\(total)] \(row.title) (\(placement))\n")
        }
        var swiftRuns: [BenchMeasurement] = []
        var cRuns: [BenchMeasurement] = []
        let rowRuns = row.job.scenario == .many ? min(runs, 3) : runs
        for run in 1...rowRuns {
            for impl in row.hasC ? [BenchJob.Impl.swift, .c] : [.swift] {
                progress(
                    "uds bench: [\(index)/\(total)] \(row.title) (\(placement)) run \(run)/\(rowRuns) \(impl.rawValue)"
                )
                let measurement = try await runOnce(row.job, impl: impl, serverCPU: serverCPU)
                if impl == .swift { swiftRuns.append(measurement) } else { cRuns.append(measurement) }
            }
        }
        result.swift = stats(swiftRuns, row.job)
        if row.hasC {
            result.c = stats(cRuns, row.job)
            if let swift = result.swift, let c = result.c, c.median > 0 {
                let ratio = swift.median / c.median
                result.ratio = ratio
                result.met = row.target.map { $0.met(ratio) }
            }
        }
    }

    /// One run: starts the server peer, runs the client here, waits for the peer.
    mutating func runOnce(_ template: BenchJob, impl: BenchJob.Impl, serverCPU: Int) async throws -> BenchMeasurement {
        counter += 1
        var job = template
        job.impl = impl
        if impl == .c { job.api = .blocking }
        job.path = directory + "/s\(counter).sock"
        job.clientPath = directory + "/c\(counter).sock"
        var server = job
        server.role = .server
        server.cpu = serverCPU
        server.watchdog = 600
        job.role = .client
        let client = job
        do {
            return try await BenchPeer.run(server, executable: executable) { try await BenchRunner.runClient(client) }
        } catch let failure as BenchPeer.ServerFailure {
            throw BenchError("the \(impl.rawValue) server failed: \(failure.description)")
        }
    }

    /// The per-run value of a measurement in the row's metric.
    func value(_ measurement: BenchMeasurement, _ job: BenchJob) -> (Double, Double?) {
        switch measurement {
        case .samples(let samples):
            let sorted = samples.sorted()
            return (BenchStats.percentile(sorted, 50), BenchStats.percentile(sorted, 99))
        case .elapsed(let ns):
            let seconds = Double(max(ns, 1)) / 1e9
            switch job.scenario {
            case .throughput:
                if job.type == .stream { return (Double(job.totalBytes) / seconds, nil) }
                return (Double(job.totalBytes / UInt64(job.size)) / seconds, nil)
            case .fdpass: return (Double(job.iterations) / seconds, nil)
            case .accept: return (Double(job.iterations + 1) / seconds, nil)
            case .many: return (Double(job.clients * job.iterations) / seconds, nil)
            case .rtt: return (seconds * 1e9, nil)
            }
        }
    }

    func stats(_ measurements: [BenchMeasurement], _ job: BenchJob) -> BenchSideStats? {
        guard !measurements.isEmpty else { return nil }
        let values = measurements.map { value($0, job) }
        let mains = values.map(\.0)
        let p99s = values.compactMap(\.1)
        return BenchSideStats(
            median: BenchStats.median(mains),
            min: mains.min()!,
            max: mains.max()!,
            p99: p99s.isEmpty ? nil : BenchStats.median(p99s),
            runs: mains
        )
    }
}

// MARK: - The table

enum BenchTable {
    static func render(_ report: BenchReport) -> String {
        var out = ""
        if report.build == "debug" {
            out += "WARNING: debug build: these numbers measure nothing (build with -c release).\n"
        }
        let cpus = report.allowedCPUs.map(String.init).joined(separator: ",")
        out += "uds bench: \(report.build) build, Linux \(report.kernel), CPUs allowed: \(cpus); "
        out += "\(report.runsPerSide) run(s) per side, interleaved Swift, C, Swift, C, ...\n"
        if let same = report.results.first(where: { $0.placement == "same" }) {
            out += "placement same = client and server both pinned to CPU \(same.clientCPU) (headline)\n"
        }
        if let split = report.results.first(where: { $0.placement == "split" }) {
            out += "placement split = client on CPU \(split.clientCPU), server on CPU \(split.serverCPU)\n"
        }
        out += "Swift = UnixSockets server + client; C = CBaseline server + client (blocking syscalls).\n"
        out += "Values: median of the runs [min-max]; round trips in us (with the median of the runs' p99).\n"
        out += "ratio = Swift/C of the medians: for round trips lower is better, for rates higher is better.\n\n"
        var lines: [[String]] = [["scenario", "place", "Swift", "C", "Swift/C", "target", "note"]]
        for result in report.results {
            let unit = unitText(result)
            let swift = result.swift.map { side(result, $0) } ?? "-"
            let c = result.c.map { side(result, $0) } ?? "-"
            let ratio = result.ratio.map { String(format: "%.2f", $0) } ?? "-"
            var target = "-"
            if let t = result.target {
                target = t.text + (result.met.map { $0 ? " ok" : " MISS" } ?? "")
            }
            var note = result.note ?? ""
            if let error = result.error { note = "FAILED: " + error }
            lines.append(["\(result.title) (\(unit))", result.placement, swift, c, ratio, target, note])
        }
        var widths = [Int](repeating: 0, count: 7)
        for line in lines { for (index, cell) in line.enumerated() { widths[index] = max(widths[index], cell.count) } }
        for line in lines {
            var text = ""
            for (index, cell) in line.enumerated() {
                let padded = index == 6 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
                text += padded + (index < 6 ? "  " : "")
            }
            while text.hasSuffix(" ") { text.removeLast() }
            out += text + "\n"
        }
        return out
    }

    static func unitText(_ result: BenchRowResult) -> String {
        switch BenchMetric(rawValue: result.metric) {
        case .latency: "us"
        case .bytesPerSecond: "MiB/s"
        case .messagesPerSecond: "msg/s"
        case .descriptorsPerSecond: "fd/s"
        case .connectionsPerSecond: "conn/s"
        case nil: "?"
        }
    }

    static func number(_ result: BenchRowResult, _ value: Double) -> String {
        switch BenchMetric(rawValue: result.metric) {
        case .latency: return String(format: value / 1000 < 10 ? "%.2f" : "%.1f", value / 1000)
        case .bytesPerSecond: return String(format: "%.0f", value / 1_048_576)
        default:
            if value >= 1e6 { return String(format: "%.2fM", value / 1e6) }
            if value >= 1e3 { return String(format: "%.1fk", value / 1e3) }
            return String(format: "%.0f", value)
        }
    }

    static func side(_ result: BenchRowResult, _ stats: BenchSideStats) -> String {
        var text = "\(number(result, stats.median)) [\(number(result, stats.min))-\(number(result, stats.max))]"
        if let p99 = stats.p99 { text += " p99 \(number(result, p99))" }
        return text
    }
}
