#!/usr/bin/env bash
# device-vs-fio.sh: the file (O_DIRECT) and nvme backends against fio on the
# same storage, in one run.
#
# For each target (a filled file, and a loop device with 4096-byte sectors
# and direct I/O over a filled backing file), each workload of
# backendtest.Workloads (4 KiB random and 1 MiB sequential, read and write,
# queue depth 1 and 32) runs with fio (psync engine, direct=1, the same
# block size, numjobs = queue depth, the same layout) and with the Go
# benchmark (BenchmarkFileDirect / BenchmarkNvmeLoop), alternating which
# goes first, REPEATS times. It prints the median MB/s of each and the
# ratio Go/fio as a Markdown table.
#
# The Go benchmark runs with the GOMAXPROCS that cmd/shale runs with
# (backend.SetIOProcs, called by the test binaries' TestMain: at least
# backend.MinIOProcs). Queue-depth-32 workloads also run it at GOMAXPROCS =
# the CPU count, the runtime's default, to show what that floor buys: with
# few Ps, a goroutine blocked in pread holds its P until the runtime's
# sysmon takes it back, which limits how many I/Os Go keeps in flight.
#
# Usage: bench/device-vs-fio.sh            (as root for the loop device)
# Environment: REPEATS (3), RUNTIME seconds per run (3), SIZE_MIB per
# target (1024), BENCH_DIR where the targets live (/var/tmp; must support
# O_DIRECT, so not tmpfs), ONLY=file|loop to run one target, WORKLOADS=
# space-separated workload names to run only those (e.g.
# WORKLOADS=randwrite-4K-qd32).
set -euo pipefail

REPEATS=${REPEATS:-3}
RUNTIME=${RUNTIME:-3}
SIZE_MIB=${SIZE_MIB:-1024}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
ONLY=${ONLY:-}
WORKLOADS=${WORKLOADS:-}
export PATH=$PATH:/usr/local/go/bin

cd "$(dirname "$0")/.."
command -v fio >/dev/null || { echo "fio not installed" >&2; exit 1; }

work=$(mktemp -d "$BENCH_DIR/shale-devbench.XXXXXX")
loopdev=""
cleanup() {
	if [[ -n $loopdev ]]; then losetup --detach "$loopdev" || true; fi
	rm -rf "$work"
}
trap cleanup EXIT

size=$((SIZE_MIB << 20))
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -r) $(nproc) CPUs, $(go version | cut -d' ' -f3)"
echo "# targets of $SIZE_MIB MiB in $BENCH_DIR ($(df -T "$BENCH_DIR" | awk 'NR==2{print $2" on "$1}')), $REPEATS repeats of ${RUNTIME}s"
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)"

go test -c -o "$work/file.test" ./backend/file
go test -c -o "$work/nvme.test" ./backend/nvme

fill() { # fill the target sequentially so reads hit written blocks
	fio --name=fill --filename="$1" --size="$size" --rw=write --bs=1m --direct=1 \
		--ioengine=psync --refill_buffers --output=/dev/null
}

targets=()
if [[ $ONLY != loop ]]; then
	truncate -s "$size" "$work/drive.img"
	fill "$work/drive.img"
	targets+=(file)
fi
if [[ $ONLY != file ]]; then
	if [[ $(id -u) -eq 0 ]] && command -v losetup >/dev/null; then
		truncate -s "$size" "$work/loop.img"
		loopdev=$(losetup --find --show --sector-size 4096 --direct-io=on "$work/loop.img")
		fill "$loopdev"
		targets+=(loop)
	else
		echo "# not root or no losetup: loop device target skipped" >&2
	fi
fi

# name rw bs qd (the rows of backendtest.Workloads)
workloads=(
	"randread-4K-qd1 randread 4k 1"
	"randread-4K-qd32 randread 4k 32"
	"randwrite-4K-qd1 randwrite 4k 1"
	"randwrite-4K-qd32 randwrite 4k 32"
	"seqread-1M-qd1 read 1m 1"
	"seqread-1M-qd32 read 1m 32"
	"seqwrite-1M-qd1 write 1m 1"
	"seqwrite-1M-qd32 write 1m 32"
)

