#!/usr/bin/env bash
# Load benchmark: understudy beside nginx doing the same four jobs on this
# machine, in one run, with the same load generator, body and connections.
#
#   bash benches/load.sh            # DURATION=10s ROUNDS=3 CONNECTIONS=32 by default
#   SHADOW_MAX_IN_FLIGHT=64 bash benches/load.sh   # the mirror bound, understudy and hyper alone (default 512)
#
# Targets (nginx: ../shared/bench/nginx-anchor.conf; understudy: configs below):
#   direct   the stable upstream itself (the ceiling)
#   proxy    reverse proxy only
#   mirror   proxy + mirror of every request (understudy also compares)
#   slow     mirror to a candidate that answers after 50 ms
#   split    90/10 weighted split (canary at 10%)
# Then understudy's peak RSS with 1,000 connections and the slow candidate.
# Prints medians per target and the ratios understudy / nginx. For the proxy,
# mirror and slow jobs it also runs `bare_proxy` (benches/support/bare_proxy.rs):
# hyper's server and client with none of understudy's features, on the same
# worker layout and with the same mirror bound: the most a proxy built on
# hyper reaches here (and its peak RSS under the same 1,000 connections).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-32}
SHADOW_MAX_IN_FLIGHT=${SHADOW_MAX_IN_FLIGHT:-}
ANCHOR=${ANCHOR:-$ROOT/../shared/bench/nginx-anchor.conf}
WORK=$(mktemp -d /tmp/understudy-load.XXXXXX)
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f /tmp/anchor-nginx/nginx.pid ] && kill "$(cat /tmp/anchor-nginx/nginx.pid)" 2>/dev/null || true
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need nginx; then
  echo "installing wrk and nginx-light (Debian)..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null
fi
[ -f "$ANCHOR" ] || { echo "nginx anchor config not found at $ANCHOR (set ANCHOR=...)" >&2; exit 2; }

echo "building release binaries..." >&2
cargo build --release --quiet --bin understudy --example fake_upstream --example bare_proxy
BIN=$ROOT/target/release/understudy

