#!/usr/bin/env bash
# Load benchmark: understudy beside nginx doing the same jobs on this
# machine, in one run, with the same load generator, bodies and connections.
#
#   bash benches/load.sh            # DURATION=10s ROUNDS=3 CONNECTIONS=32 by default
#   JOBS="big slowbig" bash benches/load.sh        # only some job groups (default: all)
#   SHADOW_MAX_IN_FLIGHT=64 bash benches/load.sh   # the mirror bound, understudy and hyper alone (default 512)
#   MAX_BUFFERED_BYTES=67108864 bash benches/load.sh  # written as shadow.max_buffered_bytes when set
#   CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 bash benches/load.sh
#                                   # quicker build for trying the script; numbers are then not the release's
#
# nginx runs benches/nginx-anchor.conf; understudy runs the configs written below.
#
# Job group "small" (a 40-byte answer):
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
#
# Job group "big" (ML-sized answers from benches/support/payloads.rs: OpenAI
# embeddings ~518 KB, compared with preset "openai"; KServe V2 [64,1000]
# ~640 KB, preset "kserve-v2" in argmax mode; the candidate's answer differs
# from the stable one within tolerance): per payload, understudy proxy only,
# understudy mirror + compare of every request, nginx proxy + mirror. Prints
# req/s, p50, p99, comparisons completed and dropped per second, peak RSS, and
# the target ratios.
#
# Job group "slowbig": the embeddings answer with a candidate answering after
# 200 ms, 256 connections: understudy proxy only vs mirror + compare, each in
# its own process, to compare peak RSS against the mirror memory budget.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-32}
SLOW_CONNECTIONS=${SLOW_CONNECTIONS:-256}
SHADOW_MAX_IN_FLIGHT=${SHADOW_MAX_IN_FLIGHT:-}
MAX_BUFFERED_BYTES=${MAX_BUFFERED_BYTES:-}
JOBS=${JOBS:-small big slowbig}
ANCHOR=${ANCHOR:-$ROOT/benches/nginx-anchor.conf}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/understudy-load.XXXXXX)
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f /tmp/anchor-nginx/nginx.pid ] && kill "$(cat /tmp/anchor-nginx/nginx.pid)" 2>/dev/null || true
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

for job in $JOBS; do
  case $job in small | big | slowbig) ;; *) echo "unknown job group '$job' in JOBS (small, big, slowbig)" >&2; exit 2 ;; esac
done
has_job() { [[ " $JOBS " == *" $1 "* ]]; }

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need nginx; then
  echo "installing wrk and nginx-light (Debian)..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null
fi
[ -f "$ANCHOR" ] || { echo "nginx anchor config not found at $ANCHOR (set ANCHOR=...)" >&2; exit 2; }

echo "building release binaries..." >&2
cargo build --release --quiet --bin understudy --example fake_upstream --example bare_proxy
BIN=$TARGET_DIR/release/understudy
EXAMPLES=$TARGET_DIR/release/examples

