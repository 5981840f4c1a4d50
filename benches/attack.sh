#!/usr/bin/env bash
# Hostile and slow clients against the release understudy, on loopback.
#
#   bash benches/attack.sh     # ATTACK_SECONDS=30 ATTACK_CONNECTIONS=1000 H2C_CONNECTIONS=300
#   ATTACKS="slowread idleh2c" bash benches/attack.sh        # only some attacks (default: all)
#   MIRROR=1 bash benches/attack.sh   # also mirror every request to a candidate and compare
#
# understudy proxies to a fake upstream answering a 40-byte JSON body
# (and a 1 MiB one on /1mb, for slow readers). Each attack gets a fresh
# understudy process, so memory one attack leaves behind is not counted
# against the next: after 2 s of normal traffic its idle RSS is read and its
# peak reset, then the attack runs for ATTACK_SECONDS while a fresh normal
# client sends requests, each on a new connection, from the time the attack
# has opened its connections (ATTACK_CONNECTIONS / 250 s at 250 per second)
# to its end, and counts the answers that are 200 within 1 s:
#   slowbody    slowhttptest -B: request bodies trickled a few bytes every 10 s
#   slowheaders slowhttptest -H: request heads never finished (slowloris)
#   slowread    slowhttptest -X: the 1 MiB answer read 16 bytes every 5 s
#               through a 1-2 byte receive window
#   idleh2c     H2C_CONNECTIONS HTTP/2 connections (prior knowledge) that send
#               the preface and SETTINGS, then nothing
# Prints per attack: the normal client's success rate and p99, and
# understudy's peak RSS during the attack (VmHWM, reset when it starts),
# beside the targets: >= 99% success, peak RSS <= 2 x idle RSS + configured
# buffers. The configured buffers are what the configuration lets the
# attacking connections hold, by attack: slowbody, each connection's body
# read whole before it is forwarded (listen.request_buffer_bytes, here the
# 8 KiB each declares); slowread, each answer's read-ahead
# (listen.response_buffer_bytes, 64 KiB) and its connection's write buffer
# (listen.max_header_bytes, 64 KiB; the rest of each answer is spilled to
# disk); slowheaders and idleh2c, nothing. Plus shadow.max_buffered_bytes
# when mirroring (MAX_BUFFERED_BYTES, default 64 MiB).
# Every step is bounded in time; the script stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ATTACK_SECONDS=${ATTACK_SECONDS:-30}
ATTACK_CONNECTIONS=${ATTACK_CONNECTIONS:-1000}
H2C_CONNECTIONS=${H2C_CONNECTIONS:-300}
ATTACKS=${ATTACKS:-slowbody slowheaders slowread idleh2c}
MIRROR=${MIRROR:-}
MAX_BUFFERED_BYTES=${MAX_BUFFERED_BYTES:-}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/understudy-attack.XXXXXX)
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

for attack in $ATTACKS; do
  case $attack in slowbody | slowheaders | slowread | idleh2c) ;;
    *) echo "unknown attack '$attack' in ATTACKS (slowbody, slowheaders, slowread, idleh2c)" >&2; exit 2 ;;
  esac
done
command -v slowhttptest >/dev/null 2>&1 || {
  echo "installing slowhttptest (Debian)..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slowhttptest >/dev/null
}

echo "building release binaries..." >&2
cargo build --release --quiet --bin understudy --example fake_upstream
BIN=$TARGET_DIR/release/understudy

