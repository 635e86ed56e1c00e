#!/usr/bin/env bash
# Soak: an echo UnixServer (default limits) and `uds listen -k --echo`, each under 1,000 clients for
# SOAK_SECONDS: 900 honest clients doing round trips (a descriptor on every tenth message, frames from 0 bytes
# to 1 MiB) and 100 hostile ones (non-readers, slowloris tricklers, clients killed mid-frame), reconnecting as
# they are cut off. Samples each server's VmRSS and open descriptors every second and checks that:
#   - every honest client's bytes come back, exactly (and, from UnixServer, its descriptors);
#   - no honest client is cut off or stalls;
#   - RSS and descriptor counts stay flat (after a 15 % warm-up, the median of the second half of the samples
#     is within 20 % + 16 MiB, and 10 % + 32 descriptors, of the first half's), RSS stays under
#     SOAK_MAX_RSS_MIB, and the descriptor count returns to its idle value once the clients are gone;
#   - the server then exits 0 on SIGTERM (a graceful shutdown).
# Prints a summary table; exits 1 if any check fails.
#
#   SOAK_SECONDS=120 scripts/soak.sh
#
# Environment: SOAK_SECONDS (default 180, per server), SOAK_SERVERS ("unixserver uds"), SOAK_CONFIGURATION
# (debug or release, default debug), SOAK_MAX_RSS_MIB (default 768), SOAK_HONEST / SOAK_NONREADERS /
# SOAK_TRICKLERS / SOAK_KILLERS (900 / 40 / 30 / 30), SOAK_SEED, SOAK_KEEP (keep the logs).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${SOAK_SECONDS:-180}
servers=${SOAK_SERVERS:-unixserver uds}
configuration=${SOAK_CONFIGURATION:-debug}
max_rss_mib=${SOAK_MAX_RSS_MIB:-768}
honest=${SOAK_HONEST:-900}
nonreaders=${SOAK_NONREADERS:-40}
tricklers=${SOAK_TRICKLERS:-30}
killers=${SOAK_KILLERS:-30}
seed=${SOAK_SEED:-$RANDOM}
python=$(command -v /usr/bin/python3 || command -v python3)

# 1,000 clients in the driver, 1,000 connections plus queued descriptors in the server.
hard=$(ulimit -Hn)
want=65536
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then want=$hard; fi
ulimit -n "$want"
if [ "$(ulimit -n)" -lt 4096 ]; then
    echo "soak: needs at least 4096 descriptors (ulimit -n is $(ulimit -n))" >&2
    exit 1
fi

swift build -c "$configuration" --product SoakEchoServer >&2
swift build -c "$configuration" --product uds >&2
bin=$(swift build -c "$configuration" --show-bin-path)

work=$(mktemp -d /tmp/soak-XXXXXX)
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill -KILL "$server_pid" 2>/dev/null || true; fi
    if [ -n "${SOAK_KEEP:-}" ]; then echo "soak: logs kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

# The client driver: one process, one epoll loop, non-blocking sockets. Prints one JSON line of counts.
cat > "$work/driver.py" <<'PY'
import array, errno, heapq, json, os, random, selectors, socket, struct, sys, time

address, mode = sys.argv[1], sys.argv[2]
duration, honest_n, nonreader_n, trickler_n, killer_n, seed = (int(x) for x in sys.argv[3:9])
if address.startswith('@'):
    address = '\0' + address[1:]
rng = random.Random(seed)
block = os.urandom(2 << 20)
nullfd = os.open('/dev/null', os.O_RDONLY)
sel = selectors.DefaultSelector()
timers, sequence = [], 0
stats = dict(round_trips=0, bytes=0, fds_sent=0, fds_back=0, mismatches=0, descriptor_mismatches=0,
             honest_failures={}, max_round_trip_ms=0, nonreader_cut=0, nonreader_frames=0, trickler_cut=0,
             kills=0, refused_connects=0)
