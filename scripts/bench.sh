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
# Figures are medians of --runs runs. When several binary sets are measured
# they take turns run by run (run 1: A, B; run 2: B, A; ...), so a machine
# that slows down part-way weighs on every set alike. It builds the release
# binaries first.
# Host binaries (target/release, or $CARGO_TARGET_DIR/release; glibc) are
# always measured; the static musl binaries that ship
# (dist/x86_64-unknown-linux-musl, from scripts/build-arm.sh) are measured
# too when present (--musl builds them first). Traffic goes to
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
#   --original       also measure the original Go implementation this project
#                    replaces (bench/original, built by scripts/build-original.py
#                    from Debian's Go packages) as one more set, "original (Go)",
#                    in the same scenarios, and add a table of our figures as
#                    ratios of its own
#   --worker-threads N  run gcd, api and http-ceiling with N Tokio worker
#                    threads instead of their default (the original: GOMAXPROCS)
#   --tuning         also measure api / gcd worker-thread combinations on the
#                    last set of our binaries (adds ~3 minutes)
#   --no-build       use the binaries already built
#   --out FILE       where to write the results (default results/bench.md)
#   --source TEXT    what was measured, for the results (default: git commit)
#   -h, --help       this text
# Needs wrk, curl and valgrind, and for --original Go and its Debian packages
# (scripts/install-deps.sh installs them all).
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
original=0
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
    --original) original=1 ;;
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
# Where cargo puts the host builds: the bench tools and the host set.
TOOLS=${CARGO_TARGET_DIR:-target}/release
for tool in grpc-load http-ceiling startup-probe; do
  [ -x "$TOOLS/$tool" ] || die "$TOOLS/$tool is missing: run without --no-build"
done

