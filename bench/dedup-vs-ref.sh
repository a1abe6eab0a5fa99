#!/usr/bin/env bash
# dedup-vs-ref.sh - shale's data reduction on the real corpus of issue 7
# (bench/corpus/build.sh) beside two references, and shale's write
# throughput with dedup on and off. For each case:
#
#   base          base.img alone
#   updated-copy  base.img then updated.img, both written to the same array
#   pgdata        pgdata.img alone
#
# it measures
#   shale     a fresh `shale serve` with the default drives (nine sparse
#             8 GiB files, 7+2, NVRAM file) in a new data_dir, one engine
#             volume per image, each image written with nbdcopy --flush;
#             then `shale stats --json`: logical, physical, data_reduction
#             of the array; write time of all the case's images
#   4K-ref    go run ./bench/dedupref: 4 KiB-aligned dedup with per-4 KiB
#             zstd, 512 B rounding, zero blocks free (how VDO and ZFS
#             store; its package comment states the model)
#   qcow2     qemu-img convert -O qcow2 -c -o compression_type=zstd of each
#             image, physical = allocated bytes of the qcow2 files, logical
#             = non-zero 4 KiB blocks of the inputs (4K-ref's logical).
#             qcow2 has no dedup, so the updated-copy figure is the sum of
#             two independent images. (convert -B BACKING does not help: it
#             writes every data cluster, it does not compare with the
#             backing file; measured, it gave the same bytes.)
#
# and prints a table; the raw figures go to $OUT/results.json. Ratios of
# ratios: shale/4K = shale data_reduction / 4K-ref data_reduction (the
# issue's target: >= 1.15 on updated-copy); 4K-phys/shale-phys compares
# stored bytes directly (shale's logical counts non-zero 512 B sectors,
# 4K-ref's non-zero 4 KiB blocks, so the first can differ slightly).
# Throughput with dedup off needs the config key `dedup: {enabled: false}`;
# when shale does not accept it, "n/a".
#
# Usage: bench/dedup-vs-ref.sh              (root not needed; corpus built)
#
# Environment (all optional):
#   SHALE_CORPUS   corpus directory (default /var/tmp/shale-corpus)
#   OUT            results and scratch (default /var/tmp/shale-dedup-bench;
#                  each shale run's data_dir is removed after its stats)
#   REPEATS        shale runs per case and mode (default 3; the medians of
#                  write time are reported, reduction is the same each run)
#   CASES          subset of "base updated-copy pgdata"
#   PORT           NBD port (default 10931)
#   INDEX_BYTES    dedup.index_bytes of the dedup-on runs (default: shale's)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CORPUS=${SHALE_CORPUS:-/var/tmp/shale-corpus}
OUT=${OUT:-/var/tmp/shale-dedup-bench}
REPEATS=${REPEATS:-3}
CASES=${CASES:-base updated-copy pgdata}
PORT=${PORT:-10931}
INDEX_BYTES=${INDEX_BYTES:-}
PY=/usr/bin/python3

for t in nbdcopy qemu-img go $PY; do
  command -v "$t" >/dev/null || { echo "dedup-vs-ref.sh: $t not found (apt-get install -y libnbd-bin qemu-utils)" >&2; exit 2; }
done
mkdir -p "$OUT/bin" "$OUT/qcow2" "$OUT/raw"
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

(cd "$ROOT" && go build -o "$OUT/bin/shale" ./cmd/shale && go build -o "$OUT/bin/dedupref" ./bench/dedupref)

case_files() {
  case $1 in
    base) echo base ;;
    updated-copy) echo base updated ;;
    pgdata) echo pgdata ;;
    *) echo "dedup-vs-ref.sh: unknown case $1" >&2; exit 2 ;;
  esac
}

SHALE=$OUT/bin/shale
for c in $CASES; do
  for f in $(case_files "$c"); do
    [[ -f $CORPUS/$f.img ]] || { echo "dedup-vs-ref.sh: no $CORPUS/$f.img; run bench/corpus/build.sh (as root)" >&2; exit 2; }
  done
done