# Every port must be ours: a stray server on one would be measured instead.
for p in 19001 19002 19003 19100 19101 19102 19103 19200 19201 19202 19203 19210 19211 19212 19213 19300 19301 19302; do
  if (echo >/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo "port $p is already in use; stop what listens there" >&2; exit 2; fi
done
wait_port() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

# Upstreams: stable 19001, candidate 19002, slow candidate 19003 (50 ms).
"$ROOT/target/release/examples/fake_upstream" 19001 19002 19003:50 & PIDS+=($!)
for p in 19001 19002 19003; do wait_port $p; done

# nginx, as the anchor describes.
mkdir -p /tmp/anchor-nginx
nginx -c "$ANCHOR" -p /tmp/anchor-nginx & PIDS+=($!)
for p in 19100 19101 19102 19103; do wait_port $p; done

# The hyper-only ceiling: proxy on 19300, proxy + mirror (answer dropped) on
# 19301, mirror to the 50 ms candidate on 19302; mirrors bounded as understudy's.
MIRROR_BOUND=${SHADOW_MAX_IN_FLIGHT:-512}
"$ROOT/target/release/examples/bare_proxy" 19300 19001 & PIDS+=($!)
"$ROOT/target/release/examples/bare_proxy" 19301 19001 19002 "$MIRROR_BOUND" & PIDS+=($!)
"$ROOT/target/release/examples/bare_proxy" 19302 19001 19003 "$MIRROR_BOUND" & PIDS+=($!)
PID_hyper_slow=$!
for p in 19300 19301 19302; do wait_port $p; done

# understudy: the same four jobs on 19200-19203 (admin 19210-19213).
write_config() { # name port admin candidate_port shadow_percent extra
  local candidate=""
  [ -n "$4" ] && candidate=$(printf '[backends.candidate]\nurl = "http://127.0.0.1:%s"' "$4")
  cat > "$WORK/$1.toml" <<TOML
[listen]
addr = "127.0.0.1:$2"
backend_header = false
[admin]
addr = "127.0.0.1:$3"
[backends.stable]
url = "http://127.0.0.1:19001"
$candidate
[shadow]
percent = $5
${SHADOW_MAX_IN_FLIGHT:+max_in_flight = $SHADOW_MAX_IN_FLIGHT}
[compare]
pointer = "/predictions"
$6
TOML
}
write_config proxy 19200 19210 "" 0 ""
write_config mirror 19201 19211 19002 100 ""
write_config slow 19202 19212 19003 100 ""
write_config split 19203 19213 19002 0 "[rollout]
state_file = \"$WORK/split-state.json\""
for name in proxy mirror slow split; do
  RUST_LOG=warn "$BIN" run -c "$WORK/$name.toml" 2>>"$WORK/understudy.log" & PIDS+=($!)
  eval "PID_$name=$!"
done
for p in 19200 19201 19202 19203 19213; do wait_port $p; done
# The split job: canary held at 10% (a manual weight pauses the rollout).
"$BIN" rollout set-weight 10 --admin http://127.0.0.1:19213 >/dev/null

BODY='{"instances":[[6.45,3.0,5.47,1.8]]}'
cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
LUA

# One wrk run: prints "requests_per_sec p99_ms".
run_wrk() {
  wrk -t1 -c"$2" -d"$DURATION" --latency -s "$WORK/post.lua" "http://127.0.0.1:$1/v1/models/m:predict" 2>/dev/null |
    awk '/Requests\/sec/ {rps=$2}
         /^ +99%/ {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; p99=v}
         END {printf "%s %s\n", rps, p99}'
}

RESULTS=$WORK/results.txt
: > "$RESULTS"
echo "warming up..." >&2
for port in 19001 19100 19200 19300 19101 19201 19301 19302; do wrk -t1 -c"$CONNECTIONS" -d2s -s "$WORK/post.lua" "http://127.0.0.1:$port/v1/models/m:predict" >/dev/null 2>&1; done
for round in $(seq "$ROUNDS"); do
  echo "round $round/$ROUNDS..." >&2
  echo "direct direct $(run_wrk 19001 "$CONNECTIONS")" >> "$RESULTS"
  for job in proxy:19100:19200 mirror:19101:19201 slow:19102:19202 split:19103:19203; do
    IFS=: read -r name nginx_port ours_port <<<"$job"
    echo "$name nginx $(run_wrk "$nginx_port" "$CONNECTIONS")" >> "$RESULTS"
    echo "$name understudy $(run_wrk "$ours_port" "$CONNECTIONS")" >> "$RESULTS"
    case $name in
      proxy) echo "proxy hyper $(run_wrk 19300 "$CONNECTIONS")" >> "$RESULTS" ;;
      mirror) echo "mirror hyper $(run_wrk 19301 "$CONNECTIONS")" >> "$RESULTS" ;;
      slow) echo "slow hyper $(run_wrk 19302 "$CONNECTIONS")" >> "$RESULTS" ;;
    esac
  done
done

