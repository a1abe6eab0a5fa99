#!/usr/bin/env bash
# recovery-flat.sh: is recovery time flat in the data stored (issue 4)?
#
# Fills two arrays once, SMALL_GIB and LARGE_GIB (1 and 8 GiB) of 32 KiB
# cblocks on nine 2 GiB sparse file drives each (7+2, 8 MiB AUs, 1 MiB
# write units; core/store's BenchmarkRecover), then runs PAIRS pairs of
# recoveries, alternating which size goes first. Before every recovery it
# syncs and drops the page cache (echo 3 > /proc/sys/vm/drop_caches), and
# each recovery runs in a fresh process, as after a reboot. It prints, per
# size, the median (min-max) of each phase in ms and the bytes read, and the
# ratio of the medians large/small.
#
# Recovery reads with O_DIRECT; dropping the caches also drops the
# directory and inode caches and, with the sync, leaves no writeback of the
# fill running under the measurement.
#
# Usage: bench/recovery-flat.sh            (as root: drop_caches)
# Environment: PAIRS (5), SMALL_GIB (1), LARGE_GIB (8), BENCH_DIR where the
# arrays live (/var/tmp; about SMALL_GIB+LARGE_GIB GiB, plus parity), KEEP=1
# to keep the filled arrays for another run (in $BENCH_DIR/shale-recovery-flat),
# QUIET_LOAD: wait (up to 10 min) for the 1-minute load average to fall below
# this before each pair (unset: do not wait).
set -euo pipefail

PAIRS=${PAIRS:-5}
SMALL_GIB=${SMALL_GIB:-1}
LARGE_GIB=${LARGE_GIB:-8}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
KEEP=${KEEP:-}
QUIET_LOAD=${QUIET_LOAD:-}
export PATH=$PATH:/usr/local/go/bin

cd "$(dirname "$0")/.."
[[ $(id -u) -eq 0 ]] || { echo "recovery-flat.sh: needs root to drop the page cache" >&2; exit 1; }

arrays="$BENCH_DIR/shale-recovery-flat"
mkdir -p "$arrays"
work=$(mktemp -d)
cleanup() {
	rm -rf "$work"
	if [[ -z $KEEP ]]; then rm -rf "$arrays"; fi
}
trap cleanup EXIT

echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -r) $(nproc) CPUs, $(go version | cut -d' ' -f3)"
echo "# arrays in $arrays ($(df -T "$BENCH_DIR" | awk 'NR==2{print $2" on "$1}')), $PAIRS pairs of $SMALL_GIB and $LARGE_GIB GiB"
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)"

go test -c -o "$work/store.test" ./core/store

bench() { # gib -> the benchmark's result line
	"$work/store.test" -test.run '^$' -test.bench "^BenchmarkRecover\$" -test.benchtime 1x \
		-recover-gib="$1" -recover-dir="$arrays" | grep '^BenchmarkRecover'
}

drop() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
}

# The fills (each also runs one recovery, not counted).
for gib in "$SMALL_GIB" "$LARGE_GIB"; do
	t0=$(date +%s)
	bench "$gib" >/dev/null
	echo "# $gib GiB array ready ($(($(date +%s) - t0)) s, fill and first recovery)" >&2
done
t0=$(date +%s)
drop
echo "# sync and drop after the fills: $(($(date +%s) - t0)) s" >&2

results="$work/results.txt"
for ((p = 1; p <= PAIRS; p++)); do
	if [[ -n $QUIET_LOAD ]]; then
		for ((i = 0; i < 60; i++)); do
			awk -v q="$QUIET_LOAD" '{exit !($1 < q)}' /proc/loadavg && break
			sleep 10
		done
	fi
	sizes=("$SMALL_GIB" "$LARGE_GIB")
	((p % 2 == 0)) && sizes=("$LARGE_GIB" "$SMALL_GIB")
	for gib in "${sizes[@]}"; do
		drop
		load=$(cut -d' ' -f1 /proc/loadavg)
		line=$(bench "$gib")
		echo "$gib $load $line" >>"$results"
		echo "# pair $p: $gib GiB (load $load): $line" >&2
	done
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$results" "$SMALL_GIB" "$LARGE_GIB" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    gib, load = f[0], float(f[1])
    # BenchmarkRecover/1GiB-2  1  <ns> ns/op  <v> <unit> ...
    vals = {"total-ms": float(f[4]) / 1e6}
    rest = f[6:]
    for v, unit in zip(rest[0::2], rest[1::2]):
        vals[unit] = float(v)
    vals["load"] = load
    rows.setdefault(gib, []).append(vals)
small, large = sys.argv[2], sys.argv[3]
cols = ["total-ms", "bootread-ms", "scan-ms", "verify-ms", "sync-ms", "bootwrite-ms",
        "start+restore-ms", "read-phases-ms", "bytes-read/op", "frontier-segments", "load"]
def cell(vs):
    m = statistics.median(vs)
    fmt = "{:.0f}" if max(vs) >= 100 else "{:.1f}"
    return f"{fmt.format(m)} ({fmt.format(min(vs))}-{fmt.format(max(vs))})", m
print()
print("Median (min-max) over the pairs; total-ms is Open + EndRestore, one recovery per process, page cache dropped before each.")
print()
print(f"| per recovery | {small} GiB | {large} GiB | {large}/{small} |")
print("|---|---:|---:|---:|")
for c in cols:
    s, ms = cell([r[c] for r in rows[small]])
    l, ml = cell([r[c] for r in rows[large]])
    ratio = f"{ml / ms:.2f}" if ms else ""
    print(f"| {c} | {s} | {l} | {ratio} |")
EOF