run_fio() { # target-path rw bs qd -> MB/s
	local path=$1 rw=$2 bs=$3 qd=$4 layout
	if [[ $rw == rand* ]]; then
		layout=(--size="$size" --norandommap --randrepeat=0)
	else
		# each job walks its own share, as the Go benchmark's goroutines do
		layout=(--size=$((size / qd)) --offset_increment=$((size / qd)))
	fi
	fio --name=bench --filename="$path" --rw="$rw" --bs="$bs" --numjobs="$qd" --iodepth=1 \
		--ioengine=psync --direct=1 "${layout[@]}" --time_based --runtime="$RUNTIME" \
		--group_reporting --output-format=json |
		python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; print("%.1f" % ((j["read"]["bw_bytes"]+j["write"]["bw_bytes"])/1e6))'
}

run_go() { # target name cpus ("" = the test binary's own, as cmd/shale) -> MB/s GOMAXPROCS
	local target=$1 name=$2 cpus=$3 out cpuflag=()
	[[ -n $cpus ]] && cpuflag=(-test.cpu="$cpus")
	if [[ $target == file ]]; then
		out=$("$work/file.test" -test.run '^$' -test.bench "^BenchmarkFileDirect\$/^$name\$" \
			-test.benchtime="${RUNTIME}s" "${cpuflag[@]}" -bench.path="$work/drive.img")
	else
		out=$("$work/nvme.test" -test.run '^$' -test.bench "^BenchmarkNvmeLoop\$/^$name\$" \
			-test.benchtime="${RUNTIME}s" "${cpuflag[@]}" -bench.dev="$loopdev")
	fi
	# the name's -N suffix is the GOMAXPROCS the benchmark ran with
	awk '/^Benchmark/ { n = split($1, p, "-"); for (i = 1; i <= NF; i++) if ($i == "MB/s") print $(i-1), p[n] }' <<<"$out"
}

path_of() { [[ $1 == file ]] && echo "$work/drive.img" || echo "$loopdev"; }

results="$work/results.tsv" # target workload tool value
ncpu=$(nproc)
procs="" # GOMAXPROCS of the test binaries left to themselves, from their first run
for ((r = 1; r <= REPEATS; r++)); do
	for target in "${targets[@]}"; do
		for w in "${workloads[@]}"; do
			read -r name rw bs qd <<<"$w"
			if [[ -n $WORKLOADS && " $WORKLOADS " != *" $name "* ]]; then continue; fi
			tools=(fio go)
			[[ $qd -gt 1 && $procs != "$ncpu" ]] && tools+=(go-ncpu)
			k=$(((r - 1) % ${#tools[@]})) # rotate which goes first
			tools=("${tools[@]:k}" "${tools[@]:0:k}")
			for tool in "${tools[@]}"; do
				case $tool in
				fio) v=$(run_fio "$(path_of "$target")" "$rw" "$bs" "$qd") ;;
				go) read -r v procs < <(run_go "$target" "$name" "") ;;
				go-ncpu) read -r v _ < <(run_go "$target" "$name" "$ncpu") ;;
				esac
				printf '%s\t%s\t%s\t%s\n' "$target" "$name" "$tool" "$v" >>"$results"
				echo "# run $r $target $name $tool: $v MB/s (load $(cut -d" " -f1 /proc/loadavg))" >&2
			done
		done
	done
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg) (includes this script's own jobs blocked in I/O)"

python3 - "$results" "$ncpu" "$procs" <<'EOF'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
ncpu, procs = sys.argv[2], sys.argv[3]
runs = {}
for target, name, tool, v in rows:
    runs.setdefault((target, name, tool), []).append(float(v))
order = []
for target, name, _, _ in rows:
    if (target, name) not in order:
        order.append((target, name))
def cell(key):
    v = runs[key]
    return statistics.median(v), f"{statistics.median(v):.0f} ({min(v):.0f}-{max(v):.0f})"
print()
print("MB/s: median (min-max) of the repeats; ratios are of medians.")
print()
print(f"| target | workload | fio | Go, GOMAXPROCS={procs} (as shale) | Go/fio | Go, GOMAXPROCS={ncpu} (= CPUs) | Go/fio |")
print("|---|---|---:|---:|---:|---:|---:|")
for target, name in order:
    f, fs = cell((target, name, "fio"))
    g, gs = cell((target, name, "go"))
    cells = [target, name, fs, gs, f"{g / f:.2f}"]
    if (target, name, "go-ncpu") in runs:
        gn, gns = cell((target, name, "go-ncpu"))
        cells += [gns, f"{gn / f:.2f}"]
    else:
        cells += ["", ""]
    print("| " + " | ".join(cells) + " |")
EOF
