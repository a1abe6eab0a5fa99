// Package pyramid is shale's log-structured metadata (Purity, SIGMOD 2015,
// §3.2, §4.8–4.10): relations of immutable facts, each a tuple with a
// sequence number, stored in log-structured merge trees called pyramids.
//
// # Relations
//
// A relation has a fixed Schema of unsigned integer fields, keys then
// values. A point relation maps a key to its newest tuple. A range relation
// maps runs: its last key field is a run start, one value field the run
// length, and the newest run wins per position. StandardSchemas lists
// shale's relations: the block map ((medium, lba) → run of sectors in a
// cblock, a dedup reference or zeros), the medium table (Figure 6,
// range-keyed too), the segment, dedup and link tables, and two elide
// tables.
//
// Why runs and not one tuple per sector: a sequential 32 KiB write is one
// tuple, not 64, and a range lookup reads a handful of runs. Runs inside a
// patch never overlap (INVARIANT), so a position is found by the last run
// starting at or before it, one binary search. Overwrites split older runs:
// in the DRAM patch at insert time (the older run is clipped and its tail
// becomes a new run, its shift fields advanced), and across patches at
// merge time. A lookup checks patches newest first and stops at the first
// that covers the position. Merges and flushes coalesce adjacent runs whose
// values continue, so a split run rejoins and elide ranges collapse.
//
// # Persist, the DRAM patch and recovery
//
// Persist encodes a Batch as one commit-log entry and hands it to the
// Committer (core/nvlog), which numbers it and makes it durable with group
// commit. The log calls back in sequence order once each entry is durable;
// the callback inserts the batch into each relation's active DRAM patch
// under DB.mu, and only then does Persist return: a fact is visible to
// readers once it is durable, never before. Because insertions happen in
// sequence order under the lock that also seals patches, a sealed DRAM
// patch holds exactly the batches numbered up to its seal: patches cover
// disjoint, ordered sequence ranges, and "newest wins" between patches is
// "first patch, newest first, that has it".
//
// The DRAM patch is a skiplist with one writer at a time and lock-free
// readers (see mem.go for how an overwrite stays correct for a concurrent
// reader at every step). When it reaches FlushBytes it is sealed and the
// flusher writes it as a persisted patch. Persist waits while a relation
// holds more than MaxDRAMBytes of DRAM patches.
//
// Recovery (Open) reads each relation's manifest from the RootStore and
// replays the commit log into fresh DRAM patches, skipping batches at or
// below the manifest's "through" sequence number; replaying a batch twice
// is harmless (inserting the same fact again changes nothing). DurableSeq
// tells the engine how far the log may be trimmed: every batch at or below
// it is in persisted patches.
//
// # Persisted patches, merge and flatten
//
// A persisted patch is written through the PageStore as pages (core/page:
// per-page dictionary, fixed-width bit-packed tuples, searchable without
// decoding, checksummed) with an index above them: index pages hold, per
// child page, its first key and its address (the key fields, then the
// 16-byte Addr as two big-endian uint64 fields), level by level up to one
// root page. Every page's tag is a hash of the relation id and the patch's
// sequence range, with the level in the low byte: a reader that is handed
// a reused address (the store reclaimed a dropped patch) sees the wrong tag
// or a bad checksum, gets ErrCorrupt and retries on the current version.
// Pages are read through a ristretto cache bounded in bytes (CacheBytes);
// each patch keeps its root page.
//
// A relation's manifest (its root in the RootStore, see below) lists its
// persisted patches newest first with their sequence ranges, key ranges,
// sizes and root addresses. Flush writes the pages, makes them durable,
// then sets the root: a crash before the root write leaves garbage pages
// and the DRAM patch comes back from the log; after it, the log's batches
// are skipped. Merge combines neighbouring patches (their sequence ranges
// are contiguous: nothing lies between neighbours) into one durable patch
// with their combined range, resolving newest-wins, dropping elided
// tuples and coalescing runs, streaming one page per level per input.
// Flatten swaps the result in with one root write and one atomic pointer
// swap. Both are idempotent and safe to crash anywhere and redo: an
// unflattened merge is garbage, a flatten whose inputs are gone is
// ErrStale (or a no-op if its output is already in). Readers load the
// current version (an immutable list of patches) once and never wait for
// a merge, a flatten or a flush; iterators pin their version so its pages
// stay live (LivePages, PatchPages) until Close.
//
// The merge policy (PlanMerge, a plain function) keeps patch sizes growing
// by MergeFanout from newest to oldest, and merges the smallest neighbours
// above MaxPatches. Compact also rewrites a patch that elide records newer
// than its last filtering may have emptied, so space returns at once.
//
// # Elision
//
// An elide table is a range relation of deleted value ranges of some key
// field ("mediums 17–17", "segments 100–180"); a relation's elide rules
// name the key field and the table. Readers drop tuples whose field falls
// in a deleted range (ReadOptions.Relaxed and IterOptions.Relaxed skip the
// check, as the paper's relaxed readers do); flushes and merges drop them
// for good. Elide rules may name only key fields other than a run start, so
// every version of a key is elided alike and dropping one never exposes an
// older one. Elided ids must never be reused. Each elide table is also held
// in memory as coalesced ranges (an immutable set swapped atomically); its
// size is bounded because ids are dense and ranges coalesce (§4.10).
//
// # Crash points
//
// Options.CrashHook is called at each step of flush, merge and flatten
// (CrashPoints). The tests crash at every one of them, cut power to every
// device (backend/sim) and check that recovery gives the same contents, on
// both pyramidtest's stores and core/store with core/nvlog.
//
// # Interfaces the engine implements
//
// PageStore (pages as log records in segios: core/store's Append with the
// patch's sequence range, Flush, Read), RootStore (one root per relation,
// RootPrefix + name, in the boot region: core/store's Checkpoint), and
// Committer (core/nvlog's *Log as is). Their contracts are on the types.
// The PageStore must be able to read pages of segments from earlier
// sessions: the engine has to make their layouts known to the segment
// store before Open (the test adapter records them in a root).
//
// # Formats
//
// Pages: see package core/page. Commit-log entry (Persist):
//
//	offset  size  field
//	     0     2  magic 'P' 'B'
//	     2     1  version, 2 (version 1 entries, written before
//	              attachments existed, have no attachment fields and are
//	              still decoded)
//	     3     …  uvarint a, the attachment's length (version 2 only)
//	     …     a  the attachment (Batch.Attach), opaque to the pyramid:
//	              the engine's cblock payloads (version 2 only)
//	     …     …  uvarint count, the number of tuples
//	     …     …  count tuples: uvarint relation id, then the tuple's F
//	              fields as uvarints (F from the relation's schema)
//	   n-4     4  crc32c (Castagnoli) of bytes [0, n-4), little-endian
//
// Manifest (a relation's root), integers uvarints unless a size is given:
//
//	offset  size  field
//	     0     3  magic 'S' 'P' 'M'
//	     3     1  version, 1
//	     4     …  relation id, K (key fields), F (fields)
//	     …     …  through: every batch ≤ through is in the patches (or was
//	              elided); replay skips them
//	     …     …  count, then count patches, newest first, each:
//	                seq lo, seq hi, tuples, leaf pages, bytes, levels,
//	                last end (range relations: end of the last run),
//	                elided through (highest elide seq filtered against),
//	                16 bytes root address,
//	                K fields of the min key, K fields of the max key
//	   n-4     4  crc32c (Castagnoli) of bytes [0, n-4), little-endian
//
// # Limits
//
// DRAM: MaxDRAMBytes per relation (not with Manual). Cache: CacheBytes.
// A page: PageBytes and MaxPageTuples. Manifest: at most 4096 patches
// (the policy keeps it near MaxPatches). Elide sets: held whole in memory.
// A batch: at most 2^24 tuples.
package pyramid
