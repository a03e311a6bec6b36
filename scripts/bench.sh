#!/usr/bin/env bash
# Measures the services on loopback and writes every figure to results/bench.md:
#   - HTTP through api -> gcd with wrk -t2 -c32, with 1 and with 3 gcd replicas
#     (req/s, p50, p99);
#   - direct gRPC against one gcd with grpc-load (bench/, our load client);
#   - a ceiling: the same wrk against http-ceiling (bench/), the api's HTTP
#     stack answering a fixed body with no gRPC hop, i.e. this machine's limit;
#   - CPU time per request of each process, user and system apart (/proc);
#   - user-space instructions per request under callgrind
#     (scripts/instructions.py), the figure that does not move with the
#     machine's load;
#   - idle and after-load memory (VmRSS, and VmHWM = peak) of every process;
#   - start-up time from exec to the first successful request (startup-probe).
# Figures are medians of --runs runs. It builds the release binaries first.
# Host binaries (target/release, glibc) are always measured; the static musl
# binaries that ship (dist/x86_64-unknown-linux-musl, from scripts/build-arm.sh)
# are measured too when present (--musl builds them first). Traffic goes to
# 127.0.0.1 only; every process it starts is stopped on exit. About 5 minutes
# with the defaults.
#
# Usage: scripts/bench.sh [options]
#   --quick          1 run of 3 s per figure, host binaries only (< 1 minute)
#   --runs N         runs per figure; the median is reported (default 3)
#   --duration S     seconds per wrk or grpc-load run (default 10)
#   --bin DIR[:NAME] measure gcd and api from DIR (repeatable; replaces the
#                    default set of host and musl binaries)
#   --musl           build the static musl binaries first (scripts/build-arm.sh
#                    --binaries-only, x86_64 only)
#   --worker-threads N  run gcd, api and http-ceiling with N Tokio worker
#                    threads instead of their default
#   --tuning         also measure api / gcd worker-thread combinations on the
#                    last set of binaries (adds ~3 minutes)
#   --no-build       use the binaries already built
#   --out FILE       where to write the results (default results/bench.md)
#   --source TEXT    what was measured, for the results (default: git commit)
#   -h, --help       this text
# Needs wrk, curl and valgrind (scripts/install-deps.sh installs them).
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/common.sh
source scripts/lib/common.sh

runs=3
duration=10
quick=0
build=1
tuning=0
out=results/bench.md
musl_build=0
source_text=
workers=
bins=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --runs) runs=${2:?--runs needs a number}; shift ;;
    --duration) duration=${2:?--duration needs seconds}; shift ;;
    --bin) bins+=("${2:?--bin needs a directory}"); shift ;;
    --tuning) tuning=1 ;;
    --musl) musl_build=1 ;;
    --worker-threads) workers=${2:?--worker-threads needs a number}; shift ;;
    --no-build) build=0 ;;
    --out) out=${2:?--out needs a file}; shift ;;
    --source) source_text=${2:?--source needs a description}; shift ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
  shift
done
if [ "$quick" = 1 ]; then
  runs=1
  duration=3
fi
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer"
[[ "$duration" =~ ^[1-9][0-9]*$ ]] || die "--duration must be a positive integer"
[[ -z "$workers" || "$workers" =~ ^[0-9]+$ ]] || die "--worker-threads must be a number"
for tool in wrk curl; do
  command -v "$tool" >/dev/null || die "$tool not found: run scripts/install-deps.sh"
done

