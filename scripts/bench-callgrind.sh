#!/bin/bash
# Instruction counts per operation of one `uds bench` client (Swift or C), with callgrind.
#
#   scripts/bench-callgrind.sh IMPL API TYPE SCENARIO N [SIZE]
#   e.g. scripts/bench-callgrind.sh swift blocking seqpacket rtt 10000
#
# Runs the client twice under callgrind (1 and N+1 operations) against a native server peer and prints the
# per-operation difference by function (start-up cost cancels out). Needs a release build in
# .build-bench (swift build -c release --scratch-path .build-bench). valgrind cannot read the DWARF of
# Swift binaries, so a copy with the debug info stripped is profiled (function names stay).
set -euo pipefail
impl=$1 api=$2 type=$3 scenario=$4 n=$5 size=${6:-64}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/udscg-XXXXXX)
trap 'rm -rf "$work"' EXIT
cp "$root/.build-bench/release/uds" "$work/uds" && objcopy --strip-debug "$work/uds"
profile() {  # $1 = operations, $2 = output file
    local ops=$1 bytes=0
    [ "$scenario" = throughput ] && bytes=$((ops * size))
    local job="{\"scenario\":\"$scenario\",\"impl\":\"$impl\",\"api\":\"$api\",\"type\":\"$type\",\"path\":\"$work/s.sock\",\"clientPath\":\"$work/c.sock\",\"readyFD\":-1,\"watchdog\":300,\"clients\":0,\"sockbuf\":0,\"size\":$size,\"warmup\":0,\"iterations\":$ops,\"totalBytes\":$bytes"
    "$work/uds" bench --peer "$job,\"role\":\"server\",\"cpu\":0}" &
    local server=$!
    for _ in $(seq 200); do [ -S "$work/s.sock" ] && break; sleep 0.05; done
    taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$2" "$work/uds" bench --peer "$job,\"role\":\"client\"}" \
        >/dev/null 2>&1 || { kill "$server" 2>/dev/null; echo "client failed" >&2; exit 1; }
    wait "$server"
}
profile 1 "$work/zero.out"
profile $((n + 1)) "$work/n.out"
python3 - "$work/zero.out" "$work/n.out" "$n" <<'PY'
import collections, re, subprocess, sys
def load(path):
    out = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", path],
                         capture_output=True, text=True).stdout
    counts = collections.Counter()
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(.*)", line)
        if m and "PROGRAM TOTALS" not in line:
            counts[re.sub(r"\s*\[[^\]]*\]$", "", m.group(2))[:140]] += int(m.group(1).replace(",", ""))
    return counts
zero, full, n = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3])
diff = {k: (full[k] - zero.get(k, 0)) / n for k in full}
print(f"instructions per operation (client, user space): {sum(diff.values()):.0f}")
for name, value in sorted(diff.items(), key=lambda item: -item[1])[:25]:
    if abs(value) >= 5:
        print(f"{value:8.0f}  {name}")
PY
