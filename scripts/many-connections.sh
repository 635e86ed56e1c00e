#!/usr/bin/env bash
# Many idle connections: starts a server, opens N (default 10,000) stream connections to it from one C
# process (each checked with one echo), then measures the server's resident memory and threads with all of
# them open and idle. Checks the performance issue's target: every connection served, at most 16 KiB of
# VmRSS growth per idle connection, at most cores + 4 threads. Runs both servers by default:
#   unixserver  the SoakEchoServer example (a framed echo UnixServer, limits raised to N)
#   uds         uds listen -k --echo --max-connections N --max-per-uid N
#
#   scripts/many-connections.sh            # release build, both servers, 10,000 connections
#   MANY=2000 SERVERS=uds scripts/many-connections.sh
#
# Needs RLIMIT_NOFILE's hard limit above N + a few (the client and server raise their soft limit to it).
set -euo pipefail
cd "$(dirname "$0")/.."

count=${MANY:-10000}
servers=${SERVERS:-unixserver uds}
configuration=${CONFIGURATION:-release}
max_bytes_per_connection=$((16 * 1024))
max_threads=$(($(nproc) + 4))

hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt $((count + 64)) ]; then
    echo "many-connections: RLIMIT_NOFILE hard limit $hard is below $count + 64; lower MANY" >&2
    exit 2
fi

swift build -c "$configuration" --product uds >/dev/null
swift build -c "$configuration" --product SoakEchoServer >/dev/null
bin=$(swift build -c "$configuration" --show-bin-path)
work=$(mktemp -d /tmp/uds-many.XXXXXX)
cc -O2 -Wall -o "$work/client" scripts/many-connections/client.c

server_pid=
client_pid=
cleanup() {
    [ -n "$client_pid" ] && kill "$client_pid" 2>/dev/null || true
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

status=0
for server in $servers; do
    socket=$work/$server.sock
    case $server in
    unixserver) command=("$bin/SoakEchoServer" "$socket" --max-connections "$count"); mode=framed ;;
    uds) command=("$bin/uds" listen -k --echo --max-connections "$count" --max-per-uid "$count" "$socket"); mode= ;;
    *) echo "many-connections: unknown server $server" >&2; exit 64 ;;
    esac
    (ulimit -Sn "$hard"; exec "${command[@]}") >/dev/null 2>"$work/$server.err" &
    server_pid=$!
    for _ in $(seq 200); do [ -S "$socket" ] && break; sleep 0.05; done
    [ -S "$socket" ] || { echo "$server: no socket after 10 s"; cat "$work/$server.err"; exit 1; }
    sleep 0.5
    rss_idle=$(awk '/VmRSS/ {print $2}' "/proc/$server_pid/status")
    threads_idle=$(ls "/proc/$server_pid/task" | wc -l)

    rm -f "$work/hold"; mkfifo "$work/hold"
    "$work/client" "$socket" "$count" $mode <"$work/hold" >"$work/$server.out" &
    client_pid=$!
    exec 3>"$work/hold"
    for _ in $(seq 1200); do [ -s "$work/$server.out" ] && break; kill -0 "$client_pid" 2>/dev/null || break; sleep 0.1; done
    sleep 0.5
    rss_loaded=$(awk '/VmRSS/ {print $2}' "/proc/$server_pid/status")
    threads_loaded=$(ls "/proc/$server_pid/task" | wc -l)
    exec 3>&-
    client_status=0
    wait "$client_pid" || client_status=$?
    client_pid=
    kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=

    served=$(cat "$work/$server.out")
    per_connection=$(((rss_loaded - rss_idle) * 1024 / count))
    verdict=ok
    [ "$client_status" -eq 0 ] || verdict="FAIL (not all served)"
    [ "$per_connection" -le "$max_bytes_per_connection" ] || verdict="FAIL (memory)"
    [ "$threads_loaded" -le "$max_threads" ] || verdict="FAIL (threads)"
    [ "$verdict" = ok ] || status=1
    printf '%-10s %s; VmRSS %s -> %s KiB: %s bytes per idle connection (<= %s); threads %s -> %s (<= %s): %s\n' \
        "$server" "${served:-no output}" "$rss_idle" "$rss_loaded" "$per_connection" "$max_bytes_per_connection" \
        "$threads_idle" "$threads_loaded" "$max_threads" "$verdict"
done
exit $status
