#!/usr/bin/env bash
# The proxy's stream throughput beside socat's own UDS-to-UDS relay, on the same pipeline in the same run:
#   head -c SIZE /dev/zero | uds connect PROXY  ->  relay  ->  uds listen TARGET > /dev/null
# for `uds proxy` (no --dump), `socat UNIX-LISTEN:...,fork UNIX-CONNECT:...` and the same with -b 65536,
# interleaved, RUNS times each. Prints each relay's median MB/s and CPU time (user + system, its children
# included) and the proxy's ratio to the faster socat.
#
#   scripts/proxy-throughput.sh              # 1 GiB, 5 runs each, release build
#   SIZE=256M RUNS=3 scripts/proxy-throughput.sh
set -euo pipefail
cd "$(dirname "$0")/.."
size=${SIZE:-1G}
runs=${RUNS:-5}
command -v socat >/dev/null || { echo "proxy-throughput: needs socat" >&2; exit 2; }
swift build -c release --product uds >/dev/null
uds=$(swift build -c release --show-bin-path)/uds
work=$(mktemp -d /tmp/uds-pt.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
bytes=$(numfmt --from=iec "$size")

one() {  # one run through relay $1; prints MB/s
    rm -f "$work/t.sock" "$work/p.sock"
    "$uds" listen "$work/t.sock" >/dev/null </dev/null &
    local sink=$!
    while [ ! -S "$work/t.sock" ]; do sleep 0.02; done
    case $1 in
    uds) "$uds" proxy "$work/p.sock" "$work/t.sock" & ;;
    socat) socat "UNIX-LISTEN:$work/p.sock,fork" "UNIX-CONNECT:$work/t.sock" & ;;
    socat-b65536) socat -b 65536 "UNIX-LISTEN:$work/p.sock,fork" "UNIX-CONNECT:$work/t.sock" & ;;
    esac
    local relay=$!
    while [ ! -S "$work/p.sock" ]; do sleep 0.02; done
    local start end
    start=$(date +%s%N)
    head -c "$size" /dev/zero | "$uds" connect "$work/p.sock" >/dev/null
    wait "$sink"
    end=$(date +%s%N)
    # The relay's CPU time (user + system, ms): its own, its reaped children's (socat's per-connection
    # fork), and any child still running.
    local ticks children child
    ticks=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$relay/stat")
    children=$(cat "/proc/$relay/task/$relay/children" 2>/dev/null || true)
    for child in $children; do ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$child/stat" 2>/dev/null || echo 0))); done
    kill "$relay" 2>/dev/null || true
    wait "$relay" 2>/dev/null || true
    echo "$((bytes * 1000 / (end - start))) $((ticks * 1000 / $(getconf CLK_TCK)))"
}

declare -A results cpu
for _ in $(seq "$runs"); do
    for relay in uds socat socat-b65536; do
        read -r rate ms < <(one "$relay")
        results[$relay]+="$rate "
        cpu[$relay]+="$ms "
    done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for relay in uds socat socat-b65536; do
    printf '%-14s median %5s MB/s, relay CPU %5s ms   runs (MB/s): %s\n' "$relay" \
        "$(echo "${results[$relay]}" | median)" "$(echo "${cpu[$relay]}" | median)" "${results[$relay]}"
done
u=$(echo "${results[uds]}" | median)
s1=$(echo "${results[socat]}" | median)
s2=$(echo "${results[socat-b65536]}" | median)
best=$((s1 > s2 ? s1 : s2))
echo "uds proxy / faster socat: $(awk -v u="$u" -v b="$best" 'BEGIN {printf "%.2f", u / b}')x (target >= 2.00x)"