# wrk settings from the benchmark's definition; the warm-up is not recorded.
WRK_ARGS=(-t2 -c32)
WARMUP_SECS=2
[ "$quick" = 1 ] && WARMUP_SECS=1
# grpc-load: as many calls in flight as wrk has connections, over one HTTP/2
# connection (what the api keeps per replica).
GRPC_ARGS=(--concurrency 32 --connections 1 --threads 1)
# Services exit at once on SIGTERM here: no endpoints to leave.
BASE_FLAGS=(--listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --shutdown-delay-ms 0 --drain-timeout-ms 1000)
GCD_FLAGS=("${BASE_FLAGS[@]}")
API_FLAGS=("${BASE_FLAGS[@]}")
CEILING_FLAGS=(--listen 127.0.0.1:0)
if [ -n "$workers" ]; then
  GCD_FLAGS+=(--worker-threads "$workers")
  API_FLAGS+=(--worker-threads "$workers")
  CEILING_FLAGS+=(--worker-threads "$workers")
fi

if [ "$build" = 1 ]; then
  log "building release binaries"
  # Separate invocations: the bench tools never change the service binaries.
  cargo build --release --locked -p gcd -p api
  cargo build --release --locked -p loadgen
fi
if [ "$musl_build" = 1 ]; then
  log "building static musl binaries (scripts/build-arm.sh)"
  PI_GCD_TARGETS=x86_64-unknown-linux-musl scripts/build-arm.sh --binaries-only
fi
TOOLS=target/release
for tool in grpc-load http-ceiling startup-probe; do
  [ -x "$TOOLS/$tool" ] || die "$TOOLS/$tool is missing: run without --no-build"
done

