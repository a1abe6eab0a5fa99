#!/usr/bin/env python3
"""nbd-summary.py RESULTS_JSONL [META_JSON]: medians and ratios of shale
against nbdkit-memory from a peerbench run (bench/nbd-vs-nbdkit.sh).

For each job: the median over rounds of each peer, the ratio of the
medians (shale / nbdkit; for latency nbdkit / shale, so above 1.0 is
always better for shale), and the per-round ratios, which pair runs made
minutes apart. Standard library only."""
import json
import statistics
import sys

# job, label, field, higher is better, display scale
METRICS = [
    ("randread4k-qd32", "4k randread QD32 (kIOPS)", "r_iops", True, 1e-3),
    ("randwrite4k-qd32", "4k randwrite QD32 (kIOPS)", "w_iops", True, 1e-3),
    ("seqread1m-qd8", "1M seq read QD8 (MiB/s)", "r_MiBps", True, 1),
    ("seqwrite1m-qd8", "1M seq write QD8 (MiB/s)", "w_MiBps", True, 1),
    ("randwrite4k-qd1", "4k randwrite QD1 p99 clat (us)", "w_clat_p99_us", False, 1),
    ("randwrite4k-qd1", "4k randwrite QD1 mean total lat (us)", "w_lat_mean_us", False, 1),
]
BASE, PEER = "nbdkit-memory", "shale"


def main(path, meta_path=None):
    recs = [json.loads(l) for l in open(path) if l.strip()]
    by = {}
    for r in recs:
        if r.get("error") or r.get("fio_error") or r.get("fio_rc", 0) != 0:
            continue
        by[(r["round"], r["peer"], r["job"])] = r
    rounds = sorted({r["round"] for r in recs})
    out = []
    w = out.append
    if meta_path:
        m = json.load(open(meta_path))
        w(f"Run {m.get('date')}: {m.get('rounds')} rounds, size {m.get('size')}, "
          f"{m.get('runtime_s')} s + {m.get('ramp_s')} s ramp per job, numjobs {m.get('numjobs')}, "
          f"{m.get('host_cpus')} CPUs, kernel {m.get('kernel')}, {m.get('fio')}, {m.get('nbdkit')}; "
          f"load average at start {m.get('loadavg_at_start')}.\n")
    w(f"| job | {BASE} median | {PEER} median | ratio | per-round ratios |")
    w("|---|---:|---:|---:|---|")
    ok = True
    for job, label, field, higher, scale in METRICS:
        vals = {p: [by[(r, p, job)][field] for r in rounds
                    if (r, p, job) in by and by[(r, p, job)].get(field) is not None]
                for p in (BASE, PEER)}
        if not vals[BASE] or not vals[PEER]:
            w(f"| {label} | n/a | n/a | n/a | |")
            ok = False
            continue
        mb, mp = statistics.median(vals[BASE]), statistics.median(vals[PEER])
        ratio = mp / mb if higher else mb / mp
        per = []
        for r in rounds:
            a, b = by.get((r, BASE, job), {}).get(field), by.get((r, PEER, job), {}).get(field)
            if a and b:
                per.append(b / a if higher else a / b)
        fmt = "{:.1f}" if scale != 1 or mb < 1000 else "{:.0f}"
        w(f"| {label} | {fmt.format(mb * scale)} | {fmt.format(mp * scale)} | "
          f"**{ratio:.2f}** | {' '.join(f'{x:.2f}' for x in per)} |")
        ok = ok and ratio >= 1.0
    loads = [r["loadavg1"] for r in recs if r.get("loadavg1") is not None]
    other = [r["other_cpu_pct"] for r in recs if r.get("other_cpu_pct") is not None and r.get("timed") == 1]
    w("")
    w("Ratio: shale / nbdkit for throughput, nbdkit / shale for latency (above 1.00 = shale better).")
    if loads:
        line = (f"1-minute load average during the jobs: median {statistics.median(loads):.1f}, "
                f"min {min(loads):.1f}, max {max(loads):.1f}.")
        if other:
            line += (f" CPU used by other tenants while the jobs ran (peerbench 'other CPU %', "
                     f"of 200 %): median {statistics.median(other):.0f} %.")
        w(line)
    srv = {p: [r["srv_cpu_pct"] for r in recs if r.get("peer") == p and r.get("timed") == 1
               and r.get("srv_cpu_pct") is not None] for p in (BASE, PEER)}
    if srv[BASE] and srv[PEER]:
        w(f"Server CPU during timed jobs (median, % of one core): {BASE} "
          f"{statistics.median(srv[BASE]):.0f} %, {PEER} {statistics.median(srv[PEER]):.0f} %.")
    w(f"Target (every ratio at least 1.00): {'met' if ok else 'NOT met'}.")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