# Ports: upstream 19501, candidate 19502, understudy 19510, admin 19511.
for p in 19501 19502 19510 19511; do
  if (echo >/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo "port $p is already in use; stop what listens there" >&2; exit 2; fi
done
wait_port() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
ulimit -n 65536 2>/dev/null || true

"$TARGET_DIR/release/examples/fake_upstream" 19501 19502 & PIDS+=($!)
wait_port 19501; wait_port 19502

BUFFERS=0
{
  echo '[listen]'
  echo 'addr = "127.0.0.1:19510"'
  echo '[admin]'
  echo 'addr = "127.0.0.1:19511"'
  echo '[backends.stable]'
  echo 'url = "http://127.0.0.1:19501"'
  if [ -n "$MIRROR" ]; then
    echo '[backends.candidate]'
    echo 'url = "http://127.0.0.1:19502"'
    echo '[shadow]'
    echo 'percent = 100'
    [ -n "$MAX_BUFFERED_BYTES" ] && echo "max_buffered_bytes = $MAX_BUFFERED_BYTES"
    echo '[compare]'
    echo 'pointer = "/predictions"'
  fi
} > "$WORK/understudy.toml"
[ -n "$MIRROR" ] && BUFFERS=${MAX_BUFFERED_BYTES:-$((64 * 1024 * 1024))}
URL=http://127.0.0.1:19510/v1/models/m:predict

# The normal client: 4 threads, each sending one POST every 20 ms on a new
# connection until the time is up. Prints "attempts ok p50_ms p99_ms
# failure_kinds"; ok = status 200 within 1 s. Failed attempts count in the
# percentiles at the time they took (at least 1 s for a timeout).
cat > "$WORK/client.py" <<'PY'
import http.client, sys, threading, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
BODY = b'{"instances":[[6.45,3.0,5.47,1.8]]}'
DEADLINE, THREADS, INTERVAL = 1.0, 4, 0.02
lock = threading.Lock()
times, ok, kinds = [], 0, {}
def one():
    start = time.monotonic()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
        conn.request("POST", "/v1/models/m:predict", BODY, {"Content-Type": "application/json", "Connection": "close"})
        response = conn.getresponse()
        response.read()
        conn.close()
        elapsed = time.monotonic() - start
        if response.status != 200:
            return elapsed, f"status_{response.status}"
        return elapsed, None if elapsed <= DEADLINE else "slow"
    except Exception as e:
        return max(time.monotonic() - start, 0.0), type(e).__name__
def worker(end):
    global ok
    while time.monotonic() < end:
        t = time.monotonic()
        elapsed, failure = one()
        with lock:
            times.append(elapsed)
            if failure is None:
                ok += 1
            else:
                kinds[failure] = kinds.get(failure, 0) + 1
        time.sleep(max(0.0, INTERVAL - (time.monotonic() - t)))
end = time.monotonic() + seconds
threads = [threading.Thread(target=worker, args=(end,)) for _ in range(THREADS)]
for t in threads: t.start()
for t in threads: t.join()
times.sort()
pct = lambda q: 1000 * times[min(len(times) - 1, max(0, int(q * len(times) + 0.999999) - 1))] if times else float("nan")
print(len(times), ok, f"{pct(0.5):.2f}", f"{pct(0.99):.2f}", ",".join(f"{k}:{v}" for k, v in sorted(kinds.items())) or "-")
PY

# Idle h2c connections: open N, send the HTTP/2 preface and an empty SETTINGS
# frame, then nothing for the given seconds. Prints "opened refused
# closed_by_server".
cat > "$WORK/idle_h2c.py" <<'PY'
import socket, sys, time
port, n, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
socks, refused = [], 0
end = time.monotonic() + seconds
for _ in range(n):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
        s.sendall(PREFACE)
        socks.append(s)
    except OSError:
        refused += 1
time.sleep(max(0.0, end - time.monotonic()))
closed = 0
for s in socks:
    s.setblocking(False)
    try:
        while True:
            if not s.recv(65536):
                closed += 1
                break
    except BlockingIOError:
        pass
    except OSError:
        closed += 1
    s.close()
print(len(socks), refused, closed)
PY

gauge() { # the value of an unlabelled metric on the admin endpoint
  { curl -sf --max-time 2 http://127.0.0.1:19511/metrics || true; } | awk -v m="$1" '$1 == m {v=$2} END {printf "%d\n", v}'
}

# Starts a fresh understudy and measures its idle RSS (IDLE_KIB): after a
# few seconds of normal traffic, so what the first requests allocate once
# (pools, buffers) counts as idle.
start_understudy() {
  RUST_LOG=warn "$BIN" run -c "$WORK/understudy.toml" 2>>"$WORK/understudy.log" & PIDS+=($!)
  PID=$!
  wait_port 19510; wait_port 19511
  python3 "$WORK/client.py" 19510 2 >/dev/null
  sleep 1
  IDLE_KIB=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")
}
stop_understudy() { kill "$PID"; wait "$PID" || true; }

# Only what slowhttptest's summary says about availability is kept.
slow() { # log_name, then slowhttptest's arguments
  local log=$WORK/$1.log; shift
  timeout $((ATTACK_SECONDS + 60)) slowhttptest "$@" -l "$ATTACK_SECONDS" >"$log" 2>&1 || true
}

RESULTS=$WORK/results.txt
: > "$RESULTS"
for attack in $ATTACKS; do
  echo "$attack: $ATTACK_SECONDS s..." >&2
  start_understudy
  echo 5 > "/proc/$PID/clear_refs"  # peak RSS from here
  case $attack in
    slowbody) slow slowbody -c "$ATTACK_CONNECTIONS" -B -i 10 -r 250 -s 8192 -t POST -u "$URL" -x 24 & ;;
    slowheaders) slow slowheaders -c "$ATTACK_CONNECTIONS" -H -i 10 -r 250 -t GET -u "$URL" -x 24 & ;;
    slowread) slow slowread -c "$ATTACK_CONNECTIONS" -X -r 250 -w 1 -y 2 -n 5 -z 16 -u http://127.0.0.1:19510/1mb & ;;
    idleh2c) timeout $((ATTACK_SECONDS + 60)) python3 "$WORK/idle_h2c.py" 19510 "$H2C_CONNECTIONS" "$ATTACK_SECONDS" >"$WORK/idleh2c.log" 2>&1 & ;;
  esac
  ATTACKER=$!
  PIDS+=($ATTACKER)
  # Give the attack time to open its connections, then measure through its rest.
  RAMP=$(( ATTACK_CONNECTIONS / 250 + 1 ))
  [ "$RAMP" -lt "$ATTACK_SECONDS" ] || RAMP=$(( ATTACK_SECONDS / 2 ))
  sleep "$RAMP"
  ( sleep $(( (ATTACK_SECONDS - RAMP) / 2 )); gauge understudy_connections_open > "$WORK/$attack.open" ) &
  SAMPLER=$!
  CLIENT=$(python3 "$WORK/client.py" 19510 $(( ATTACK_SECONDS - RAMP )))
  PEAK=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
  wait "$ATTACKER" || true
  wait "$SAMPLER" || true
  case $attack in
    idleh2c) read -r opened refused closed < "$WORK/idleh2c.log"
             NOTE="h2c: $opened held, $refused refused, $closed closed by the server by the end" ;;
    *) NOTE="slowhttptest at the end: $(sed 's/\x1b\[[0-9;]*m//g' "$WORK/$attack.log" |
         awk -F': *' '/^(connected|error|closed|service available):/ {v[$1]=$2}
                      END {printf "%s connected, %s closed, %s error, service available %s", v["connected"], v["closed"], v["error"], v["service available"]}')" ;;
  esac
  case $attack in
    slowbody) PER_CONNECTION=8192 ;;
    slowread) PER_CONNECTION=$(( 64 * 1024 + 64 * 1024 )) ;;
    *) PER_CONNECTION=0 ;;
  esac
  echo "$attack $CLIENT $IDLE_KIB $PEAK $(cat "$WORK/$attack.open") $(( PER_CONNECTION * ATTACK_CONNECTIONS )) | $NOTE" >> "$RESULTS"
  stop_understudy
