#!/usr/bin/env bash
# nbd-vs-nbdkit.sh - the NBD front end against nbdkit: a shale RAM volume
# and `nbdkit memory` of the same size, driven by the same fio jobs (fio's
# nbd engine, one connection per job) in the same run, rounds alternating
# the order (peerbench runs even rounds in reverse). Prints the medians
# over rounds and the ratios shale/nbdkit; the full peerbench report is in
# $PEERBENCH_OUT/results.md.
#
# Usage: bench/nbd-vs-nbdkit.sh            (from anywhere in the repository)
#
# Environment (all optional):
#   PEERBENCH_DIR      peerbench checkout (default: ../shared/peerbench beside
#                      the repository)
#   PEERBENCH_OUT      output directory (default /tmp/shale-nbd-bench)
#   PEERBENCH_ROUNDS   rounds (default 5; at least 3)
#   PEERBENCH_SIZE     export size (default 4G; RAM: each server fills it once)
#   PEERBENCH_RUNTIME / PEERBENCH_RAMP  seconds per job (default 5 / 2)
#   PEERBENCH_JOBS     jobs to run (default: all five of the issue)
#   SHALE_BENCH_CPUPROFILE=1  write a Go CPU profile per shale run to
#                      $PEERBENCH_OUT/profiles/ (go tool pprof -top FILE)
#   Any other PEERBENCH_* knob (see peerbench's README) passes through.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PEERBENCH_DIR=${PEERBENCH_DIR:-$ROOT/../shared/peerbench}
if [[ ! -x $PEERBENCH_DIR/peerbench.sh ]]; then
  echo "nbd-vs-nbdkit.sh: no peerbench.sh in $PEERBENCH_DIR (set PEERBENCH_DIR)" >&2
  exit 2
fi
for tool in fio nbdkit nbdinfo python3 go; do
  command -v "$tool" >/dev/null || { echo "nbd-vs-nbdkit.sh: $tool not found (apt-get install -y fio nbdkit libnbd-bin)" >&2; exit 2; }
done

export PEERBENCH_OUT=${PEERBENCH_OUT:-/tmp/shale-nbd-bench}
export PEERBENCH_ROUNDS=${PEERBENCH_ROUNDS:-5}
export PEERBENCH_SIZE=${PEERBENCH_SIZE:-4G}
if ((PEERBENCH_ROUNDS < 3)); then
  echo "nbd-vs-nbdkit.sh: PEERBENCH_ROUNDS=$PEERBENCH_ROUNDS; medians need at least 3" >&2
  exit 2
fi
export PEERBENCH_PEERS="nbdkit-memory extra"
export PEERBENCH_JOBS=${PEERBENCH_JOBS:-"randread4k-qd32 randwrite4k-qd32 seqread1m-qd8 seqwrite1m-qd8 randwrite4k-qd1"}

mkdir -p "$PEERBENCH_OUT"
BIN=$PEERBENCH_OUT/bin
mkdir -p "$BIN"
(cd "$ROOT" && go build -o "$BIN/shale" ./cmd/shale)

# The server command peerbench runs in the peer's directory: a config with
# one RAM volume named like the export, on the peer's port. exec keeps the
# PID peerbench tracks.
cat >"$BIN/run-shale" <<'SCRIPT'
#!/usr/bin/env bash
# run-shale PORT EXPORT SIZE: serve one RAM volume on 127.0.0.1:PORT.
set -eu
bin=$(dirname "$0")
printf 'listen: 127.0.0.1:%s\nlog: {level: warn}\nvolumes:\n  - {name: "%s", size: %s, ram: true}\n' "$1" "$2" "$3" >shale.yaml
if [[ ${SHALE_BENCH_CPUPROFILE:-0} == 1 ]]; then
  mkdir -p "$bin/../profiles"
  export SHALE_CPUPROFILE=$bin/../profiles/shale-$(date +%H%M%S)-$$.pprof
fi
exec "$bin/shale" serve --config shale.yaml
SCRIPT
chmod +x "$BIN/run-shale"

export EXTRA_SERVER_NAME=shale
export EXTRA_SERVER_CMD="$BIN/run-shale @PORT@ @EXPORT@ @SIZE@"
unset EXTRA_SERVER_PREP EXTRA_SERVER_PIDFILE

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$PEERBENCH_DIR/peerbench.sh" >/dev/null
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
python3 "$ROOT/bench/nbd-summary.py" "$PEERBENCH_OUT/results.jsonl" "$PEERBENCH_OUT/meta.json"