# Every port must be ours: a stray server on one would be measured instead.
#   upstreams 19001-19003 (small), 19401-19405 (big)
#   nginx 19100-19103 (small), 19111 19113 (big)
#   understudy 19200-19203 + admin 19210-19213 (small), 19220-19225 + admin 19230-19235 (big, slowbig)
#   bare_proxy 19300-19302
for p in 19001 19002 19003 19401 19402 19403 19404 19405 \
  19100 19101 19102 19103 19111 19113 \
  19200 19201 19202 19203 19210 19211 19212 19213 \
  19220 19221 19222 19223 19224 19225 19230 19231 19232 19233 19234 19235 \
  19300 19301 19302; do
  if (echo >/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo "port $p is already in use; stop what listens there" >&2; exit 2; fi
done
wait_port() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

# Upstreams: stable 19001, candidate 19002, slow candidate 19003 (50 ms);
# embeddings stable 19401 and candidate 19402, KServe V2 stable 19403 and
# candidate 19404, embeddings candidate answering after 200 ms 19405.
"$EXAMPLES/fake_upstream" 19001 19002 19003:50 \
  19401:embeddings 19402:embeddings-candidate 19403:kserve 19404:kserve-candidate \
  19405:200:embeddings-candidate & PIDS+=($!)
for p in 19001 19002 19003 19401 19402 19403 19404 19405; do wait_port $p; done

# nginx, as the anchor describes.
mkdir -p /tmp/anchor-nginx
nginx -c "$ANCHOR" -p /tmp/anchor-nginx & PIDS+=($!)
for p in 19100 19101 19102 19103 19111 19113; do wait_port $p; done

# understudy's config: write_config name port admin stable_port candidate_port shadow_percent compare_lines [extra]
write_config() {
  local candidate=""
  [ -n "$5" ] && candidate=$(printf '[backends.candidate]\nurl = "http://127.0.0.1:%s"' "$5")
  cat > "$WORK/$1.toml" <<TOML
[listen]
addr = "127.0.0.1:$2"
backend_header = false
[admin]
addr = "127.0.0.1:$3"
[backends.stable]
url = "http://127.0.0.1:$4"
$candidate
[shadow]
percent = $6
${SHADOW_MAX_IN_FLIGHT:+max_in_flight = $SHADOW_MAX_IN_FLIGHT}
${MAX_BUFFERED_BYTES:+max_buffered_bytes = $MAX_BUFFERED_BYTES}
[compare]
$7
${8:-}
TOML
}
start_understudy() { # name
  RUST_LOG=warn "$BIN" run -c "$WORK/$1.toml" 2>>"$WORK/understudy.log" & PIDS+=($!)
  eval "PID_$1=$!"
}
# Resets a process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0).
reset_peak() { echo 5 > "/proc/$1/clear_refs"; }
peak_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

# One wrk run: prints "requests_per_sec p50_ms p99_ms non_2xx_or_socket_errors".
# wrk_stats PORT CONNECTIONS PATH LUA_SCRIPT
wrk_stats() {
  wrk -t1 -c"$2" -d"$DURATION" --latency -s "$4" "http://127.0.0.1:$1$3" 2>/dev/null |
    awk 'function ms(v) { if (v ~ /us$/) {sub(/us/,"",v); return v/1000} if (v ~ /ms$/) {sub(/ms/,"",v); return v+0} if (v ~ /m$/) {sub(/m/,"",v); return v*60000} sub(/s/,"",v); return v*1000 }
         /Requests\/sec/ {rps=$2}
         /^ +50%/ {p50=ms($2)}
         /^ +99%/ {p99=ms($2)}
         /Non-2xx or 3xx responses/ {bad+=$NF}
         /Socket errors/ {for (i=3; i<=NF; i++) if ($i ~ /^[0-9]+,?$/) bad+=$i}
         END {printf "%s %s %s %d\n", rps, p50, p99, bad}'
}
# The small jobs' format: "requests_per_sec p99_ms".
run_wrk() { wrk_stats "$1" "$2" /v1/models/m:predict "$WORK/post.lua" | awk '{print $1, $3}'; }

# understudy's comparison counters: prints "completed comparisons_dropped
# dropped_overload dropped_busy dropped_budget"; a counter this binary does
# not have counts 0.
scrape() {
  { curl -sf --max-time 5 "http://127.0.0.1:$1/metrics" || true; } |
    awk '/^understudy_comparisons_total[{ ]/ {c+=$NF}
         /^understudy_comparisons_dropped_total[{ ]/ {d+=$NF}
         /^understudy_shadow_total\{result="dropped_overload"\}/ {o+=$NF}
         /^understudy_shadow_total\{result="dropped_busy"\}/ {b+=$NF}
         /^understudy_shadow_total\{result="dropped_budget"\}/ {g+=$NF}
         END {printf "%d %d %d %d %d\n", c, d, o, b, g}'
}
now() { date +%s.%N; }
# Appends "payload job result=count ..." of understudy_comparisons_total to
# $OUTCOMES, so a run shows the candidate's answers were really compared
# (matches) and not failing or uncomparable.
outcomes() { # payload job admin_port
  echo "$1 $2 $({ curl -sf --max-time 5 "http://127.0.0.1:$3/metrics" || true; } |
    sed -n 's/^understudy_comparisons_total{result="\([a-z_]*\)"} \([0-9]*\).*/\1=\2/p' | sort | tr '\n' ' ')" >> "$OUTCOMES"
}
# Waits until an understudy has no mirror in flight (a mirror holds its slot
# through the comparison), so a backlog of comparisons left by one job does
# not take CPU from the next; gives up after 60 s. Prints the seconds waited.
drain() { # admin_port
  local t0 n
  t0=$(now)
  for _ in $(seq 600); do
    n=$({ curl -sf --max-time 2 "http://127.0.0.1:$1/metrics" || true; } | awk '$1 == "understudy_shadow_in_flight" {v=$2} END {printf "%d\n", v}')
    [ "$n" -eq 0 ] && break
    sleep 0.1
  done
  python3 -c "print(round($(now) - $t0, 1))"
}

BODY='{"instances":[[6.45,3.0,5.47,1.8]]}'
cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
LUA
cat > "$WORK/embeddings.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"model":"text-embedding-3-small","input":["the quick brown fox","jumps over the lazy dog"]}'
wrk.headers["Content-Type"] = "application/json"
LUA
cat > "$WORK/kserve.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP32","data":[6.45,3.0,5.47,1.8]}]}'
wrk.headers["Content-Type"] = "application/json"
LUA