done

python3 - "$RESULTS" "$BUFFERS" "$ATTACK_SECONDS" "$ATTACK_CONNECTIONS" "$H2C_CONNECTIONS" "${MIRROR:+mirror + compare}" <<'PY'
import sys
results, buffers, seconds, conns, h2c, mode = sys.argv[1:7]
buffers = int(buffers)
print(f"\nunderstudy ({mode or 'proxy only'}) under hostile clients: {seconds} s each, {conns} connections "
      f"({h2c} for idleh2c), a fresh process per attack; normal client: 4 threads x 50 req/s, new connection per request")
print(f"targets: >= 99% of the normal client's requests 200 within 1 s; peak RSS <= 2 x idle RSS + configured buffers "
      f"(the attack's connections' own, plus {buffers/2**20:.0f} MiB for mirrors)")
print(f"{'attack':<12} {'ok (200 <1s)':>15} {'p50 ms':>8} {'p99 ms':>8} {'idle RSS':>10} {'peak RSS':>10} {'limit':>10} {'conns open':>10}   verdict")
for line in open(results):
    head, note = line.rstrip("\n").split(" | ", 1)
    attack, attempts, ok, p50, p99, kinds, idle_kib, peak_kib, open_conns, own = head.split()
    attempts, ok, idle, peak = int(attempts), int(ok), int(idle_kib) * 1024, int(peak_kib) * 1024
    limit = 2 * idle + buffers + int(own)
    rate = 100 * ok / attempts if attempts else 0.0
    verdict = ("ok" if rate >= 99 else "MISSED success") + ", " + ("ok" if peak <= limit else "MISSED memory")
    print(f"{attack:<12} {rate:>6.1f}% of {attempts:<5d} {p50:>8} {p99:>8} {idle/2**20:>6.1f} MiB {peak/2**20:>6.1f} MiB "
          f"{limit/2**20:>6.1f} MiB {open_conns:>10}   {verdict}")
    print(f"{'':<12} failures: {kinds}; {note}")
print("conns open = understudy_connections_open halfway through the attack")
PY