# Binary sets to measure: DIR:NAME pairs.
if [ ${#bins[@]} -eq 0 ]; then
  bins=("$TOOLS:host (glibc)")
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
  # ${A[@]+...}: an empty array is "unbound" to bash before 4.4 under set -u.
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ORIGINAL_NAME="original (Go)"
ORIGINAL_VERSIONS=
if [ "$original" = 1 ]; then
  log "building the original Go implementation (scripts/build-original.py)"
  python3 scripts/build-original.py "$TMP/original" >&2 || die "scripts/build-original.py failed"
  ORIGINAL_VERSIONS=$(cat "$TMP/original/VERSIONS")
  bins+=("$TMP/original:$ORIGINAL_NAME")
fi

# The sets as parallel arrays, indexed 0 .. NSETS - 1.
SET_DIR=()
SET_NAME=()
for entry in "${bins[@]}"; do
  dir=${entry%%:*}
  name=${entry#*:}
  [ "$name" = "$entry" ] && name=$(basename "$dir")
  if [ ! -x "$dir/gcd" ] || [ ! -x "$dir/api" ]; then die "no gcd and api in $dir"; fi
  SET_DIR+=("$dir")
  SET_NAME+=("$name")
done
NSETS=${#SET_DIR[@]}
# --tuning explores our binaries, so the last set that is not the original.
TUNING_SET=$((NSETS - 1 - original))

# set_order RUN: the set indices in the order run RUN takes them, forwards
# on odd runs and backwards on even ones, so that no set always goes first.
set_order() {
  local k
  if [ $(($1 % 2)) -eq 1 ]; then
    for ((k = 0; k < NSETS; k++)); do echo "$k"; done
  else
    for ((k = NSETS - 1; k >= 0; k--)); do echo "$k"; done
  fi
}

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
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do wait "$pid" 2>/dev/null || true; done
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
# Medians of every throughput row, for the comparison with the original.
CMP_LABEL=()
CMP_SET=()
CMP_RPS=()
CMP_P99=()
# Median CPU µs per request of the front process and of gcd ("-" if none).
CMP_FRONT=()
CMP_GCD=()
# cpu_cell PIDS_COUNT TOTALS USERS SYSTEMS: "-" without processes, else the
# median CPU µs per request with the medians of its user and system parts.
cpu_cell() {
  if [ "$1" -eq 0 ]; then
    echo "-"
  else
    # Unquoted on purpose: each argument is a list of numbers.
    # shellcheck disable=SC2086
    echo "$(median $2) ($(median $3) + $(median $4))"
  fi
}

# Per slot (a set's index, or NSETS for a figure of one set alone): the
# processes whose CPU time is charged to each request, the front (api or
# http-ceiling) and the gcd replicas; what the load is aimed at; and the
# figures of the runs so far. Lists are space-separated strings: bash 3.2
# has neither arrays of arrays nor associative arrays.
S_FRONT=()
S_GCD=()
S_TARGET=()
R_RPS=()
R_P50=()
R_P99=()
R_FRONT=()
R_FRONT_USER=()
R_FRONT_SYS=()
R_GCD=()
R_GCD_USER=()
R_GCD_SYS=()
R_BAD=()

# reset_runs SLOT: forgets the figures of SLOT's runs.
reset_runs() {
  R_RPS[$1]=
  R_P50[$1]=
  R_P99[$1]=
  R_FRONT[$1]=
  R_FRONT_USER[$1]=
  R_FRONT_SYS[$1]=
  R_GCD[$1]=
  R_GCD_USER[$1]=
  R_GCD_SYS[$1]=
  R_BAD[$1]=0
}

# measure_run SLOT LABEL BINSET RUN CMD...: one measured run of CMD, which
# prints a "wrk:" or "grpc-load:" key=value line; its figures and the CPU
# time of SLOT's processes are added to SLOT's runs.
measure_run() {
  local slot=$1 label=$2 binset=$3 run=$4
  shift 4
  local line n errors non2xx fu0 fs0 gu0 gs0 fu1 fs1 gu1 gs1
  # Unquoted on purpose: lists of PIDs, possibly empty.
  # shellcheck disable=SC2086
  read -r fu0 fs0 < <(cpu_ticks ${S_FRONT[$slot]})
  # shellcheck disable=SC2086
  read -r gu0 gs0 < <(cpu_ticks ${S_GCD[$slot]})
  line=$("$@" | grep -E '^(wrk|grpc-load): ') || die "$label: no figures from $1"
  # shellcheck disable=SC2086
  read -r fu1 fs1 < <(cpu_ticks ${S_FRONT[$slot]})
  # shellcheck disable=SC2086
  read -r gu1 gs1 < <(cpu_ticks ${S_GCD[$slot]})
  n=$(field requests "$line")
  R_FRONT[$slot]+=" $(us_per "$n" $((fu1 - fu0 + fs1 - fs0)))"
  R_FRONT_USER[$slot]+=" $(us_per "$n" $((fu1 - fu0)))"
  R_FRONT_SYS[$slot]+=" $(us_per "$n" $((fs1 - fs0)))"
  R_GCD[$slot]+=" $(us_per "$n" $((gu1 - gu0 + gs1 - gs0)))"
  R_GCD_USER[$slot]+=" $(us_per "$n" $((gu1 - gu0)))"
  R_GCD_SYS[$slot]+=" $(us_per "$n" $((gs1 - gs0)))"
  R_RPS[$slot]+=" $(field rps "$line")"
  R_P50[$slot]+=" $(field p50_us "$line")"
  R_P99[$slot]+=" $(field p99_us "$line")"
  errors=$(field errors "$line")
  non2xx=$(field non2xx "$line")
  R_BAD[$slot]=$((R_BAD[$slot] + ${errors:-0} + ${non2xx:-0}))
  log "$label [$binset] run $run: $line"
}

# measure_row SLOT KIND LABEL BINSET: adds a row with the median req/s, p50,
# p99 and CPU per request (user and system apart) of SLOT's runs to
# THROUGHPUT.
measure_row() {
  local slot=$1 kind=$2 label=$3 binset=$4
  local rps m50 m99 front gcd nfront ngcd
  # Unquoted on purpose below: lists of numbers.
  # shellcheck disable=SC2086
  rps=$(median ${R_RPS[$slot]})
  # shellcheck disable=SC2086
  m50=$(median ${R_P50[$slot]})
  # shellcheck disable=SC2086
  m99=$(median ${R_P99[$slot]})
  # shellcheck disable=SC2086
  nfront=$(set -- ${S_FRONT[$slot]}; echo $#)
  # shellcheck disable=SC2086
  ngcd=$(set -- ${S_GCD[$slot]}; echo $#)
  front=$(cpu_cell "$nfront" "${R_FRONT[$slot]}" "${R_FRONT_USER[$slot]}" "${R_FRONT_SYS[$slot]}")
  gcd=$(cpu_cell "$ngcd" "${R_GCD[$slot]}" "${R_GCD_USER[$slot]}" "${R_GCD_SYS[$slot]}")
  # shellcheck disable=SC2086
  THROUGHPUT+=("| $label | $binset | $kind | **$(echo "$rps" | awk '{printf "%.0f", $1}')** | $(ms "$m50") | $(ms "$m99") | $front | $gcd | $(printf '%.0f ' ${R_RPS[$slot]})| ${R_BAD[$slot]} |")
  CMP_LABEL+=("$label")
  CMP_SET+=("$binset")
  CMP_RPS+=("$rps")
  CMP_P99+=("$m99")
  CMP_FRONT+=("${front%% *}")
  CMP_GCD+=("${gcd%% *}")
}

# measure_sets KIND LABEL RUNNER: the scenario LABEL on every set, whose
# processes are up and warmed: run 1 takes each set once in set_order, then
# run 2, and so on; then a row per set. RUNNER SLOT makes one measured run
# against S_TARGET[SLOT].
measure_sets() {
  local kind=$1 label=$2 runner=$3 k run
  for ((k = 0; k < NSETS; k++)); do reset_runs "$k"; done
  for ((run = 1; run <= runs; run++)); do
    for k in $(set_order "$run"); do
      measure_run "$k" "$label" "${SET_NAME[$k]}" "$run" "$runner" "$k"
    done
  done
  for ((k = 0; k < NSETS; k++)); do measure_row "$k" "$kind" "$label" "${SET_NAME[$k]}"; done
}

# measure_alone KIND LABEL BINSET FRONT_PIDS GCD_PIDS URL: a wrk scenario on
# one set of processes only (tuning, ceiling): --runs runs, then a row.
measure_alone() {
  local slot=$NSETS run
  S_FRONT[$slot]=$4
  S_GCD[$slot]=$5
  S_TARGET[$slot]=$6
  reset_runs "$slot"
  for ((run = 1; run <= runs; run++)); do
    measure_run "$slot" "$2" "$3" "$run" wrk_slot "$slot"
  done
  measure_row "$slot" "$1" "$2" "$3"
}

# wrk_run URL: the measured wrk run.
wrk_run() { wrk "${WRK_ARGS[@]}" -d"${duration}s" -s bench/wrk-report.lua "$1"; }
# wrk_slot SLOT / grpc_slot SLOT: a measured run against S_TARGET[SLOT].
wrk_slot() { wrk_run "${S_TARGET[$1]}"; }
grpc_slot() { "$TOOLS/grpc-load" --target "${S_TARGET[$1]}" "${GRPC_ARGS[@]}" --duration "$duration"; }

MEMORY=()
# mem_row SCENARIO BINSET PROCESS PID IDLE GOAL_IDLE GOAL_PEAK: a memory row.
mem_row() {
  local after_rss after_hwm goals="$6 / $7"
  read -r after_rss after_hwm < <(mem "$4")
  # The goals are ours; the original's figures are there to compare with.
  [ "$2" != "$ORIGINAL_NAME" ] || goals="- / -"
  MEMORY+=("| $1 | $2 | $3 | $(mib "${5% *}") | $(mib "$after_rss") | $(mib "$after_hwm") | $goals |")
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

# Start-up: exec to first answer, gcd alone, then api with a gcd of its own
# set behind it (started once, up through all runs).
GCD_STARTS=()
API_STARTS=()
for ((k = 0; k < NSETS; k++)); do
  start gcd "${SET_DIR[$k]}/gcd" "${GCD_FLAGS[@]}"
  S_TARGET[$k]=$ADDR
  GCD_STARTS[$k]=
  API_STARTS[$k]=
done
for ((run = 1; run <= runs; run++)); do
  for k in $(set_order "$run"); do
    line=$("$TOOLS/startup-probe" --protocol grpc --runs 1 -- "${SET_DIR[$k]}/gcd" "${GCD_FLAGS[@]}" | tail -n1)
    gcd_start=$(field first_ok_ms "$line")
    line=$("$TOOLS/startup-probe" --protocol http --runs 1 -- "${SET_DIR[$k]}/api" "${API_FLAGS[@]}" --gcd "${S_TARGET[$k]}" | tail -n1)
    api_start=$(field first_ok_ms "$line")
    GCD_STARTS[$k]+=" $gcd_start"
    API_STARTS[$k]+=" $api_start"
    log "start-up [${SET_NAME[$k]}] run $run: gcd $gcd_start ms, api $api_start ms (first success)"
  done
done
stop_all
for ((k = 0; k < NSETS; k++)); do
  # Unquoted on purpose: lists of numbers.
  # shellcheck disable=SC2086
  gcd_start=$(median ${GCD_STARTS[$k]} | awk '{printf "%.2f", $1}')
  # shellcheck disable=SC2086
  api_start=$(median ${API_STARTS[$k]} | awk '{printf "%.2f", $1}')
  STARTUP+=("| ${SET_NAME[$k]} | $gcd_start | $api_start |")
  log "start-up [${SET_NAME[$k]}]: gcd $gcd_start ms, api $api_start ms (first success)"
done

# api -> gcd with 1 and with 3 replicas: every set's processes up at once,
# each warmed up, then the sets take turns run by run.
API_PID=()
FIRST_GCD_PID=()
API_IDLE=()
GCD_IDLE=()
for replicas in 1 3; do
  label="api -> gcd, $replicas replica(s)"
  for ((k = 0; k < NSETS; k++)); do
    addrs=()
    gcd_pids=()
    for ((r = 1; r <= replicas; r++)); do
      start "gcd$r" "${SET_DIR[$k]}/gcd" "${GCD_FLAGS[@]}"
      addrs+=("$ADDR")
      gcd_pids+=("$PID")
    done
    start api "${SET_DIR[$k]}/api" "${API_FLAGS[@]}" --gcd "$(IFS=,; echo "${addrs[*]}")"
    API_PID[$k]=$PID
    FIRST_GCD_PID[$k]=${gcd_pids[0]}
    S_FRONT[$k]=$PID
    S_GCD[$k]="${gcd_pids[*]}"
    S_TARGET[$k]="http://$ADDR/gcd/12/18"
    wait_ok "${S_TARGET[$k]}"
  done
  sleep 0.5
  for ((k = 0; k < NSETS; k++)); do
    API_IDLE[$k]=$(mem "${API_PID[$k]}")
    GCD_IDLE[$k]=$(mem "${FIRST_GCD_PID[$k]}")
  done
  for ((k = 0; k < NSETS; k++)); do
    wrk "${WRK_ARGS[@]}" -d"${WARMUP_SECS}s" "${S_TARGET[$k]}" >/dev/null
  done
  measure_sets wrk "$label" wrk_slot
  for ((k = 0; k < NSETS; k++)); do
    mem_row "$label" "${SET_NAME[$k]}" api "${API_PID[$k]}" "${API_IDLE[$k]}" "≤ 3" "≤ 8"
    mem_row "$label" "${SET_NAME[$k]}" "gcd (first)" "${FIRST_GCD_PID[$k]}" "${GCD_IDLE[$k]}" "≤ 2" "≤ 5"
  done
  stop_all
done

# Direct gRPC against one gcd.
label="gRPC direct, 1 gcd"
for ((k = 0; k < NSETS; k++)); do
  start gcd "${SET_DIR[$k]}/gcd" "${GCD_FLAGS[@]}"
  FIRST_GCD_PID[$k]=$PID
  S_FRONT[$k]=
  S_GCD[$k]=$PID
  S_TARGET[$k]=$ADDR
done
sleep 0.5
for ((k = 0; k < NSETS; k++)); do GCD_IDLE[$k]=$(mem "${FIRST_GCD_PID[$k]}"); done
for ((k = 0; k < NSETS; k++)); do
  "$TOOLS/grpc-load" --target "${S_TARGET[$k]}" "${GRPC_ARGS[@]}" --duration "$WARMUP_SECS" >/dev/null
done
measure_sets grpc-load "$label" grpc_slot
for ((k = 0; k < NSETS; k++)); do
  mem_row "$label" "${SET_NAME[$k]}" gcd "${FIRST_GCD_PID[$k]}" "${GCD_IDLE[$k]}" "≤ 2" "≤ 5"
done
stop_all

# Worker threads (Tokio) per process, 1 replica, on our last set only.
if [ "$tuning" = 1 ] && [ "$TUNING_SET" -ge 0 ]; then
  GCD=${SET_DIR[$TUNING_SET]}/gcd
  API=${SET_DIR[$TUNING_SET]}/api
  for combo in 1:1 2:1 1:2 2:2 4:4; do
    aw=${combo%:*}
    gw=${combo#*:}
    start gcd "$GCD" "${BASE_FLAGS[@]}" --worker-threads "$gw"
    gcd_pid=$PID
    start api "$API" "${BASE_FLAGS[@]}" --worker-threads "$aw" --gcd "${ADDR}"
    url="http://$ADDR/gcd/12/18"
    wait_ok "$url"
    wrk "${WRK_ARGS[@]}" -d"${WARMUP_SECS}s" "$url" >/dev/null
    measure_alone wrk "tuning: api ${aw} / gcd ${gw} worker threads" "${SET_NAME[$TUNING_SET]}" "$PID" "$gcd_pid" "$url"
    stop_all
  done
fi

# Ceiling: the api's HTTP stack with no gRPC hop.
start ceiling "$TOOLS/http-ceiling" "${CEILING_FLAGS[@]}"
ceiling_pid=$PID
url="http://$ADDR/gcd/12/18"
wait_ok "$url"
sleep 0.5
ceiling_idle=$(mem "$ceiling_pid")
wrk "${WRK_ARGS[@]}" -d"${WARMUP_SECS}s" "$url" >/dev/null
measure_alone wrk "ceiling: HTTP only, no gRPC hop" "host (glibc)" "$ceiling_pid" "" "$url"
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
  for ((k = 0; k < NSETS; k++)); do
    inst_args+=(--bin "${SET_DIR[$k]}:${SET_NAME[$k]}")
  done
  INSTRUCTIONS=$(python3 scripts/instructions.py "${inst_args[@]}" --seconds "$duration") ||
    die "scripts/instructions.py failed"
fi

# comparison: for each row of our sets with a row of the original in the
# same scenario, our req/s as a multiple of its own and our p99 as a share
# of its own.
comparison() {
  local j o
  for ((j = 0; j < ${#CMP_LABEL[@]}; j++)); do
    [ "${CMP_SET[$j]}" != "$ORIGINAL_NAME" ] || continue
    for ((o = 0; o < ${#CMP_LABEL[@]}; o++)); do
      [ "${CMP_SET[$o]}" = "$ORIGINAL_NAME" ] && [ "${CMP_LABEL[$o]}" = "${CMP_LABEL[$j]}" ] || continue
      awk -v label="${CMP_LABEL[$j]}" -v set="${CMP_SET[$j]}" \
        -v rps="${CMP_RPS[$j]}" -v orps="${CMP_RPS[$o]}" -v p99="${CMP_P99[$j]}" -v op99="${CMP_P99[$o]}" \
        -v front="${CMP_FRONT[$j]}" -v ofront="${CMP_FRONT[$o]}" -v gcd="${CMP_GCD[$j]}" -v ogcd="${CMP_GCD[$o]}" '
        function part(ours, theirs) { return theirs > 0 && ours != "-" ? sprintf("%.0f %%", 100 * ours / theirs) : "-" }
        BEGIN {
          times = orps > 0 ? sprintf("**%.1f x**", rps / orps) : "-"
          share = op99 > 0 ? sprintf("**%.0f %%**", 100 * p99 / op99) : "-"
          printf "| %s | %s | %.0f | %.0f | %s | %.2f | %.2f | %s | %s | %s |\n",
            label, set, rps, orps, times, p99 / 1000, op99 / 1000, share, part(front, ofront), part(gcd, ogcd) }'
    done
  done
}
COMPARISON=
if [ "$original" = 1 ]; then
  ORIGINAL_THREADS="at Go's default, one per core"
  [ -n "$workers" ] && [ "$workers" != 0 ] && ORIGINAL_THREADS="$workers (--worker-threads)"
  COMPARISON="

### Against the original

Our medians above as ratios of the original's, measured in the same runs:
req/s as a multiple of the original's (above 1 x: more requests answered),
p99 and CPU per request as shares of the original's (under 100 %: a
shorter tail, less work). The shares hold still when the machine as a
whole runs faster or slower, which moves every figure in µs. The original
is the tutorial's Go code as the tutorial wrote it (\`bench/original\`, built
by \`scripts/build-original.py\`: ${ORIGINAL_VERSIONS}): gin.Default(),
which logs every request, in front of one grpc-go connection to one gcd,
with GOMAXPROCS $ORIGINAL_THREADS.

| scenario | binaries | req/s | original's req/s | x original | p99 ms | original's p99 ms | % of original's p99 | api CPU, % of original's | gcd CPU, % of original's |
|---|---|---|---|---|---|---|---|---|---|
$(comparison)"
fi

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$SECONDS

crate_version() {
  awk -v name="$1" '$0 == "name = \"" name "\"" {getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock
}
sizes() {
  local k
  for ((k = 0; k < NSETS; k++)); do
    printf '| %s | %s | %s |\n' "${SET_NAME[$k]}" "$(stat -c %s "${SET_DIR[$k]}/gcd")" "$(stat -c %s "${SET_DIR[$k]}/api")"
  done
}
sources=(api gcd ops proto Cargo.toml Cargo.lock)
[ "$original" = 1 ] && sources+=(bench/original)
commit="commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD -- "${sources[@]}" 2>/dev/null || commit="$commit (with local changes)"
# A row of its own, or nothing: an empty line would end the table.
ORIGINAL_ROW=
[ "$original" = 1 ] && ORIGINAL_ROW=$'\n'"| original (Go) | $ORIGINAL_VERSIONS |"
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
| crates | tokio $(crate_version tokio), tonic $(crate_version tonic), h2 $(crate_version h2), hyper $(crate_version hyper), hyper-util $(crate_version hyper-util), axum $(crate_version axum), prost $(crate_version prost) |${ORIGINAL_ROW}
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
costs what. The load generator's own CPU is not counted. With several
binary sets, their processes are up together and the sets take turns run by
run (run 1: A, B; run 2: B, A; ...), so a machine that slows down part-way
weighs on every set alike.
Goal: ≥ 30,000 req/s through api -> gcd with one replica, p99 ≤ 3 ms, and
at least 2.2 x the original Go implementation's req/s with at most 40 % of
its p99 (\`--original\` measures it in the same runs).

| scenario | binaries | load | req/s | p50 ms | p99 ms | front CPU µs/req (user + sys) | gcd CPU µs/req (user + sys) | req/s per run | errors |
|---|---|---|---|---|---|---|---|---|---|
$(printf '%s\n' "${THROUGHPUT[@]}")$COMPARISON

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
≤ 8 MiB peak.

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
