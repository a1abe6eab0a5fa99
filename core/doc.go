// Package core is shale's storage engine: it ties the segment store
// (core/store), the NVRAM commit log (core/nvlog), the pyramids
// (core/pyramid) and cblocks (core/cblock) into an Array of volumes,
// snapshots and clones (DESIGN.md §3–§4, the paper's §4).
//
// # Write path
//
// WriteAt splits the data into runs of all-zero sectors, which become
// KindZero block-map runs and store nothing, and runs of data, cut into
// cblocks of at most 32 KiB. Each cblock is appended to the segment
// writer (its address is known at once) and kept in DRAM (pending) until
// its segio is durable. The block-map tuples and the cblock payloads go
// into one pyramid Batch (the payloads as its attachment, format below)
// and pyramid.DB.Persist makes that entry durable in NVRAM with group
// commit before WriteAt returns: acknowledged means durable.
//
// # NVRAM trimming
//
// An entry may be trimmed once (a) its facts are in persisted patches
// (DB.DurableSeq) and (b) the cblocks it carries are in durable segios.
// For (b) the maintenance loop takes checkpoints: it reads s, the log's
// durable seq, and then p, the highest segio position any cblock was
// appended to. Every entry ≤ s appended its cblocks before it was
// committed, so at or below p; once the segio at p is durable (OnFlush
// reports segios in address order) every entry ≤ s is data-safe. When the
// log is more than half full the loop forces a segio flush and a pyramid
// flush so writers never wait on a full log for long.
//
// # Recovery
//
// store.Open, then every segment layout the previous sessions recorded
// (root "core.layouts") is given back with AddLayout, then the NVRAM log
// is replayed once here: each entry's attached cblocks are Restored at
// their addresses (the store skips those already durable), EndRestore,
// then pyramid.Open replays the facts, then the catalog root is loaded
// and mediums the catalog no longer names are elided.
//
// # Mediums
//
// A volume names its read-write medium. The medium table maps (medium,
// sector range) to an underlying medium at an offset, or to none (0). A
// read resolves the block map of the medium first; positions it does not
// map fall through the medium table to the underlying medium, and so on
// down; unmapped at the bottom reads as zeros. A snapshot freezes the
// volume's medium (status RO) and gives the volume a fresh medium over
// it; a clone is a fresh medium over a snapshot's. Deleting elides a
// medium (medium-elide) unless a live medium lies on top of it, in which
// case the catalog keeps it, hidden, until nothing depends on it.
// Medium ids are never reused: the next id is the catalog's counter or
// one above the highest id in the medium table, whichever is higher.
//
// Admin operations are crash-safe by order: facts that create mediums are
// persisted before the catalog names them (a crash leaves an orphan
// medium, elided at the next Open); deletions write the catalog first and
// elide after (a crash leaves mediums nothing names, elided at Open).
//
// # Attachment format (the cblocks of one NVRAM entry)
//
//	offset  size  field
//	     0     1  version, 1
//	     1     …  items, back to back, each:
//	                8  segment id, little-endian
//	                8  byte offset in the segment's data space
//	                4  length n
//	                n  the cblock as stored (core/cblock format)
//
// # Roots in the boot region
//
// "core.catalog": version byte 1, then the catalog as JSON (names,
// mediums, sizes, origins, creation times, the next medium id); the boot
// generation's checksum covers it.
//
// "core.layouts": where every segment that holds cblocks or pages lives,
// so segments that have left the frontier set can still be read:
//
//	offset  size  field
//	     0     1  version, 1
//	     1     …  uvarint count, then count layouts in increasing segment
//	              order, each: uvarint segment id minus the previous one,
//	              uvarint width w, then w × (uvarint drive, uvarint AU)
//
// Its size is bounded by the drives: every AU belongs to at most one
// segment, so there are at most (AUs of all drives)/(k+m) layouts of at
// most 11+15(k+m) bytes; Create sizes the boot region for that. A few
// kilobytes for test arrays, a few megabytes for many terabytes: large
// arrays should move it into the segment-table relation (not done yet).
package core