# Does this shale accept `dedup: {enabled: false}`? Configuration is
# loaded with UnmarshalExact, so an unknown key fails at start; a RAM-only
# configuration starts no engine and writes nothing.
probe=$(mktemp -d)
printf 'listen: 127.0.0.1:%s\ndata_dir: %s\nlog: {level: warn}\ndedup: {enabled: false}\nvolumes:\n  - {name: p, size: 1M, ram: true}\n' "$((PORT + 1))" "$probe" >"$probe/c.yaml"
"$SHALE" serve --config "$probe/c.yaml" >"$probe/log" 2>&1 &
ppid=$!
sleep 2
if kill -0 "$ppid" 2>/dev/null; then
  MODES="on off"
  kill "$ppid"; wait "$ppid" || true
else
  wait "$ppid" || true
  MODES="on"
  log "shale does not accept dedup: {enabled: false} ($(head -c 200 "$probe/log" | tr '\n' ' ')): dedup-off throughput n/a"
fi
rm -rf "$probe"

SERVER_PID=
cleanup() { [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null; true; }
trap cleanup EXIT

# shale_run CASE MODE REP: one fresh array, the case's images written, stats.
shale_run() {
  local c=$1 mode=$2 rep=$3 dir=$OUT/data-$1-$2-$3 f
  rm -rf "$dir"; mkdir -p "$dir"
  {
    printf 'listen: 127.0.0.1:%s\ndata_dir: %s\nlog: {level: warn}\n' "$PORT" "$dir"
    [[ $mode == off ]] && printf 'dedup: {enabled: false}\n'
    [[ $mode == on && -n $INDEX_BYTES ]] && printf 'dedup: {index_bytes: %s}\n' "$INDEX_BYTES"
    printf 'volumes:\n'
    for f in $(case_files "$c"); do printf '  - {name: %s, size: %s}\n' "$f" "$(stat -c %s "$CORPUS/$f.img")"; done
  } >"$dir.yaml"
  "$SHALE" serve --config "$dir.yaml" >"$dir.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do nbdinfo --size "nbd://127.0.0.1:$PORT/base" >/dev/null 2>&1 || nbdinfo --size "nbd://127.0.0.1:$PORT/pgdata" >/dev/null 2>&1 && break; sleep 0.2; done
  local t0 t1
  t0=$(date +%s.%N)
  for f in $(case_files "$c"); do nbdcopy --flush "$CORPUS/$f.img" "nbd://127.0.0.1:$PORT/$f"; done
  t1=$(date +%s.%N)
  local ok=
  for _ in $(seq 30); do
    if "$SHALE" stats --json --config "$dir.yaml" >"$OUT/raw/stats-$c-$mode-$rep.json" 2>/dev/null &&
      ! grep -q '"partial": true' "$OUT/raw/stats-$c-$mode-$rep.json"; then ok=1; break; fi
    sleep 1
  done
  [[ -n $ok ]] || { echo "dedup-vs-ref.sh: no complete stats for $c/$mode/$rep (see $dir.log)" >&2; exit 1; }
  kill "$SERVER_PID"; wait "$SERVER_PID" || true; SERVER_PID=
  echo "$t0 $t1" | awk '{printf "%.3f\n", $2-$1}' >"$OUT/raw/time-$c-$mode-$rep"
  rm -rf "$dir"
}

for c in $CASES; do
  files=(); for f in $(case_files "$c"); do files+=("$CORPUS/$f.img"); done
  log "$c: dedupref ${files[*]}"
  "$OUT/bin/dedupref" --json "${files[@]}" >"$OUT/raw/ref-$c.json"
  for f in $(case_files "$c"); do
    if [[ ! -f $OUT/qcow2/$f.qcow2 ]]; then
      log "$c: qemu-img convert $f"
      qemu-img convert -O qcow2 -c -o compression_type=zstd "$CORPUS/$f.img" "$OUT/qcow2/$f.qcow2.tmp"
      mv "$OUT/qcow2/$f.qcow2.tmp" "$OUT/qcow2/$f.qcow2"
    fi
  done
  for rep in $(seq "$REPEATS"); do
    # Alternate the order of modes between repeats.
    order=$MODES; ((rep % 2 == 0)) && order=$(echo "$MODES" | awk '{for (i=NF;i>0;i--) printf "%s ", $i}')
    for mode in $order; do
      log "$c: shale dedup $mode, run $rep/$REPEATS"
      shale_run "$c" "$mode" "$rep"
      log "$c: shale dedup $mode, run $rep: $(cat "$OUT/raw/time-$c-$mode-$rep") s"
    done
  done
done

"$PY" - "$OUT" "$CORPUS" "$REPEATS" "$MODES" $CASES <<'PYEOF'
import json, os, statistics, sys, datetime, platform
out, corpus, repeats, modes, cases = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split(), sys.argv[5:]
files = {"base": ["base"], "updated-copy": ["base", "updated"], "pgdata": ["pgdata"]}
def alloc(p):
    st = os.stat(p); return st.st_blocks * 512
res = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
       "host": platform.node(), "nproc": os.cpu_count(), "load": open("/proc/loadavg").read().split()[:3],
       "repeats": repeats, "dedup_modes": modes, "cases": {}}
