#!/usr/bin/env bash
# The one formatter: swift format (it ships with the toolchain), configured by the root .swift-format:
# swift-nio's (4 spaces, 120 columns, ordered imports, existing line breaks respected), with three rules off
# for what this code does on purpose:
#   ReplaceForEachWithForLoop       `descriptors.forEach { $0.close() }` says "close them all" in one line
#   OnlyOneTrailingClosureArgument  `closingOnExit({ open }) { $0.close() }`: an action and its cleanup
#   OneCasePerLine                  small enums list payload cases on one line (InheritedFile's kinds)
#   scripts/format.sh          rewrites every Swift file in place
#   scripts/format.sh --check  changes nothing; lists each finding and exits non-zero if there is any
set -euo pipefail
cd "$(dirname "$0")/.."

paths=()
for path in Sources Tests fuzz Benchmarks Examples Package.swift; do
    [ -e "$path" ] && paths+=("$path")
done

case "${1:-}" in
    "")
        swift format format --in-place --recursive --parallel "${paths[@]}"
        ;;
    --check)
        # lint --strict turns every warning into an error, so any finding makes the exit status non-zero.
        if ! swift format lint --strict --recursive --parallel "${paths[@]}"; then
            echo "scripts/format.sh --check: formatting findings above; run scripts/format.sh to fix them" >&2
            exit 1
        fi
        ;;
    *)
        echo "usage: scripts/format.sh [--check]" >&2
        exit 64
        ;;
esac