# How much the slow job mirrored in the rounds: sent vs dropped at max_in_flight.
SLOW_SHADOW=$(curl -s http://127.0.0.1:19212/metrics | awk '/^understudy_shadow_total\{result="sent"\}/ {s=$2} /^understudy_shadow_total\{result="dropped_overload"\}/ {d=$2} END {printf "%d %d", s, d}')

# Peak RSS with 1,000 connections and the 50 ms candidate.
echo "1,000 connections against the slow-candidate proxy..." >&2
ulimit -n 65536 2>/dev/null || true
RSS_1000=$(run_wrk 19202 1000)
PEAK_KIB=$(awk '/VmHWM/ {print $2}' "/proc/$PID_slow/status")
echo "... and against hyper alone doing the same..." >&2
run_wrk 19302 1000 >/dev/null
HYPER_PEAK_KIB=$(awk '/VmHWM/ {print $2}' "/proc/$PID_hyper_slow/status")
COMPARED=$(curl -s http://127.0.0.1:19211/metrics | awk '/^understudy_comparisons_total\{result="match"\}/ {m=$2} /^understudy_shadow_total\{result="dropped_overload"\}/ {d=$2} END {printf "%d matches, %d mirrors dropped as overload", m, d}')

python3 - "$RESULTS" "$PEAK_KIB" "$RSS_1000" "$COMPARED" "$CONNECTIONS" "$DURATION" "$SLOW_SHADOW" "${SHADOW_MAX_IN_FLIGHT:-512 (default)}" "$HYPER_PEAK_KIB" <<'PY'
import statistics, sys
path, peak_kib, rss_run, compared, conns, duration = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
slow_sent, slow_dropped = (int(x) for x in sys.argv[7].split())
max_in_flight = sys.argv[8]
hyper_peak_kib = int(sys.argv[9])
rows = {}
for line in open(path):
    job, who, rps, p99 = line.split()
    rows.setdefault((job, who), []).append((float(rps), float(p99)))
med = {k: (statistics.median(r for r, _ in v), statistics.median(p for _, p in v)) for k, v in rows.items()}
d_rps, d_p99 = med[("direct", "direct")]
print(f"\nunderstudy vs nginx, medians of {len(rows[('direct','direct')])} rounds (wrk -t1 -c{conns} -d{duration}, POST of a small JSON body)")
print(f"{'job':<8} {'nginx req/s':>12} {'understudy req/s':>17} {'ratio':>6}   {'nginx p99':>10} {'understudy p99':>15} {'ratio':>6}")
print(f"{'direct':<8} {d_rps:>12.0f} {'':>17} {'':>6}   {d_p99:>8.2f}ms")
for job in ["proxy", "mirror", "slow", "split"]:
    n_rps, n_p99 = med[(job, "nginx")]
    u_rps, u_p99 = med[(job, "understudy")]
    print(f"{job:<8} {n_rps:>12.0f} {u_rps:>17.0f} {u_rps/n_rps:>6.2f}   {n_p99:>8.2f}ms {u_p99:>13.2f}ms {u_p99/n_p99:>6.2f}")
print(f"\nhyper alone (bare_proxy: no features; mirror answers read and dropped), same run:")
for job in ["proxy", "mirror", "slow"]:
    h_rps, h_p99 = med[(job, "hyper")]
    n_rps, n_p99 = med[(job, "nginx")]
    u_rps, _ = med[(job, "understudy")]
    print(f"{job:<8} {h_rps:>12.0f} req/s = {h_rps/n_rps:.2f}x nginx, p99 {h_p99:.2f}ms; understudy reaches {u_rps/h_rps:.2f} of it")
p_rps, p_p99 = med[("proxy", "understudy")]
s_rps, s_p99 = med[("slow", "understudy")]
print(f"\nunderstudy proxy-only vs direct: {p_rps/d_rps:.2f} of the ceiling's req/s")
print(f"slow candidate: understudy client p99 {s_p99:.2f}ms = {s_p99/p_p99:.2f}x its proxy-only p99 (target <= 1.5x)")
hp_p99, hs_p99 = med[("proxy", "hyper")][1], med[("slow", "hyper")][1]
print(f"  hyper alone, same bound: p99 {hs_p99:.2f}ms = {hs_p99/hp_p99:.2f}x its own proxy-only p99")
# With every connection always busy, mean latency = connections / req/s: the
# throughput the mirrors take from the clients raises latency by its inverse.
hp_rps, hs_rps = med[("proxy", "hyper")][0], med[("slow", "hyper")][0]
print(f"  req/s kept beside the slow candidate (of proxy-only): understudy {s_rps/p_rps:.2f}, hyper alone {hs_rps/hp_rps:.2f}"
      f" -> mean latency x{p_rps/s_rps:.2f} and x{hp_rps/hs_rps:.2f} before any tail effect")
print(f"  shadow.max_in_flight {max_in_flight}: {slow_sent} mirrors sent, {slow_dropped} dropped as overload ({100*slow_sent/max(1,slow_sent+slow_dropped):.0f}% mirrored)")
print(f"peak RSS with 1,000 connections + 50 ms candidate: {peak_kib/1024:.1f} MiB (run: {rss_run.split()[0]} req/s); hyper alone (same mirror bound, stable pool unbounded): {hyper_peak_kib/1024:.1f} MiB")
print(f"mirror job: {compared}")
PY