# Binary sets to measure: DIR:NAME pairs.
if [ ${#bins[@]} -eq 0 ]; then
  bins=("target/release:host (glibc)")
  musl=dist/x86_64-unknown-linux-musl
  if [ "$quick" = 0 ] && [ -x "$musl/gcd" ] && [ -x "$musl/api" ]; then
    bins+=("$musl:static musl (ships)")
  fi
fi

TMP=$(mktemp -d)
PIDS=()
STARTS=0
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CMD...: starts CMD in the background and waits for its
# "addr=HOST:PORT" log line. Sets PID and ADDR.
start() {
  local name=$1 log
  shift
  # A fresh file per start: a reused one could show a dead process's address.
  STARTS=$((STARTS + 1))
  log="$TMP/$name.$STARTS.log"
  "$@" >"$log" 2>&1 &
  PID=$!
  PIDS+=("$PID")
  local tries=0
  until ADDR=$(grep -o ' addr=[^ ]*' "$log" 2>/dev/null | head -n1 | cut -d= -f2) && [ -n "$ADDR" ]; do
    kill -0 "$PID" 2>/dev/null || die "$name exited at start: $(tail -n3 "$log")"
    tries=$((tries + 1))
    [ "$tries" -lt 1000 ] || die "$name did not log its address within 10 s"
    sleep 0.01
  done
}

# stop_all: stops every process started so far and waits for it.
stop_all() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}

# wait_ok URL: retries until URL answers 200.
wait_ok() {
  local tries=0
  until curl -sf -o /dev/null "$1"; do
    tries=$((tries + 1))
    [ "$tries" -lt 500 ] || die "$1 did not answer 200 within 10 s"
    sleep 0.02
  done
}

# mem PID: "VmRSS VmHWM" in KiB.
mem() {
  awk '/^VmRSS:/ {rss = $2} /^VmHWM:/ {hwm = $2} END {print rss, hwm}' "/proc/$1/status"
}

mib() { awk -v kib="$1" 'BEGIN {printf "%.2f", kib / 1024}'; }

# median V...: the median of numbers (mean of the middle two for an even count).
median() {
  printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {
    if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# field NAME LINE: the value of NAME=value in a key=value line.
field() { printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"; }

ms() { awk -v us="$1" 'BEGIN {printf "%.2f", us / 1000}'; }

CLK_TCK=$(getconf CLK_TCK)
# cpu_ticks PID...: "USER SYSTEM", the CPU ticks used so far by all PIDs.
cpu_ticks() {
  local pid user=0 system=0 u s
  for pid in "$@"; do
    [ -n "$pid" ] || continue
    read -r u s < <(awk '{print $14, $15}' "/proc/$pid/stat")
    user=$((user + u))
    system=$((system + s))
  done
  echo "$user $system"
}
# us_per REQUESTS TICKS: CPU microseconds per request.
us_per() { awk -v r="$1" -v t="$2" -v hz="$CLK_TCK" 'BEGIN {printf "%.1f", r ? t * 1e6 / hz / r : 0}'; }

THROUGHPUT=()
# Processes whose CPU time measure() charges to each request: the front
# (api or http-ceiling) and the gcd replicas.
FRONT_PIDS=()
GCD_PIDS=()
# cpu_cell PIDS_COUNT TOTALS USERS SYSTEMS: "-" without processes, else the
# median CPU µs per request with the medians of its user and system parts.
cpu_cell() {
  local total user system
  read -r -a total <<<"$2"
  read -r -a user <<<"$3"
  read -r -a system <<<"$4"
  if [ "$1" -eq 0 ]; then
    echo "-"
  else
    echo "$(median "${total[@]}") ($(median "${user[@]}") + $(median "${system[@]}"))"
  fi
}

# measure KIND LABEL BINS CMD...: runs CMD --runs times after a warm-up, and
# adds a row with the median req/s, p50, p99 and CPU per request (user and
# system apart) to THROUGHPUT. CMD prints a "wrk:" or "grpc-load:" key=value
# line.
measure() {
  local kind=$1 label=$2 binset=$3
  shift 3
  local rps=() p50=() p99=() bad=0 line i errors non2xx n
  local front_us=() front_user=() front_sys=() gcd_us=() gcd_user=() gcd_sys=()
  local fu0 fs0 gu0 gs0 fu1 fs1 gu1 gs1
  for ((i = 1; i <= runs; i++)); do
    read -r fu0 fs0 < <(cpu_ticks "${FRONT_PIDS[@]}")
    read -r gu0 gs0 < <(cpu_ticks "${GCD_PIDS[@]}")
    line=$("$@" | grep -E '^(wrk|grpc-load): ') || die "$label: no figures from $1"
    read -r fu1 fs1 < <(cpu_ticks "${FRONT_PIDS[@]}")
    read -r gu1 gs1 < <(cpu_ticks "${GCD_PIDS[@]}")
    n=$(field requests "$line")
    front_us+=("$(us_per "$n" $((fu1 - fu0 + fs1 - fs0)))")
    front_user+=("$(us_per "$n" $((fu1 - fu0)))")
    front_sys+=("$(us_per "$n" $((fs1 - fs0)))")
    gcd_us+=("$(us_per "$n" $((gu1 - gu0 + gs1 - gs0)))")
    gcd_user+=("$(us_per "$n" $((gu1 - gu0)))")
    gcd_sys+=("$(us_per "$n" $((gs1 - gs0)))")
    rps+=("$(field rps "$line")")
    p50+=("$(field p50_us "$line")")
    p99+=("$(field p99_us "$line")")
    errors=$(field errors "$line")
    non2xx=$(field non2xx "$line")
    bad=$((bad + ${errors:-0} + ${non2xx:-0}))
    log "$label [$binset] run $i: $line"
  done
  local m50 m99
  m50=$(median "${p50[@]}")
  m99=$(median "${p99[@]}")
  local front gcd
  front=$(cpu_cell ${#FRONT_PIDS[@]} "${front_us[*]}" "${front_user[*]}" "${front_sys[*]}")
  gcd=$(cpu_cell ${#GCD_PIDS[@]} "${gcd_us[*]}" "${gcd_user[*]}" "${gcd_sys[*]}")
  THROUGHPUT+=("| $label | $binset | $kind | **$(median "${rps[@]}" | awk '{printf "%.0f", $1}')** | $(ms "$m50") | $(ms "$m99") | $front | $gcd | $(printf '%.0f ' "${rps[@]}")| $bad |")
}

# wrk_run URL: the measured wrk run.
wrk_run() { wrk "${WRK_ARGS[@]}" -d"${duration}s" -s bench/wrk-report.lua "$1"; }

MEMORY=()
# mem_row SCENARIO BINSET PROCESS PID IDLE GOAL_IDLE GOAL_PEAK: a memory row.
mem_row() {
  local after_rss after_hwm
  read -r after_rss after_hwm < <(mem "$4")
  MEMORY+=("| $1 | $2 | $3 | $(mib "${5% *}") | $(mib "$after_rss") | $(mib "$after_hwm") | $6 / $7 |")
}

STARTUP=()

quiet_sample() {
  # CPU busy share over one second, all cores, before we start anything.
  local a b
  read -r -a a </proc/stat
  sleep 1
  read -r -a b </proc/stat
  local idle=$(((b[4] + b[5]) - (a[4] + a[5]))) total=0 i
  for ((i = 1; i < ${#a[@]}; i++)); do total=$((total + b[i] - a[i])); done
  awk -v idle="$idle" -v total="$total" 'BEGIN {printf "%.0f%%", 100 * (1 - idle / total)}'
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
BUSY_BEFORE=$(quiet_sample)
log "machine load before: $LOAD_BEFORE (CPU busy $BUSY_BEFORE)"
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
SECONDS=0

for entry in "${bins[@]}"; do
  dir=${entry%%:*}
  name=${entry#*:}
  [ "$name" = "$entry" ] && name=$(basename "$dir")
  GCD="$dir/gcd"
  API="$dir/api"
  if [ ! -x "$GCD" ] || [ ! -x "$API" ]; then die "no gcd and api in $dir"; fi

  # Start-up: exec to first answer, gcd alone, then api with a gcd behind it.
  line=$("$TOOLS/startup-probe" --protocol grpc --runs "$runs" -- "$GCD" "${GCD_FLAGS[@]}" | tail -n1)
  gcd_start=$(field first_ok_ms "$line")
  start gcd "$GCD" "${GCD_FLAGS[@]}"
  line=$("$TOOLS/startup-probe" --protocol http --runs "$runs" -- "$API" "${API_FLAGS[@]}" --gcd "$ADDR" | tail -n1)
  api_start=$(field first_ok_ms "$line")
  stop_all
  STARTUP+=("| $name | $gcd_start | $api_start |")
  log "start-up [$name]: gcd $gcd_start ms, api $api_start ms (first success)"

  # api -> gcd with 1 and with 3 replicas.
  for replicas in 1 3; do
    addrs=()
    gcd_pids=()
    for ((r = 1; r <= replicas; r++)); do
      start "gcd$r" "$GCD" "${GCD_FLAGS[@]}"
      addrs+=("$ADDR")
      gcd_pids+=("$PID")
    done
    start api "$API" "${API_FLAGS[@]}" --gcd "$(IFS=,; echo "${addrs[*]}")"
    api_pid=$PID
    url="http://$ADDR/gcd/12/18"
    wait_ok "$url"
    sleep 0.5
    api_idle=$(mem "$api_pid")
    gcd_idle=$(mem "${gcd_pids[0]}")
    wrk "${WRK_ARGS[@]}" -d"${WARMUP_SECS}s" "$url" >/dev/null
    FRONT_PIDS=("$api_pid")
    GCD_PIDS=("${gcd_pids[@]}")
    measure wrk "api -> gcd, $replicas replica(s)" "$name" wrk_run "$url"
    mem_row "api -> gcd, $replicas replica(s)" "$name" api "$api_pid" "$api_idle" "≤ 3" "≤ 8"
    mem_row "api -> gcd, $replicas replica(s)" "$name" "gcd (first)" "${gcd_pids[0]}" "$gcd_idle" "≤ 2" "≤ 5"
    stop_all
  done

  # Direct gRPC against one gcd.
  start gcd "$GCD" "${GCD_FLAGS[@]}"
  gcd_pid=$PID
  gcd_addr=$ADDR
  sleep 0.5
  gcd_idle=$(mem "$gcd_pid")
  "$TOOLS/grpc-load" --target "$gcd_addr" "${GRPC_ARGS[@]}" --duration "$WARMUP_SECS" >/dev/null
  FRONT_PIDS=()
  GCD_PIDS=("$gcd_pid")
  measure grpc-load "gRPC direct, 1 gcd" "$name" \
    "$TOOLS/grpc-load" --target "$gcd_addr" "${GRPC_ARGS[@]}" --duration "$duration"
  mem_row "gRPC direct, 1 gcd" "$name" gcd "$gcd_pid" "$gcd_idle" "≤ 2" "≤ 5"
  stop_all

  # Worker threads (Tokio) per process, 1 replica, last binaries only.
  if [ "$tuning" = 1 ] && [ "$entry" = "${bins[-1]}" ]; then
    for combo in 1:1 2:1 1:2 2:2 4:4; do
      aw=${combo%:*}
      gw=${combo#*:}
      start gcd "$GCD" "${BASE_FLAGS[@]}" --worker-threads "$gw"
      GCD_PIDS=("$PID")
      start api "$API" "${BASE_FLAGS[@]}" --worker-threads "$aw" --gcd "${ADDR}"
      FRONT_PIDS=("$PID")
      url="http://$ADDR/gcd/12/18"
      wait_ok "$url"
      wrk "${WRK_ARGS[@]}" -d"${WARMUP_SECS}s" "$url" >/dev/null
      measure wrk "tuning: api ${aw} / gcd ${gw} worker threads" "$name" wrk_run "$url"
      stop_all
    done
  fi
done

# Ceiling: the api's HTTP stack with no gRPC hop.
start ceiling "$TOOLS/http-ceiling" "${CEILING_FLAGS[@]}"
ceiling_pid=$PID
url="http://$ADDR/gcd/12/18"
wait_ok "$url"
sleep 0.5
ceiling_idle=$(mem "$ceiling_pid")
wrk "${WRK_ARGS[@]}" -d"${WARMUP_SECS}s" "$url" >/dev/null
FRONT_PIDS=("$ceiling_pid")
GCD_PIDS=()
measure wrk "ceiling: HTTP only, no gRPC hop" "host (glibc)" wrk_run "$url"
mem_row "ceiling: HTTP only, no gRPC hop" "host (glibc)" http-ceiling "$ceiling_pid" "$ceiling_idle" "-" "-"
stop_all

# User-space instructions per request under callgrind: unlike req/s and CPU
# time, they do not move with whatever else runs on the machine.
if [ "$quick" = 1 ]; then
  INSTRUCTIONS="Not measured with --quick."
elif ! command -v valgrind >/dev/null || ! command -v callgrind_control >/dev/null; then
  INSTRUCTIONS="Not measured: valgrind is not installed (apt-get install valgrind)."
else
  log "instructions per request (scripts/instructions.py, callgrind)"
  inst_args=()
  for entry in "${bins[@]}"; do inst_args+=(--bin "$entry"); done
  INSTRUCTIONS=$(python3 scripts/instructions.py "${inst_args[@]}" --seconds "$duration") ||
    die "scripts/instructions.py failed"
fi

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$SECONDS

crate_version() {
  awk -v name="$1" '$0 == "name = \"" name "\"" {getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock
}
sizes() {
  local entry dir
  for entry in "${bins[@]}"; do
    dir=${entry%%:*}
    printf '| %s | %s | %s |\n' "${entry#*:}" "$(stat -c %s "$dir/gcd")" "$(stat -c %s "$dir/api")"
  done
}
commit="commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD -- api gcd ops proto Cargo.toml Cargo.lock 2>/dev/null || commit="$commit (with local changes)"
[ -n "$source_text" ] && commit=$source_text

mkdir -p "$(dirname "$out")"
{
  cat <<EOF
# Benchmark results

Written by \`scripts/bench.sh\`; do not edit by hand. Re-run it to refresh.
Everything runs on this one machine over 127.0.0.1: wrk, api, gcd and the
load client share its cores, so the figures are for the whole system, not
for one process with the machine to itself.

## Machine and software

| what | value |
|---|---|
| date (UTC) | $STARTED |
| CPU | $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') |
| cores | $(nproc) |
| memory | $(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) |
| kernel | $(uname -sr) |
| OS | $(sed -n 's/^PRETTY_NAME=//p' /etc/os-release | tr -d '"') |
| load average before / after | $LOAD_BEFORE / $LOAD_AFTER |
| CPU busy before starting (1 s sample) | $BUSY_BEFORE |
| rustc | $(rustc --version 2>/dev/null || echo unknown) |
| wrk | $(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2) |
| crates | tokio $(crate_version tokio), tonic $(crate_version tonic), h2 $(crate_version h2), hyper $(crate_version hyper), hyper-util $(crate_version hyper-util), axum $(crate_version axum), prost $(crate_version prost) |
| source | $commit |
| mode | $runs run(s) of ${duration} s per figure after a ${WARMUP_SECS} s warm-up; $( [ "$quick" = 1 ] && echo "--quick (smoke only)" || echo "full"); took ${ELAPSED} s |
| Tokio worker threads | ${workers:-the default of each binary} (gcd, api, http-ceiling) |

Binary sizes (bytes):

| binaries | gcd | api |
|---|---|---|
$(sizes)

## Throughput and latency

wrk \`${WRK_ARGS[*]} -d${duration}s\` on \`GET /gcd/12/18\`; grpc-load
\`${GRPC_ARGS[*]}\` (Compute calls). req/s, p50 and p99 are medians over the
runs; "errors" counts socket errors and non-2xx answers over all runs.
"CPU µs/req" is the CPU time the front process (api, or http-ceiling) and
the gcd process(es) spent per answered request, from /proc: the median of
user + system, then the medians of user and system apart. It is less noisy
than req/s when something else shares the machine, and it shows which hop
costs what. The load generator's own CPU is not counted.
Goal: ≥ 30,000 req/s through api -> gcd with one replica, p99 ≤ 3 ms (the
original Go implementation: about 12,600 req/s).

| scenario | binaries | load | req/s | p50 ms | p99 ms | front CPU µs/req (user + sys) | gcd CPU µs/req (user + sys) | req/s per run | errors |
|---|---|---|---|---|---|---|---|---|---|
$(printf '%s\n' "${THROUGHPUT[@]}")

## Instructions per request

User-space instructions each process executes per request, counted by
valgrind's callgrind (\`scripts/instructions.py\`): api -> one gcd, counters
zeroed after a warm-up of 200 requests, then wrk \`-t1 -c8 -d${duration}s\`.
The same binaries and load give the same count whatever else the machine
is doing, so this is the figure to decide a CPU change on.

$INSTRUCTIONS

## Memory

MiB. "idle" is VmRSS once the process has answered its first request;
"after load" is VmRSS right after the runs above; "peak" is VmHWM, the most
it ever held. Goals: gcd ≤ 2 MiB idle and ≤ 5 MiB peak, api ≤ 3 MiB idle and
≤ 8 MiB peak (the original Go implementation: 7.0 / 12.4 MB for gcd,
9.3 / 16.7 MB for api).

| scenario | binaries | process | idle | after load | peak (VmHWM) | goal idle / peak |
|---|---|---|---|---|---|---|
$(printf '%s\n' "${MEMORY[@]}")

## Start-up

Milliseconds from exec to the first successful request (median of $runs):
a gRPC Compute for gcd, \`GET /gcd/12/18\` for api (with a gcd already up).

| binaries | gcd | api |
|---|---|---|
$(printf '%s\n' "${STARTUP[@]}")

Tuning experiments and the choices they led to: [tuning.md](tuning.md).
EOF
} >"$out"
log "wrote $out (${ELAPSED} s)"