rows = []
for c in cases:
    ref = json.load(open(f"{out}/raw/ref-{c}.json"))
    img_bytes = sum(os.path.getsize(f"{corpus}/{f}.img") for f in files[c])
    q_phys = sum(alloc(f"{out}/qcow2/{f}.qcow2") for f in files[c])
    r = {"image_bytes": img_bytes, "ref": ref,
         "qcow2": {"physical_bytes": q_phys, "data_reduction": ref["logical_bytes"] / q_phys}}
    r["shale"] = {}
    for m in modes:
        runs = []
        for k in range(1, repeats + 1):
            st = json.load(open(f"{out}/raw/stats-{c}-{m}-{k}.json"))
            t = float(open(f"{out}/raw/time-{c}-{m}-{k}").read())
            runs.append({"seconds": t, "logical_bytes": st["logical_bytes"], "physical_bytes": st["physical_bytes"],
                         "data_reduction": st["data_reduction"]})
        med = statistics.median(x["seconds"] for x in runs)
        r["shale"][m] = {"runs": runs, "median_seconds": med, "median_MiBps": img_bytes / med / 2**20,
                         "logical_bytes": runs[0]["logical_bytes"], "physical_bytes": runs[0]["physical_bytes"],
                         "data_reduction": runs[0]["data_reduction"]}
    on = r["shale"]["on"]
    r["shale_vs_ref"] = on["data_reduction"] / ref["data_reduction"]
    r["ref_phys_vs_shale_phys"] = ref["physical_bytes"] / on["physical_bytes"]
    r["throughput_on_vs_off"] = (r["shale"]["off"]["median_seconds"] / on["median_seconds"]) if "off" in r["shale"] else None
    res["cases"][c] = r
    rows.append(r | {"case": c})
json.dump(res, open(f"{out}/results.json", "w"), indent=2)
hdr = ["case", "logical GiB", "shale GiB", "4K-ref GiB", "qcow2 GiB", "shale DRR", "4K-ref DRR", "qcow2 DRR",
       "shale/4K", "4K-phys/shale-phys", "write MiB/s on", "off", "on/off"]
print("| " + " | ".join(hdr) + " |")
print("|" + "---|" * len(hdr))
G = 2**30
for r in rows:
    on = r["shale"]["on"]; off = r["shale"].get("off")
    q = r["qcow2"]; qs = f'{q["data_reduction"]:.2f}'
    qg = f'{q["physical_bytes"]/G:.3f}'
    print("| " + " | ".join([
        r["case"], f'{r["ref"]["logical_bytes"]/G:.3f}', f'{on["physical_bytes"]/G:.3f}',
        f'{r["ref"]["physical_bytes"]/G:.3f}', qg,
        f'{on["data_reduction"]:.2f}', f'{r["ref"]["data_reduction"]:.2f}', qs,
        f'{r["shale_vs_ref"]:.3f}', f'{r["ref_phys_vs_shale_phys"]:.3f}',
        f'{on["median_MiBps"]:.0f}', f'{off["median_MiBps"]:.0f}' if off else "n/a",
        f'{r["throughput_on_vs_off"]:.2f}' if off else "n/a"]) + " |")
print(f"\nraw figures: {out}/results.json (write MiB/s: image bytes / median nbdcopy time of {repeats} runs)")
PYEOF
