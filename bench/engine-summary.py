#!/usr/bin/env python3
"""engine-summary.py RESULTS_JSONL META_JSON [OUT_DIR]: medians and ratios
of shale against the best of the other peers of a peerbench run
(bench/engine-vs-peers.sh), per job, and the data-reduction ratio from the
stats files run-shale saved in OUT_DIR. Standard library only."""
import glob
import json
import os
import statistics
import sys

# job, label, field, higher is better, display scale
METRICS = [
    ("randwrite4k-qd32", "4k randwrite QD32 (kIOPS)", "w_iops", True, 1e-3),
    ("randread4k-qd32", "4k randread QD32 (kIOPS)", "r_iops", True, 1e-3),
    ("randrw32k-qd16", "32k randrw 70/30 QD16 (kIOPS r+w)", "total_iops", True, 1e-3),
    ("seqwrite1m-qd8", "1M seq write QD8 (MiB/s)", "w_MiBps", True, 1),
    ("seqread1m-qd8", "1M seq read QD8 (MiB/s)", "r_MiBps", True, 1),
    ("randwrite4k-qd1", "4k randwrite QD1 p99 clat (us)", "w_clat_p99_us", False, 1),
    ("randwrite4k-qd1", "4k randwrite QD1 mean total lat (us)", "w_lat_mean_us", False, 1),
]
SHALE = "shale"


def main(path, meta_path, out_dir=None):
    recs = [json.loads(l) for l in open(path) if l.strip()]
    vals = {}
    for r in recs:
        if "job" not in r or r.get("error") or r.get("fio_error") or r.get("fio_rc", 0) != 0:
            continue
        vals.setdefault((r["peer"], r["job"]), []).append(r)
    peers = sorted({p for p, _ in vals})
    others = [p for p in peers if p != SHALE]
    m = json.load(open(meta_path))
    print(f"Run {m.get('date')}: {m.get('rounds')} rounds, size {m.get('size')}, "
          f"{m.get('runtime_s')} s + {m.get('ramp_s')} s ramp per job, numjobs {m.get('numjobs')}, "
          f"{m.get('host_cpus')} CPUs, fio extra {m.get('fio_extra')!r}; load average at start {m.get('loadavg_at_start')}.\n")
    print("| job | " + " | ".join(peers) + " | best peer | shale / best |")
    print("|---|" + "---:|" * len(peers) + "---|---:|")
    for job, label, field, higher, scale in METRICS:
        med = {}
        for p in peers:
            xs = [r[field] for r in vals.get((p, job), []) if r.get(field) is not None]
            if xs:
                med[p] = statistics.median(xs) * scale
        cells = [f"{med[p]:.1f}" if p in med else "-" for p in peers]
        cand = [p for p in others if p in med]
        if not cand or SHALE not in med:
            print(f"| {label} | " + " | ".join(cells) + " | - | - |")
            continue
        best = max(cand, key=lambda p: med[p]) if higher else min(cand, key=lambda p: med[p])
        ratio = med[SHALE] / med[best] if higher else med[best] / med[SHALE]
        print(f"| {label} | " + " | ".join(cells) + f" | {best} | **{ratio:.2f}** |")
    print("\nRatio: shale / best peer for throughput, best peer / shale for latency (above 1.00 = shale better).")
    cpu = {}
    for p in peers:
        xs = [r["srv_cpu_pct"] for (pp, _), rs in vals.items() if pp == p for r in rs if r.get("srv_cpu_pct") is not None]
        if xs:
            cpu[p] = statistics.median(xs)
    print("Server CPU over the timed jobs (median, % of one core): " + ", ".join(f"{p} {c:.0f} %" for p, c in cpu.items()) + ".")
    if out_dir:
        dr = []
        for f in sorted(glob.glob(os.path.join(out_dir, "stats-*.json"))):
            try:
                s = json.load(open(f))
                dr.append((s.get("logical_bytes"), s.get("physical_bytes"), s.get("data_reduction")))
            except (OSError, ValueError):
                pass
        for lb, pb, r in dr:
            print(f"shale stats at the end of a round: logical {lb} bytes, physical {pb} bytes, data reduction {r}")


if __name__ == "__main__":
    main(*sys.argv[1:])
