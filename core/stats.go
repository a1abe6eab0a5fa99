package core

import (
	"context"
	"sync/atomic"

	"github.com/shalestore/shale/core/pyramid"
	"github.com/shalestore/shale/core/segment"
)

// counters are the engine's metrics, plain atomics.
type counters struct {
	writes, writeBytes, writeErrors       atomic.Int64
	reads, readBytes, readErrors          atomic.Int64
	cblocks, cblockLogical, cblockStored  atomic.Int64
	zeroSectors, zeroWrites, trimOps      atomic.Int64
	cacheHits, cacheMisses, degradedReads atomic.Int64
	segiosFlushed, nvramTrims, noSpace    atomic.Int64
	forcedFlushes, maintErrors            atomic.Int64
	// Inline dedup: runs and sectors stored as references to existing
	// cblocks; index hits (before confirmation); candidates unreadable.
	dedupRuns, dedupSectors, dedupLookupHits, dedupUnreadable atomic.Int64
	// Dedup table tuples written, and dropped (queue full, write failed).
	dedupTableTuples, dedupTableDropped atomic.Int64
	dedupLoaded                         atomic.Int64 // index entries loaded from the table at open
	partReads                           atomic.Int64 // reads of part of a raw cblock
	batchReads                          atomic.Int64 // segment reads of several adjacent cblocks
}

// Stats returns the array's figures.
//
// Space figures are computed by walking the block map of every medium the
// catalog keeps (O(block-map runs) time, O(distinct cblocks) memory), so
// call it now and then, not per I/O. LogicalBytes counts sectors mapped to
// data (not zeros, not holes) in each medium's own block map; a volume's
// figures are those of its current medium (what was written since its
// last snapshot, or since it was created or cloned), a snapshot's those
// of its frozen medium. PhysicalBytes counts each referenced cblock's
// stored size once (per volume, and once for the whole array), without
// parity; a cblock only partly overwritten still counts whole, which is
// what it occupies until GC. FreeBytes and CapacityBytes count whole
// segments the allocator can still plan, in data bytes (k × AU size per
// segment). Counters are since Open.
func (a *Array) Stats() Stats {
	st := Stats{Volumes: map[string]SpaceStats{}, Counters: map[string]int64{}}
	if err := a.enter(); err != nil {
		return st
	}
	defer a.exit()
	ctx := context.Background()
	segData := int64(a.geo.Data) * a.geo.AUSize
	st.CapacityBytes = a.capacity * segData
	st.FreeBytes = a.free.Load() * segData

	a.catMu.RLock()
	cat := a.cat
	a.catMu.RUnlock()
	seen := map[segment.Addr]bool{}
	perMedium := map[uint64]SpaceStats{}
	for _, m := range cat.Mediums {
		local := map[segment.Addr]bool{}
		var s SpaceStats
		it := a.bm.NewIter(ctx, pyramid.IterOptions{Lower: []uint64{m.ID, 0}, Upper: []uint64{m.ID + 1}})
		for it.Next() {
			t := it.Tuple()
			if k := t[pyramid.BMKind]; k != pyramid.KindData && k != pyramid.KindDup {
				continue
			}
			s.LogicalBytes += int64(t[pyramid.BMLen]) * SectorSize
			ad := segment.Addr{Segment: segment.ID(t[pyramid.BMSegment]), Offset: int64(t[pyramid.BMOffset]), Length: int32(t[pyramid.BMCLen])}
			if !local[ad] {
				local[ad] = true
				s.PhysicalBytes += int64(ad.Length)
			}
			if !seen[ad] {
				seen[ad] = true
				st.PhysicalBytes += int64(ad.Length)
			}
		}
		if err := it.Err(); err != nil {
			st.Partial = true
			a.log.Warn("stats: block map walk incomplete; space figures are partial", "medium", m.ID, "err", err)
		}
		it.Close()
		st.LogicalBytes += s.LogicalBytes
		perMedium[m.ID] = s
	}
	fill := func(name string, medium uint64) {
		s := perMedium[medium]
		s.FreeBytes = st.FreeBytes
		s.DataReduction = ratio(s.LogicalBytes, s.PhysicalBytes)
		st.Volumes[name] = s
	}
	for _, v := range cat.Volumes {
		fill(v.Name, v.Medium)
	}
	for _, s := range cat.Snapshots {
		fill(s.Volume+"@"+s.Name, s.Medium)
	}
	st.DataReduction = ratio(st.LogicalBytes, st.PhysicalBytes)

	c := &a.stats
	for k, v := range map[string]int64{
		"writes": c.writes.Load(), "write_bytes": c.writeBytes.Load(), "write_errors": c.writeErrors.Load(),
		"reads": c.reads.Load(), "read_bytes": c.readBytes.Load(), "read_errors": c.readErrors.Load(),
		"cblocks": c.cblocks.Load(), "cblock_logical_bytes": c.cblockLogical.Load(), "cblock_stored_bytes": c.cblockStored.Load(),
		"zero_sectors": c.zeroSectors.Load(), "write_zeroes": c.zeroWrites.Load(), "trims": c.trimOps.Load(),
		"cache_hits": c.cacheHits.Load(), "cache_misses": c.cacheMisses.Load(), "degraded_reads": c.degradedReads.Load(),
		"segios_flushed": c.segiosFlushed.Load(), "nvram_trims": c.nvramTrims.Load(), "no_space_errors": c.noSpace.Load(),
		"forced_flushes": c.forcedFlushes.Load(), "maintenance_errors": c.maintErrors.Load(),
		"dedup_runs": c.dedupRuns.Load(), "dedup_sectors": c.dedupSectors.Load(),
		"dedup_bytes_saved": c.dedupSectors.Load() * SectorSize,
		"dedup_index_hits":  c.dedupLookupHits.Load(), "dedup_unreadable": c.dedupUnreadable.Load(),
		"dedup_table_tuples": c.dedupTableTuples.Load(), "dedup_index_loaded": c.dedupLoaded.Load(), "dedup_table_dropped": c.dedupTableDropped.Load(),
		"partial_reads": c.partReads.Load(), "batched_reads": c.batchReads.Load(),
	} {
		st.Counters[k] = v
	}
	if a.dedup != nil {
		is := a.dedup.Stats()
		st.Counters["dedup_index_bytes"] = a.dedup.Bytes()
		st.Counters["dedup_index_entries"], st.Counters["dedup_index_capacity"] = is.Entries, is.Capacity
		st.Counters["dedup_index_puts"], st.Counters["dedup_index_evictions"] = is.Puts, is.Evictions
	}
	items, bytes := a.pend.size()
	st.Counters["pending_cblocks"], st.Counters["pending_bytes"] = int64(items), bytes
	ls := a.st.Log().Stats()
	st.Counters["nvram_bytes_in_use"], st.Counters["nvram_region_bytes"] = ls.BytesInUse, ls.RegionBytes
	st.Counters["nvram_commits"], st.Counters["nvram_batches"] = int64(ls.Commits), int64(ls.Batches)
	st.Counters["nvram_full_waits"] = int64(ls.FullWaits)
	ps := a.db.Stats().Snapshot()
	st.Counters["meta_flushes"], st.Counters["meta_merges"] = int64(ps.Flushes), int64(ps.Merges)
	st.Counters["meta_persist_waits"], st.Counters["meta_background_errors"] = int64(ps.PersistWaits), int64(ps.BackgroundErrors)
	return st
}

func ratio(l, p int64) float64 {
	if p == 0 {
		return 0
	}
	return float64(l) / float64(p)
}
