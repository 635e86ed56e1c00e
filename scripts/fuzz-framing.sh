#!/usr/bin/env bash
# Fuzzes the frame codec with libFuzzer (and AddressSanitizer) for a bounded time.
#
# Usage: scripts/fuzz-framing.sh [SECONDS]     (or FUZZ_SECONDS=SECONDS; default 60)
#
# Builds Sources/UnixSocketsAsync/Framing/FrameCodec.swift (which compiles alone, stdlib only) together with
# fuzz/FrameCodecFuzz.swift into .build-fuzz/frame-codec-fuzz, runs it with a corpus in .build-fuzz/corpus, and
# prints how many inputs it executed. Exits non-zero if the build fails or the fuzzer finds a crash (the crashing
# input is written to .build-fuzz/artifacts/).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${1:-${FUZZ_SECONDS:-60}}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "fuzz-framing: the duration must be a positive number of seconds, not '$seconds'" >&2
    exit 2
fi

out=.build-fuzz
binary="$out/frame-codec-fuzz"
corpus="$out/corpus"
artifacts="$out/artifacts"
log="$out/fuzz.log"
mkdir -p "$out" "$corpus" "$artifacts"

swiftc=swiftc
if ! command -v swiftc >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swiftc ]; then
    swiftc=/opt/swift/usr/bin/swiftc
fi

echo "fuzz-framing: building $binary"
"$swiftc" -sanitize=fuzzer,address -parse-as-library -O -swift-version 6 -warnings-as-errors -use-ld=lld \
    -module-name FrameCodecFuzz \
    Sources/UnixSocketsAsync/Framing/FrameCodec.swift fuzz/FrameCodecFuzz.swift \
    -o "$binary"

# Seed the corpus with a few well-formed streams so the fuzzer starts from frames, not noise.
if [ -z "$(ls -A "$corpus")" ]; then
    printf '\x00' >"$corpus/empty"
    printf '\x10\x00\x00\x00\x03abc\x00\x00\x00\x00' >"$corpus/two-frames"
    printf '\x40\x00\x00\x00\x41' >"$corpus/over-64"
    printf '\x07\x00\x00\x00\x05ab' >"$corpus/truncated-body"
    printf '\x01\x00\x00' >"$corpus/truncated-header"
fi

echo "fuzz-framing: fuzzing for ${seconds}s (log: $log)"
status=0
"$binary" -max_total_time="$seconds" -print_final_stats=1 -max_len=4096 \
    -artifact_prefix="$artifacts/" "$corpus" >"$log" 2>&1 || status=$?

executed="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
last="$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)"
echo "fuzz-framing: last status line: ${last:-none}"
echo "fuzz-framing: executed ${executed:-unknown} inputs in ${seconds}s"
if [ "$status" -ne 0 ]; then
    echo "fuzz-framing: the fuzzer failed (exit $status); end of the log:" >&2
    tail -n 40 "$log" >&2
    exit "$status"
fi