ulimit -n 65536 2>/dev/null || true

# ---------------------------------------------------------------- small
if has_job small; then
# The hyper-only ceiling: proxy on 19300, proxy + mirror (answer dropped) on
# 19301, mirror to the 50 ms candidate on 19302; mirrors bounded as understudy's.
MIRROR_BOUND=${SHADOW_MAX_IN_FLIGHT:-512}
"$EXAMPLES/bare_proxy" 19300 19001 & PIDS+=($!)
"$EXAMPLES/bare_proxy" 19301 19001 19002 "$MIRROR_BOUND" & PIDS+=($!)
"$EXAMPLES/bare_proxy" 19302 19001 19003 "$MIRROR_BOUND" & PIDS+=($!)
PID_hyper_slow=$!
for p in 19300 19301 19302; do wait_port $p; done

# understudy: the same four jobs on 19200-19203 (admin 19210-19213).
write_config proxy 19200 19210 19001 "" 0 'pointer = "/predictions"'
write_config mirror 19201 19211 19001 19002 100 'pointer = "/predictions"'
write_config slow 19202 19212 19001 19003 100 'pointer = "/predictions"'
write_config split 19203 19213 19001 19002 0 'pointer = "/predictions"' "[rollout]
state_file = \"$WORK/split-state.json\""
for name in proxy mirror slow split; do start_understudy $name; done
for p in 19200 19201 19202 19203 19213; do wait_port $p; done
# The split job: canary held at 10% (a manual weight pauses the rollout).
"$BIN" rollout set-weight 10 --admin http://127.0.0.1:19213 >/dev/null

RESULTS=$WORK/results.txt
: > "$RESULTS"
echo "small: warming up..." >&2
for port in 19001 19100 19200 19300 19101 19201 19301 19302; do wrk -t1 -c"$CONNECTIONS" -d2s -s "$WORK/post.lua" "http://127.0.0.1:$port/v1/models/m:predict" >/dev/null 2>&1; done
for round in $(seq "$ROUNDS"); do
  echo "small: round $round/$ROUNDS..." >&2
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
echo "small: 1,000 connections against the slow-candidate proxy..." >&2
RSS_1000=$(run_wrk 19202 1000)
PEAK_KIB=$(peak_kib "$PID_slow")
echo "small: ... and against hyper alone doing the same..." >&2
run_wrk 19302 1000 >/dev/null
HYPER_PEAK_KIB=$(peak_kib "$PID_hyper_slow")
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
fi

