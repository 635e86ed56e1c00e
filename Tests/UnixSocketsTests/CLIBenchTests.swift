import Foundation
import Testing

/// `uds bench --quick` works end to end: every scenario runs with the Swift library and the C baseline,
/// each against a peer process, and the output parses. No timing is asserted (CI machines are noisy).
@Suite struct CLIBenchTests {
    @Test func quickBenchPrintsJSONThatParses() throws {
        let directory = try TempDirectory()
        let result = try CLI.uds(["bench", "--quick", "--json"], in: directory, seconds: 120)
        #expect(result.status == 0, "stderr: \(result.error)")
        let object = try JSONSerialization.jsonObject(with: Data(result.output))
        let report = try #require(object as? [String: Any])
        #expect(report["schema"] as? String == "uds-bench/1")
        #expect(["debug", "release"].contains(report["build"] as? String ?? ""))
        let results = try #require(report["results"] as? [[String: Any]])
        let scenarios = Set(results.compactMap { $0["scenario"] as? String })
        #expect(scenarios == ["rtt", "throughput", "fdpass", "accept", "many"])
        for row in results where !((row["note"] as? String)?.hasPrefix("skipped") ?? false) {
            let id = row["id"] as? String ?? "?"
            #expect(row["error"] == nil, "\(id) failed: \(row["error"] ?? "")")
            let swift = try #require(row["swift"] as? [String: Any], "\(id) has no Swift figures")
            #expect((swift["median"] as? Double ?? 0) > 0, "\(id)")
            if row["scenario"] as? String != "many" {
                let c = try #require(row["c"] as? [String: Any], "\(id) has no C figures")
                #expect((c["median"] as? Double ?? 0) > 0, "\(id)")
                #expect(row["ratio"] is Double, "\(id)")
            }
            if row["scenario"] as? String == "rtt" { #expect(swift["p99"] is Double, "\(id)") }
        }
    }

    @Test func quickBenchPrintsATable() throws {
        let directory = try TempDirectory()
        let result = try CLI.uds(
            ["bench", "--quick", "--only", "rtt.stream.blocking", "--only", "fdpass.seqpacket"],
            in: directory,
            seconds: 60
        )
        #expect(result.status == 0, "stderr: \(result.error)")
        let text = result.outputText
        #expect(text.contains("placement same"))
        #expect(text.contains("round trip stream 64 B blocking"))
        #expect(text.contains("descriptor passing seqpacket blocking"))
        #expect(text.contains("Swift/C"))
        #if DEBUG
        #expect(result.error.contains("debug build"))
        #endif
    }

    @Test func benchRejectsABadPlacement() throws {
        let directory = try TempDirectory()
        let result = try CLI.uds(["bench", "--placement", "nowhere"], in: directory)
        #expect(result.status == 64)
    }
}
