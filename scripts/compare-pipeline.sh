#!/usr/bin/env bash
# Throughput of `uds connect ADDR < FILE` into `uds listen ADDR > /dev/null`, beside socat (default
# buffer and -b 65536) and OpenBSD nc -U on the same pipeline, in the same run, rounds interleaved.
# Prints the median MB/s (10^6 bytes per second) of each and the ratio uds / best other.
#
#   scripts/compare-pipeline.sh              # 1 GiB, 5 rounds
#   SIZE_MB=256 ROUNDS=3 scripts/compare-pipeline.sh
#
# Needs socat and netcat-openbsd (apt-get install -y socat netcat-openbsd).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MB=${SIZE_MB:-1024}
ROUNDS=${ROUNDS:-5}
SCRATCH=${SCRATCH:-.build}

for tool in socat nc; do
    command -v "$tool" >/dev/null || { echo "compare-pipeline: $tool is not installed" >&2; exit 1; }
done

echo "building uds (release)..." >&2
swift build -c release --product uds --scratch-path "$SCRATCH" >&2
UDS="$SCRATCH/release/uds"

dir=$(mktemp -d /tmp/uds-cmp-XXXXXX)
trap 'rm -rf "$dir"' EXIT
file="$dir/payload.bin"
sock="$dir/s.sock"
head -c $((SIZE_MB * 1024 * 1024)) /dev/urandom >"$file"
bytes=$(stat -c %s "$file")
cat "$file" >/dev/null # warm the page cache

now() { date +%s.%N; }

# run_one NAME: prints the seconds from the client's start until both ends exited.
run_one() {
    rm -f "$sock"
    local server client
    case "$1" in
        uds)
            "$UDS" listen "$sock" >/dev/null </dev/null &
            server=$!
            client=("$UDS" connect "$sock")
            ;;
        socat)
            socat -u UNIX-LISTEN:"$sock" STDOUT >/dev/null </dev/null &
            server=$!
            client=(socat -u STDIN UNIX-CONNECT:"$sock")
            ;;
        socat-b65536)
            socat -b 65536 -u UNIX-LISTEN:"$sock" STDOUT >/dev/null </dev/null &
            server=$!
            client=(socat -b 65536 -u STDIN UNIX-CONNECT:"$sock")
            ;;
        nc)
            nc -lU "$sock" >/dev/null </dev/null &
            server=$!
            client=(nc -U -N "$sock")
            ;;
    esac
    for _ in $(seq 500); do [ -S "$sock" ] && break; sleep 0.01; done
    local start end
    start=$(now)
    "${client[@]}" <"$file" >/dev/null
    wait "$server"
    end=$(now)
    echo "$end - $start" | bc -l
}

tools=(uds socat socat-b65536 nc)
declare -A times
for round in $(seq "$ROUNDS"); do
    for tool in "${tools[@]}"; do
        seconds=$(run_one "$tool")
        times[$tool]+="$seconds "
        printf 'round %d  %-13s %8.1f MB/s\n' "$round" "$tool" "$(echo "$bytes / $seconds / 1000000" | bc -l)" >&2
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

echo "pipeline: connect < ${SIZE_MB} MiB file -> listen > /dev/null, ${ROUNDS} rounds interleaved, median"
best_other=0
for tool in "${tools[@]}"; do
    seconds=$(echo "${times[$tool]}" | median)
    rate=$(echo "$bytes / $seconds / 1000000" | bc -l)
    printf '  %-13s %8.1f MB/s\n' "$tool" "$rate"
    if [ "$tool" = uds ]; then
        uds_rate=$rate
    elif (($(echo "$rate > $best_other" | bc -l))); then
        best_other=$rate
        best_name=$tool
    fi
done
printf '  uds / best other (%s): %.2fx\n' "$best_name" "$(echo "$uds_rate / $best_other" | bc -l)"