# ---------------------------------------------------------------- big, slowbig
# One measured big run: appends "payload job rps p50 p99 errors completed
# cmp_dropped overload busy budget seconds drain_seconds" to $BIG_RESULTS;
# the counters are read when wrk ends, then the run's mirrors are drained.
# big_run PAYLOAD JOB PORT ADMIN_PORT(or -) CONNECTIONS PATH LUA
big_run() {
  local before="0 0 0 0 0" after="0 0 0 0 0" t0 t1 stats waited=0
  [ "$4" != - ] && before=$(scrape "$4")
  t0=$(now)
  stats=$(wrk_stats "$3" "$5" "$6" "$7")
  [ "$4" != - ] && after=$(scrape "$4")
  t1=$(now)
  [ "$4" != - ] && waited=$(drain "$4")
  echo "$1 $2 $stats $(python3 -c 'import sys; a=sys.argv[1].split(); b=sys.argv[2].split(); print(" ".join(str(int(y)-int(x)) for x, y in zip(a, b)))' "$before" "$after") $(python3 -c "print($t1-$t0)") $waited" >> "$BIG_RESULTS"
}
BIG_RESULTS=$WORK/big.txt
: > "$BIG_RESULTS"
PEAKS=$WORK/peaks.txt
: > "$PEAKS"
OUTCOMES=$WORK/outcomes.txt
: > "$OUTCOMES"

if has_job big; then
# understudy on 19220-19223 (admin 19230-19233): per payload, proxy only and
# mirror + compare. nginx's mirror jobs are on 19111 and 19113.
write_config emb_proxy 19220 19230 19401 "" 0 'preset = "openai"'
write_config emb_mirror 19221 19231 19401 19402 100 'preset = "openai"'
write_config kserve_proxy 19222 19232 19403 "" 0 'preset = "kserve-v2"
mode = "argmax"'
write_config kserve_mirror 19223 19233 19403 19404 100 'preset = "kserve-v2"
mode = "argmax"'
for name in emb_proxy emb_mirror kserve_proxy kserve_mirror; do start_understudy $name; done
for p in 19220 19221 19222 19223 19230 19231 19232 19233; do wait_port $p; done

echo "big: warming up..." >&2
for job in 19220:/v1/embeddings:embeddings 19221:/v1/embeddings:embeddings 19111:/v1/embeddings:embeddings \
  19222:/v2/models/m/infer:kserve 19223:/v2/models/m/infer:kserve 19113:/v2/models/m/infer:kserve; do
  IFS=: read -r port path lua <<<"$job"
  wrk -t1 -c"$CONNECTIONS" -d2s -s "$WORK/$lua.lua" "http://127.0.0.1:$port$path" >/dev/null 2>&1
done
for admin in 19231 19233; do drain $admin >/dev/null; done
for name in emb_proxy emb_mirror kserve_proxy kserve_mirror; do eval "reset_peak \$PID_$name"; done
for round in $(seq "$ROUNDS"); do
  echo "big: round $round/$ROUNDS..." >&2
  big_run embeddings understudy_proxy 19220 19230 "$CONNECTIONS" /v1/embeddings "$WORK/embeddings.lua"
  big_run embeddings understudy_mirror 19221 19231 "$CONNECTIONS" /v1/embeddings "$WORK/embeddings.lua"
  big_run embeddings nginx_mirror 19111 - "$CONNECTIONS" /v1/embeddings "$WORK/embeddings.lua"
  big_run kserve understudy_proxy 19222 19232 "$CONNECTIONS" /v2/models/m/infer "$WORK/kserve.lua"
  big_run kserve understudy_mirror 19223 19233 "$CONNECTIONS" /v2/models/m/infer "$WORK/kserve.lua"
  big_run kserve nginx_mirror 19113 - "$CONNECTIONS" /v2/models/m/infer "$WORK/kserve.lua"
