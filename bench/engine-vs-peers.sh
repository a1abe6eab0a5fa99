#!/usr/bin/env bash
# engine-vs-peers.sh - shale engine volumes against the file-backed NBD
# servers people use, in one peerbench run: nbdkit file, nbd-server and
# qemu-nbd (raw) on sparse files on the same disk, and shale with 9 file
# drives in 7+2 and an NVRAM file, every write acknowledged only when
# durable (the peers write into the page cache and are never asked to
# flush: fio's nbd engine sends no FLUSH or FUA). Rounds alternate the
# order. Prints, per job, each peer's median, the best peer and the ratio
# shale / best (latency: best / shale; above 1.00 = shale better), and the
# data-reduction ratio shale reports for what fio wrote.
#
# Usage: bench/engine-vs-peers.sh          (from anywhere in the repository)
#
# Environment (all optional):
#   PEERBENCH_DIR      peerbench checkout (default: ../shared/peerbench beside
#                      the repository, else /work/shared/peerbench)
#   PEERBENCH_OUT      output directory (default /tmp/shale-engine-bench)
#   PEERBENCH_ROUNDS   rounds (default 3)
#   PEERBENCH_SIZE     export size (default 4G)
#   PEERBENCH_JOBS / PEERBENCH_PEERS  narrow the run (default: all six jobs, all peers)
#   SHALE_DRIVE_SIZE   size of each of the 9 drive files (default 1G)
#   SHALE_DRIVE_OPTIONS  extra keys for each drive, e.g. "direct: auto"
#                      (default none: the drives' defaults)
#   SHALE_BENCH_CPUPROFILE=1  a Go CPU profile per shale run in
#                      $PEERBENCH_OUT/profiles/ (go tool pprof -top FILE)
#   Any other PEERBENCH_* knob (see peerbench's README) passes through,
#   e.g. PEERBENCH_FIO_EXTRA="--buffer_compress_percentage=50 --refill_buffers"
#   for compressible data (applied to every peer alike).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z ${PEERBENCH_DIR:-} ]]; then
  PEERBENCH_DIR=$ROOT/../shared/peerbench
  [[ -x $PEERBENCH_DIR/peerbench.sh ]] || PEERBENCH_DIR=/work/shared/peerbench
fi
if [[ ! -x $PEERBENCH_DIR/peerbench.sh ]]; then
  echo "engine-vs-peers.sh: no peerbench.sh in $PEERBENCH_DIR (set PEERBENCH_DIR)" >&2
  exit 2
fi
for tool in fio nbdkit nbd-server qemu-nbd nbdinfo python3 go; do
  command -v "$tool" >/dev/null || { echo "engine-vs-peers.sh: $tool not found (apt-get install -y fio nbdkit nbd-server qemu-utils libnbd-bin)" >&2; exit 2; }
done

export PEERBENCH_OUT=${PEERBENCH_OUT:-/tmp/shale-engine-bench}
export PEERBENCH_ROUNDS=${PEERBENCH_ROUNDS:-3}
export PEERBENCH_SIZE=${PEERBENCH_SIZE:-4G}
export SHALE_DRIVE_SIZE=${SHALE_DRIVE_SIZE:-1G}
export SHALE_DRIVE_OPTIONS=${SHALE_DRIVE_OPTIONS:-}
export PEERBENCH_PEERS=${PEERBENCH_PEERS:-"nbdkit-file nbd-server qemu-nbd-raw extra"}
export PEERBENCH_JOBS=${PEERBENCH_JOBS:-"randwrite4k-qd32 randread4k-qd32 randrw32k-qd16 seqwrite1m-qd8 seqread1m-qd8 randwrite4k-qd1"}

mkdir -p "$PEERBENCH_OUT"
BIN=$PEERBENCH_OUT/bin
mkdir -p "$BIN"
(cd "$ROOT" && go build -o "$BIN/shale" ./cmd/shale)

# The server command peerbench runs in the peer's fresh directory: 9 file
# drives (7+2), an NVRAM file, one volume named like the export; its stats
# are saved for the summary while it runs.
cat >"$BIN/run-shale" <<'SCRIPT'
#!/usr/bin/env bash
# run-shale PORT EXPORT SIZE: serve one engine volume on 127.0.0.1:PORT.
set -eu
bin=$(dirname "$0")
dir=$(pwd)
{
  printf 'listen: 127.0.0.1:%s\ndata_dir: %s/data\nlog: {level: warn}\n' "$1" "$dir"
  printf 'geometry: {data: 7, parity: 2}\ndrives:\n'
  for i in 0 1 2 3 4 5 6 7 8; do
    printf '  - {backend: file, path: %s/drive-%d.img, size: %s%s}\n' "$dir" "$i" "$SHALE_DRIVE_SIZE" "${SHALE_DRIVE_OPTIONS:+, $SHALE_DRIVE_OPTIONS}"
  done
  printf 'nvram: {backend: file, path: %s/nvram.img, size: 256M, direct: auto, preallocate: true, dsync: true}\n' "$dir"
  printf 'volumes:\n  - {name: "%s", size: %s}\n' "$2" "$3"
} >shale.yaml
if [[ ${SHALE_BENCH_CPUPROFILE:-0} == 1 ]]; then
  mkdir -p "$bin/../profiles"
  export SHALE_CPUPROFILE=$bin/../profiles/shale-$(date +%H%M%S)-$$.pprof
fi
"$bin/shale" serve --config shale.yaml &
pid=$!
# peerbench signals the whole process group at the end, so the stats are
# saved every few seconds while the server runs (the last complete, not
# partial, copy is kept) rather than in a signal handler.
out="$bin/../stats-$(date +%H%M%S)-$$.json"
(
  while kill -0 "$pid" 2>/dev/null; do
    sleep 3
    if "$bin/shale" stats --json --config shale.yaml >"$out.tmp" 2>/dev/null && ! grep -q '"partial": true' "$out.tmp"; then
      mv "$out.tmp" "$out"
    fi
  done
  rm -f "$out.tmp"
) &
trap 'kill -TERM "$pid" 2>/dev/null || true' TERM INT
wait "$pid" || true
wait "$pid" 2>/dev/null || true
SCRIPT
chmod +x "$BIN/run-shale"

export EXTRA_SERVER_NAME=shale
export EXTRA_SERVER_CMD="$BIN/run-shale @PORT@ @EXPORT@ @SIZE@"
unset EXTRA_SERVER_PREP EXTRA_SERVER_PIDFILE

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$PEERBENCH_DIR/peerbench.sh" >/dev/null
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
python3 "$ROOT/bench/engine-summary.py" "$PEERBENCH_OUT/results.jsonl" "$PEERBENCH_OUT/meta.json" "$PEERBENCH_OUT"
