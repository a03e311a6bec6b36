#!/usr/bin/env bash
# Runs the whole system on this machine, on loopback: three gcd replicas and
# the api in front of them, balancing every request across all three.
#
#   scripts/run-local.sh            # then: curl localhost:8080/gcd/12/18
#
# Ctrl-C stops everything cleanly (SIGTERM to each process, which drains
# and exits). Ports: api 8080 (admin 9091), gcd 3001-3003 (admin 9101-9103).
# RUST_LOG sets the log level (default info).
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/common.sh
source scripts/lib/common.sh

case "${1:-}" in
  -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) die "unknown argument: $1 (see --help)" ;;
esac

command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (https://rustup.rs)"
command -v curl >/dev/null || die "curl not found: install it (apt-get install curl)"

log "building release binaries"
cargo build --release --locked -p gcd -p api
bin="${CARGO_TARGET_DIR:-target}/release"

pids=()
stop() {
  trap - INT TERM EXIT
  if [ ${#pids[@]} -gt 0 ]; then
    log "stopping (SIGTERM, then waiting for each process to drain)"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
}
trap stop EXIT
trap 'exit 130' INT TERM

# Prefixes each log line with the process name. It ignores Ctrl-C so the
# last lines of a draining process still get through.
prefix() { (trap '' INT TERM; exec sed -u "s/^/[$1] /"); }

# Local processes need no shutdown delay: nothing has to notice them leave.
gcd_addrs=()
for i in 1 2 3; do
  "$bin/gcd" --listen "127.0.0.1:300$i" --admin-listen "127.0.0.1:910$i" \
    --shutdown-delay-ms 0 > >(prefix "gcd-$i") &
  pids+=($!)
  gcd_addrs+=("127.0.0.1:300$i")
done
"$bin/api" --listen 127.0.0.1:8080 --admin-listen 127.0.0.1:9091 \
  --gcd "$(IFS=,; echo "${gcd_addrs[*]}")" --shutdown-delay-ms 0 > >(prefix "api  ") &
pids+=($!)

# Wait (bounded) until the api answers through gcd.
for _ in $(seq 100); do
  if curl -fsS http://127.0.0.1:8080/gcd/12/18 >/dev/null 2>&1; then
    cat >&2 <<'TXT'

  Up: 3 gcd replicas and the api on loopback. Try:
    curl http://127.0.0.1:8080/gcd/12/18            # {"result":"6"}
    curl http://127.0.0.1:9091/metrics              # api metrics
    curl http://127.0.0.1:9101/metrics              # gcd-1: gcd_compute_requests_total
    grpcurl -plaintext 127.0.0.1:3001 list          # reflection
  Ctrl-C stops everything.

TXT
    wait
    exit 0
  fi
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || die "a process exited during start-up (is a port in use?)"
  done
  sleep 0.1
done
die "the api did not answer within 10 s"