done
echo "embeddings understudy_proxy $(peak_kib "$PID_emb_proxy")" >> "$PEAKS"
echo "embeddings understudy_mirror $(peak_kib "$PID_emb_mirror")" >> "$PEAKS"
echo "kserve understudy_proxy $(peak_kib "$PID_kserve_proxy")" >> "$PEAKS"
echo "kserve understudy_mirror $(peak_kib "$PID_kserve_mirror")" >> "$PEAKS"
outcomes embeddings understudy_mirror 19231
outcomes kserve understudy_mirror 19233
# These processes are done: free the cores for the next group.
for name in emb_proxy emb_mirror kserve_proxy kserve_mirror; do eval "kill \$PID_$name"; done
fi

if has_job slowbig; then
# Two fresh processes on 19224 and 19225 (admin 19234, 19235): embeddings,
# proxy only vs mirror + compare to the candidate answering after 200 ms.
write_config slowbig_proxy 19224 19234 19401 "" 0 'preset = "openai"'
write_config slowbig_mirror 19225 19235 19401 19405 100 'preset = "openai"'
for name in slowbig_proxy slowbig_mirror; do start_understudy $name; done
for p in 19224 19225 19234 19235; do wait_port $p; done
echo "slowbig: warming up..." >&2
for port in 19224 19225; do wrk -t1 -c"$SLOW_CONNECTIONS" -d2s -s "$WORK/embeddings.lua" "http://127.0.0.1:$port/v1/embeddings" >/dev/null 2>&1; done
# Let the warm-up's mirrors finish, then start both peaks from here.
drain 19235 >/dev/null
reset_peak "$PID_slowbig_proxy"
reset_peak "$PID_slowbig_mirror"
for round in $(seq "$ROUNDS"); do
  echo "slowbig: round $round/$ROUNDS..." >&2
  big_run slowbig understudy_proxy 19224 19234 "$SLOW_CONNECTIONS" /v1/embeddings "$WORK/embeddings.lua"
  big_run slowbig understudy_mirror 19225 19235 "$SLOW_CONNECTIONS" /v1/embeddings "$WORK/embeddings.lua"
done
echo "slowbig understudy_proxy $(peak_kib "$PID_slowbig_proxy")" >> "$PEAKS"
echo "slowbig understudy_mirror $(peak_kib "$PID_slowbig_mirror")" >> "$PEAKS"
outcomes slowbig understudy_mirror 19235
fi

if has_job big || has_job slowbig; then
python3 - "$BIG_RESULTS" "$PEAKS" "$CONNECTIONS" "$SLOW_CONNECTIONS" "$DURATION" "$ROUNDS" "$MAX_BUFFERED_BYTES" "$OUTCOMES" <<'PY'
import statistics, sys
results, peaks_path, conns, slow_conns, duration, rounds, budget_env, outcomes_path = sys.argv[1:9]
outcomes = {}
for line in open(outcomes_path):
    payload, job, *counts = line.split()
    outcomes[payload] = " ".join(c for c in counts if not c.endswith("=0")) or "none"

rows = {}
for line in open(results):
    f = line.split()
    payload, job = f[0], f[1]
    rps, p50, p99 = float(f[2]), float(f[3]), float(f[4])
    errors, completed, cmp_dropped, overload, busy, budget, secs = int(f[5]), *(int(x) for x in f[6:11]), float(f[11])
    rows.setdefault((payload, job), []).append(dict(
        rps=rps, p50=p50, p99=p99, errors=errors, drain=float(f[12]), completed=completed / secs,
        cmp_dropped=cmp_dropped / secs, overload=overload / secs, busy=busy / secs, budget=budget / secs))
peaks = {}
for line in open(peaks_path):
    payload, job, kib = line.split()
    peaks[(payload, job)] = int(kib)
def med(key, field):
    return statistics.median(r[field] for r in rows[key])
def verdict(ok):
    return "ok" if ok else "MISSED"

