package nvlog

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Stats is a snapshot of a log's counters, taken by Log.Stats. Counters
// count since Open.
type Stats struct {
	Commits     uint64 // entries acknowledged durable
	Batches     uint64 // batches written and synced
	EntryBytes  uint64 // bytes of acknowledged entries (len(entry) summed)
	DeviceBytes uint64 // bytes written for batches: headers, entries, padding
	Syncs       uint64 // device syncs: batches, superblocks, Open
	Trims       uint64 // trims that moved the trim point

	MeanBatchEntries float64 // Commits / Batches
	MeanBatchBytes   float64 // DeviceBytes / Batches

	RegionBytes int64 // size of the circular log region
	BytesInUse  int64 // bytes between the trim point and the head, with padding and end-of-lap waste

	FullWaits      uint64 // times the writer had to wait for Trim because the log was full
	JoinWaits      uint64 // times a committer waited because the open batch was full
	WaitingForTrim bool   // the writer is waiting for Trim right now

	NextSeq    uint64 // seq the next entry will get
	DurableSeq uint64 // every entry with seq ≤ DurableSeq is durable
	TrimSeq    uint64 // entries with seq ≤ TrimSeq are trimmed

	// Commit latency, from the Commit or CommitAsync call to the
	// acknowledgement, over every acknowledged entry since Open. Accurate
	// to 1/8 of the value (log-linear histogram).
	LatencyP50, LatencyP99, LatencyP999, LatencyMax time.Duration

	// Failed is the error that stopped the log, or nil.
	Failed error
}

// counters are the log's atomic counters. The writer and the completion
// goroutine update them once per batch, never per entry on a committer's
// path.
type counters struct {
	commits, batches, entryBytes, deviceBytes, syncs, trims atomic.Uint64
	fullWaits, joinWaits                                    atomic.Uint64
	lat                                                     histogram
}

// histogram is a log-linear latency histogram in nanoseconds: values below
// 8 have their own bucket, then every power of two is split in 8.
// Recorded by one goroutine (the completion goroutine), read by any.
type histogram struct {
	buckets [histBuckets]atomic.Uint64
	max     atomic.Int64
}

const histBuckets = 62 * 8

func histIndex(v int64) int {
	if v < 8 {
		if v < 0 {
			return 0
		}
		return int(v)
	}
	e := bits.Len64(uint64(v)) - 1 // ≥ 3
	sub := int(v>>(e-3)) & 7
	return (e-2)*8 + sub
}

// histUpper returns the largest value that falls in bucket i.
func histUpper(i int) int64 {
	if i < 8 {
		return int64(i)
	}
	e := i/8 + 2
	sub := int64(i % 8)
	lo := (8 + sub) << (e - 3)
	return lo + (1 << (e - 3)) - 1
}

func (h *histogram) record(ns int64) {
	h.buckets[histIndex(ns)].Add(1)
	if ns > h.max.Load() {
		h.max.Store(ns) // single recorder: no lost update
	}
}

// quantiles fills out[i] with the value at quantile qs[i] (0..1), from
// one snapshot of the buckets. It allocates nothing, so Stats may be
// polled often.
func (h *histogram) quantiles(qs []float64, out []time.Duration) {
	var counts [histBuckets]uint64
	var total uint64
	for i := range counts {
		counts[i] = h.buckets[i].Load()
		total += counts[i]
	}
	for j, q := range qs {
		out[j] = 0
		if total == 0 {
			continue
		}
		rank := uint64(q*float64(total-1)) + 1
		var seen uint64
		for i, c := range counts {
			seen += c
			if seen >= rank {
				v := histUpper(i)
				if m := h.max.Load(); v > m {
					v = m
				}
				out[j] = time.Duration(v)
				break
			}
		}
	}
}

// epoch anchors mono: time.Since on a time with a monotonic reading
// neither allocates nor jumps with the wall clock.
var epoch = time.Now()

func mono() int64 { return int64(time.Since(epoch)) }