start = time.monotonic()
deadline = start + duration

def later(delay, callback):
    global sequence
    sequence += 1
    heapq.heappush(timers, (time.monotonic() + delay, sequence, callback))

def connect(blocking_timeout=10):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(blocking_timeout)
    s.connect(address)
    s.setblocking(False)
    return s

def errname(e):
    return errno.errorcode.get(e.errno, str(e.errno)) if isinstance(e, OSError) and e.errno else type(e).__name__

def take_fds(ancillary):
    count = 0
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array('i')
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
            for fd in fds:
                os.close(fd)
            count += len(fds)
    return count

def frame_size():
    r = rng.random()
    if r < 0.02: return 0
    if r < 0.72: return rng.randint(1, 1024)
    if r < 0.97: return rng.randint(1025, 65536)
    return rng.randint(65537, 1 << 20)

class Honest:
    def __init__(self, index):
        self.index, self.count, self.done, self.failed = index, 0, False, False
        self.sock = connect()
        sel.register(self.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, self)
        self.next_request()

    def next_request(self):
        if time.monotonic() >= deadline:
            self.finish()
            return
        size = frame_size()
        offset = rng.randrange(len(block) - size)
        self.expected = struct.pack('>I', size) + block[offset:offset + size]
        self.sent, self.received, self.fds = 0, bytearray(), 0
        self.with_fd = self.count % 10 == 0
        self.began = time.monotonic()
        sel.modify(self.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, self)

    def fail(self, reason):
        if self.done: return
        stats['honest_failures'][reason] = stats['honest_failures'].get(reason, 0) + 1
        self.failed = True
        self.finish()

    def finish(self):
        if self.done: return
        self.done = True
        sel.unregister(self.sock)
        self.sock.close()

    def on_write(self):
        try:
            rest = memoryview(self.expected)[self.sent:]
            if self.sent == 0 and self.with_fd:
                k = self.sock.sendmsg([rest], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', [nullfd]))])
                stats['fds_sent'] += 1
            else:
                k = self.sock.send(rest)
        except BlockingIOError:
            return
        except OSError as e:
            self.fail('send ' + errname(e))
            return
        self.sent += k
        if self.sent == len(self.expected):
            sel.modify(self.sock, selectors.EVENT_READ, self)

    def on_read(self):
        try:
            data, ancillary, flags, _ = self.sock.recvmsg(1 << 18, socket.CMSG_SPACE(16 * 4))
        except BlockingIOError:
            return
        except OSError as e:
            self.fail('receive ' + errname(e))
            return
        self.fds += take_fds(ancillary)
        if not data:
            self.fail('cut off (EOF)')
            return
        self.received += data
        if len(self.received) < len(self.expected):
            return
        if self.received != self.expected:
            stats['mismatches'] += 1
            self.fail('bytes differ')
            return
        stats['fds_back'] += self.fds
        if self.fds != (1 if self.with_fd and mode == 'framed' else 0):
            stats['descriptor_mismatches'] += 1
            self.fail('descriptors differ')
            return
        stats['round_trips'] += 1
        stats['bytes'] += len(self.expected)
        stats['max_round_trip_ms'] = max(stats['max_round_trip_ms'], int((time.monotonic() - self.began) * 1000))
        self.count += 1
        self.next_request()

class Hostile:
    """Reconnects whenever it is cut off; `churn` closes it now and then even if not."""
    def __init__(self):
        self.sock = None
        later(rng.uniform(0, 2), self.reconnect)

    def close(self):
        if self.sock is not None:
            sel.unregister(self.sock)
            self.sock.close()
            self.sock = None

    def reconnect(self):
        self.close()
        if time.monotonic() >= deadline: return
        try:
            self.sock = connect(5)
        except OSError:
            stats['refused_connects'] += 1
            later(1, self.reconnect)
            return
        self.generation = getattr(self, 'generation', 0) + 1
        self.started()

    def cut(self, key):
        stats[key] += 1
        self.close()
        later(0.5, self.reconnect)

class NonReader(Hostile):
    """Sends 1 MiB frames (a descriptor on every tenth) as fast as they are taken and never reads."""
    frame = struct.pack('>I', 1 << 20) + block[:1 << 20]

    def started(self):
        self.sent, self.frames = 0, 0
        sel.register(self.sock, selectors.EVENT_WRITE, self)
        generation = self.generation
        later(rng.uniform(5, 40), lambda: self.generation == generation and self.reconnect())

    def on_write(self):
        try:
            rest = memoryview(self.frame)[self.sent:]
            if self.sent == 0 and self.frames % 10 == 0:
                k = self.sock.sendmsg([rest], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', [nullfd]))])
            else:
                k = self.sock.send(rest)
        except BlockingIOError:
            return
        except OSError:
            self.cut('nonreader_cut')
            return
        self.sent += k
        if self.sent == len(self.frame):
            self.sent, self.frames = 0, self.frames + 1
            stats['nonreader_frames'] += 1

class Trickler(Hostile):
    """Announces a 1,000-byte frame and sends one byte of it every 2 s."""
    def started(self):
        try:
            self.sock.send(struct.pack('>I', 1000))
        except OSError:
            pass
        sel.register(self.sock, selectors.EVENT_READ, self)
        generation = self.generation
        later(2, lambda: self.tick(generation))
        later(rng.uniform(60, 120), lambda: self.generation == generation and self.reconnect())

    def tick(self, generation):
        if self.sock is None or self.generation != generation: return
        try:
            self.sock.send(b'.')
        except OSError:
            self.cut('trickler_cut')
            return
        later(2, lambda: self.tick(generation))

    def on_read(self):
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b''
        if not data:
            self.cut('trickler_cut')

class Killer(Hostile):
    """Sends the header and part of the body of a 64 KiB to 2 MiB frame (a descriptor one time in three), then dies."""
    def started(self):
        size = rng.randint(64 << 10, 2 << 20)
        part = struct.pack('>I', size) + block[:rng.randrange(size)]
        try:
            if rng.random() < 1 / 3:
                self.sock.sendmsg([part], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', [nullfd]))])
            else:
                self.sock.send(part)
        except OSError:
            pass
        stats['kills'] += 1
        self.sock.close()
        self.sock = None
        later(rng.uniform(0.1, 0.5), self.reconnect)

honest = [Honest(i) for i in range(honest_n)]
print(json.dumps(dict(event='connected', seconds=round(time.monotonic() - start, 1))), flush=True)
hostile = [NonReader() for _ in range(nonreader_n)] + [Trickler() for _ in range(trickler_n)] \
    + [Killer() for _ in range(killer_n)]

while True:
    now = time.monotonic()
    while timers and timers[0][0] <= now:
        _, _, callback = heapq.heappop(timers)
        callback()
    live = [h for h in honest if not h.done]
    for h in live:
        if now - h.began > 60:
            h.fail('stalled 60 s')
    if not live and now >= deadline:
        break
    if now >= deadline + 60:
        for h in live:
            h.fail('unfinished at the end')
        break
    wait = min(0.5, max(0.0, timers[0][0] - now)) if timers else 0.5
    for key, mask in sel.select(wait):
        client = key.data
        if mask & selectors.EVENT_READ and hasattr(client, 'on_read'):
            client.on_read()
        if mask & selectors.EVENT_WRITE and hasattr(client, 'on_write') and \
                getattr(client, 'sock', None) is not None and not getattr(client, 'done', False):
            try:
                if sel.get_key(client.sock).events & selectors.EVENT_WRITE:
                    client.on_write()
            except (KeyError, ValueError):
                pass

for h in hostile:
    h.close()
stats['event'] = 'done'
stats['honest'] = honest_n
stats['hostile'] = nonreader_n + trickler_n + killer_n
stats['honest_ok'] = sum(1 for h in honest if not h.failed)
stats['seconds'] = round(time.monotonic() - start, 1)
print(json.dumps(stats), flush=True)
PY

# Verdict and table from the driver's counts and the samples.
cat > "$work/report.py" <<'PY'
import json, sys

def load(prefix):
    stats = [json.loads(l) for l in open(prefix + '.driver') if l.startswith('{')]
    done = [s for s in stats if s.get('event') == 'done']
    samples = []
    for line in open(prefix + '.samples'):
        parts = line.split()
        if len(parts) == 4:
            samples.append((parts[0], float(parts[1]), int(parts[2]), int(parts[3])))
    idle = [int(l.split()[1]) for l in open(prefix + '.samples') if l.startswith('idle')]
    after = [int(l.split()[1]) for l in open(prefix + '.samples') if l.startswith('after')]
    status = [int(l.split()[1]) for l in open(prefix + '.samples') if l.startswith('exit')]
    return (done[0] if done else None), samples, idle, after, status

max_rss = int(sys.argv[1])
rows, failures = [], []
for prefix in sys.argv[2:]:
    name = prefix.rsplit('/', 1)[1]
    stats, samples, idle, after, status = load(prefix)
    if status != [0]:
        failures.append(f'{name}: exit status {status[0] if status else "?"} (0 expected: a graceful exit on SIGTERM; see its stderr)')
    run = [s for s in samples if s[0] == 'run']
    if stats is None or len(run) < 8:
        failures.append(f'{name}: the run did not complete ({len(run)} samples)')
        continue
    rss = [s[2] / 1024 for s in run]
    fds = [s[3] for s in run]
    # Flat: after a warm-up (the first 15 %), the second half's median is not above the first half's.
    steady = run[len(run) * 15 // 100:]
    half = len(steady) // 2
    median = lambda values: sorted(values)[len(values) // 2]
    rss1, rss2 = (median([s[2] for s in part]) / 1024 for part in (steady[:half], steady[half:]))
    fd1, fd2 = (median([s[3] for s in part]) for part in (steady[:half], steady[half:]))
    if stats['honest_ok'] != stats['honest']:
        failures.append(f"{name}: {stats['honest'] - stats['honest_ok']} honest clients failed: {stats['honest_failures']}")
    if stats['mismatches'] or stats['descriptor_mismatches']:
        failures.append(f"{name}: {stats['mismatches']} byte and {stats['descriptor_mismatches']} descriptor mismatches")
    if rss2 > rss1 * 1.2 + 16:
        failures.append(f'{name}: RSS grew: median {rss1:.0f} MiB in the first half, {rss2:.0f} MiB in the second')
    if max(rss) > max_rss:
        failures.append(f'{name}: RSS reached {max(rss):.0f} MiB (limit {max_rss} MiB)')
    if fd2 > fd1 * 1.1 + 32:
        failures.append(f'{name}: descriptors grew: median {fd1} in the first half, {fd2} in the second')
    if not idle or not after or after[0] > idle[0]:
        failures.append(f'{name}: {after[0] if after else "?"} descriptors open after the clients left, {idle[0] if idle else "?"} before they came')
    rows.append([name, f"{stats['seconds']:.0f}", f"{stats['honest']}+{stats['hostile']}",
                 f"{stats['round_trips']:,}", f"{stats['bytes'] / 1e6:,.0f}", f"{stats['fds_sent']:,}/{stats['fds_back']:,}",
                 f"{stats['honest_ok']}/{stats['honest']}", f"{stats['max_round_trip_ms']:,}",
                 f"{rss[0]:.0f}/{max(rss):.0f}/{rss[-1]:.0f}", f"{fds[0]}/{max(fds)}/{fds[-1]}",
                 f"{idle[0] if idle else '?'}/{after[0] if after else '?'}",
                 f"{stats['nonreader_cut']}/{stats['trickler_cut']}/{stats['kills']}"])

header = ['server', 's', 'clients', 'round trips', 'MB echoed', 'fds sent/back', 'honest ok', 'max rtt ms',
          'RSS MiB first/max/last', 'fds first/max/last', 'fds idle/after', 'cut: nonreader/trickler, kills']
table = [header] + rows
widths = [max(len(r[i]) for r in table) for i in range(len(header))]
for index, row in enumerate(table):
    print('| ' + ' | '.join(cell.ljust(widths[i]) for i, cell in enumerate(row)) + ' |')
    if index == 0:
        print('|' + '|'.join('-' * (w + 2) for w in widths) + '|')
for failure in failures:
    print('FAIL ' + failure)
print('soak: ' + ('FAILED' if failures else 'passed'))
sys.exit(1 if failures else 0)
PY

fd_count() { { ls "/proc/$1/fd" 2>/dev/null || true; } | wc -l; }

# soak NAME COMMAND...: starts the server, samples it, drives it, stops it.
soak() {
    local name=$1 address=$2
    shift 2
    local prefix="$work/$name"
    "$@" > "$prefix.stdout" 2> "$prefix.stderr" &
    server_pid=$!
    sleep 2
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "soak: $name did not start: $(cat "$prefix.stderr")" >&2
        return 1
    fi
    echo "idle $(fd_count "$server_pid")" > "$prefix.samples"
    (
        while kill -0 "$server_pid" 2>/dev/null && [ ! -e "$prefix.end" ]; do
            rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$server_pid/status" 2>/dev/null || echo 0)
            echo "run $(date +%s) ${rss:-0} $(fd_count "$server_pid")" >> "$prefix.samples"
            sleep 1
        done
    ) &
    local sampler=$!
    echo "soak: $name: $honest honest + $((nonreaders + tricklers + killers)) hostile clients for ${seconds}s (seed $seed)" >&2
    local mode=framed
    if [ "$name" = uds ]; then mode=raw; fi
    "$python" "$work/driver.py" "$address" "$mode" "$seconds" "$honest" "$nonreaders" "$tricklers" "$killers" "$seed" \
        > "$prefix.driver" || true
    touch "$prefix.end"
    wait "$sampler" || true
    # Every client is gone: the descriptor count must come back to its idle value.
    local idle now
    idle=$(awk '/^idle/ { print $2 }' "$prefix.samples")
    for _ in $(seq 1 60); do
        now=$(fd_count "$server_pid")
        if [ "$now" -le "$idle" ]; then break; fi
        sleep 0.5
    done
    echo "after $now" >> "$prefix.samples"
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 40); do
        if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
        sleep 0.25
    done
    kill -KILL "$server_pid" 2>/dev/null || true
    local status=0
    wait "$server_pid" 2>/dev/null || status=$?
    echo "exit $status" >> "$prefix.samples"
    server_pid=""
}

prefixes=()
for server in $servers; do
    case $server in
        unixserver)
            soak unixserver "@uds-soak-$$-server" "$bin/SoakEchoServer" "@uds-soak-$$-server"
            ;;
        uds)
            soak uds "@uds-soak-$$-uds" "$bin/uds" listen -k --echo "@uds-soak-$$-uds"
            ;;
        *)
            echo "soak: unknown server $server (unixserver, uds)" >&2
            exit 64
            ;;
    esac
    prefixes+=("$work/$server")
done

echo
echo "soak: SOAK_SECONDS=$seconds, $honest honest clients (a descriptor on every tenth message, 0 B to 1 MiB)," \
    "$nonreaders non-readers (1 MiB frames), $tricklers tricklers (1 byte / 2 s), $killers mid-frame killers"
"$python" "$work/report.py" "$max_rss_mib" "${prefixes[@]}"