def table(payloads, title):
    print(f"\n{title}")
    print(f"{'payload':<11} {'job':<17} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
          f"{'cmp/s':>8} {'cmp drop/s':>10} {'overload/s':>10} {'busy/s':>7} {'budget/s':>8} {'drain s':>7} {'peak RSS':>10}")
    for payload in payloads:
        for job in ["understudy_proxy", "understudy_mirror", "nginx_mirror"]:
            key = (payload, job)
            if key not in rows:
                continue
            errors = sum(r["errors"] for r in rows[key])
            line = f"{payload:<11} {job:<17} {med(key,'rps'):>8.0f} {med(key,'p50'):>8.2f} {med(key,'p99'):>8.2f} {errors:>7d} "
            if job == "understudy_mirror":
                line += (f"{med(key,'completed'):>8.0f} {med(key,'cmp_dropped'):>10.0f} {med(key,'overload'):>10.0f} "
                         f"{med(key,'busy'):>7.0f} {med(key,'budget'):>8.0f} {med(key,'drain'):>7.1f}")
            else:
                line += f"{'-':>8} {'-':>10} {'-':>10} {'-':>7} {'-':>8} {'-':>7}"
            line += f" {peaks[key]/1024:>6.1f} MiB" if key in peaks else f" {'-':>10}"
            print(line)
    for payload in payloads:
        if payload in outcomes:
            print(f"{payload:<11} comparisons by outcome, whole run with warm-up: {outcomes[payload]}")

big = [p for p in ["embeddings", "kserve"] if (p, "understudy_proxy") in rows]
if big:
    table(big, f"big answers, medians of {rounds} rounds (wrk -t1 -c{conns} -d{duration}); per second = over each wrk run; "
               "errors = non-2xx + socket errors, summed over rounds; drain = wait after the run until no mirror was in flight")
    print("targets (understudy mirror + compare vs its own proxy only, and vs nginx's mirror):")
    for payload in big:
        p, m, n = (payload, "understudy_proxy"), (payload, "understudy_mirror"), (payload, "nginx_mirror")
        r1 = med(m, "rps") / med(p, "rps")
        r2 = med(m, "p99") / med(p, "p99")
        r3 = med(m, "rps") / med(n, "rps")
        print(f"  {payload:<11} mirror/proxy req/s {r1:5.2f} (>= 0.9 {verdict(r1 >= 0.9)})   "
              f"mirror/proxy p99 {r2:5.2f} (<= 1.25 {verdict(r2 <= 1.25)})   "
              f"mirror/nginx mirror req/s {r3:5.2f} (>= 1.5 {verdict(r3 >= 1.5)})")

if ("slowbig", "understudy_proxy") in rows:
    table(["slowbig"], f"slow candidate, embeddings answer after 200 ms, medians of {rounds} rounds (wrk -t1 -c{slow_conns} -d{duration}); "
                       "each job its own process, peak RSS from after warm-up")
    budget = int(budget_env) if budget_env else 64 * 1024 * 1024
    source = "MAX_BUFFERED_BYTES" if budget_env else "default, not written to the config"
    pp, pm = peaks[("slowbig", "understudy_proxy")] * 1024, peaks[("slowbig", "understudy_mirror")] * 1024
    limit = pp + budget * 1.1
    print(f"  peak RSS: proxy only {pp/2**20:.1f} MiB, mirror + compare {pm/2**20:.1f} MiB, difference {(pm-pp)/2**20:+.1f} MiB")
    print(f"  shadow.max_buffered_bytes {budget} ({budget/2**20:.0f} MiB, {source})")
    print(f"  peak_mirror <= peak_proxy + budget x 1.1: {pm/2**20:.1f} <= {limit/2**20:.1f} MiB {verdict(pm <= limit)}")
    p, m = ("slowbig", "understudy_proxy"), ("slowbig", "understudy_mirror")
    r = med(m, "p99") / med(p, "p99")
    print(f"  client p99 mirror/proxy {med(m,'p99'):.2f}/{med(p,'p99'):.2f} ms = {r:.2f} (<= 1.25 {verdict(r <= 1.25)}); "
          f"req/s mirror/proxy {med(m,'rps')/med(p,'rps'):.2f}")
PY
fi
