package sim

import (
	"math/bits"
	"time"
)

// Stats is a snapshot of a device's counters. Counters are lifetime values
// of the simulated drive: they carry over PowerLoss and Reopen, like wear
// on a real drive.
type Stats struct {
	// Host calls that reached the medium, and their bytes. Calls refused
	// (range, alignment, closed, failed, injected error) are not counted
	// here; injected errors are in FaultErrors.
	Reads, Writes, Syncs, Discards      int64
	ReadBytes, WriteBytes, DiscardBytes int64

	// FaultsFired counts fault rule firings; FaultErrors the calls they
	// failed.
	FaultsFired, FaultErrors int64

	// NAND activity. HostPages are pages programmed for host writes;
	// Programs all page programs (host + GC moves); GCMoves valid pages
	// relocated by GC in GCRuns victim reclaims; Erases blocks erased;
	// RMWPages sub-page host writes over mapped pages, which cost a read
	// of the old page.
	HostPages, Programs, GCMoves, GCRuns, Erases, RMWPages int64
	// MappedPages is the logical pages currently mapped to NAND (written
	// and not discarded).
	MappedPages int64
	// WriteAmplification is NAND bytes programmed / host bytes written
	// (0 before the first write). Sub-page writes count a whole page.
	WriteAmplification float64
	// PE is the distribution of erase counts over all blocks.
	PE struct {
		Min, Max int64
		Mean     float64
	}
	// Wear is PE.Mean / the profile's EnduranceCycles.
	Wear float64

	// Elapsed is device time since New (virtual or real). PowerCycles
	// counts power losses survived.
	Elapsed     time.Duration
	PowerCycles int64

	// ReadStalls are host reads that found a die busy with a program, GC
	// move or erase and waited for it; ReadStallsErase those that waited
	// for an erase. StallTime is their total wait.
	ReadStalls, ReadStallsErase int64
	StallTime                   time.Duration
	// WriteStalls are host writes that waited for room in the write
	// cache, for WriteStallTime in total.
	WriteStalls    int64
	WriteStallTime time.Duration

	// Busy* are NAND time summed over dies, by kind of work.
	BusyRead, BusyProgram, BusyGC, BusyErase time.Duration

	// Latency of host calls as modelled (in Real mode the caller's sleep
	// may overshoot it by scheduler granularity).
	Read, Write, Sync, Discard Latency

	// Destaged counts unsynced writes made durable early because the
	// unsynced data exceeded Options.MaxUnsyncedBytes.
	Destaged int64

	// UnreadableSectors are sectors a CorruptTorn power loss left
	// unreadable and not yet rewritten.
	UnreadableSectors int64

	// Geometry is the NAND layout in use.
	Geometry Geometry
}

// Latency summarizes a latency distribution. Percentiles come from a
// log-linear histogram and are exact to within 1/8 (12.5 %) of the value;
// Mean and Max are exact.
type Latency struct {
	Count                          int64
	Mean, P50, P90, P99, P999, Max time.Duration
}

// histogram is log-linear over nanoseconds: values below 8 have their own
// bucket; above, each power of two is split into 8 buckets.
type histogram struct {
	counts   [histBuckets]int64
	n, sum   int64
	maxValue int64
}

const histBuckets = 62*8 + 8

func histIndex(v int64) int {
	if v < 8 {
		if v < 0 {
			return 0
		}
		return int(v)
	}
	e := bits.Len64(uint64(v)) // ≥ 4
	mant := int(uint64(v)>>(e-4)) & 7
	return (e-3)*8 + mant
}

// histUpper is the largest value in bucket i.
func histUpper(i int) int64 {
	if i < 8 {
		return int64(i)
	}
	e := i/8 + 3
	mant := int64(i % 8)
	lo := (8 + mant) << (e - 4)
	return lo + (int64(1) << (e - 4)) - 1
}

func (h *histogram) add(v int64) {
	if v < 0 {
		v = 0
	}
	h.counts[histIndex(v)]++
	h.n++
	h.sum += v
	h.maxValue = max(h.maxValue, v)
}

func (h *histogram) quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	rank := int64(q*float64(h.n) + 0.5)
	rank = min(max(rank, 1), h.n)
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(histUpper(i), h.maxValue)
		}
	}
	return h.maxValue
}

func (h *histogram) summary() Latency {
	l := Latency{Count: h.n, Max: time.Duration(h.maxValue)}
	if h.n > 0 {
		l.Mean = time.Duration(h.sum / h.n)
		l.P50 = time.Duration(h.quantile(0.50))
		l.P90 = time.Duration(h.quantile(0.90))
		l.P99 = time.Duration(h.quantile(0.99))
		l.P999 = time.Duration(h.quantile(0.999))
	}
	return l
}
