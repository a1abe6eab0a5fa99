// Package nvlog is shale's NVRAM commit log: a circular log of batches of
// entries on the NVRAM device. Every NBD write is acknowledged only after its
// entry (the write's facts and cblock payloads) is durable here (paper 4.2,
// Figure 4; DESIGN.md §3 step 5). Each entry gets a sequence number (seq);
// many committers share one device write and one sync per batch (group
// commit, the paper's "persist", 4.8). When the segment writer has made
// entries durable in segments, the engine trims the log past them and their
// space is reused. At recovery, Open finds the trim point and every durable
// batch after it, and Replay hands the entries back in seq order (4.3).
//
// # Device layout
//
// Offsets are bytes from the start of the device; blk is the device
// alignment at Format time (a power of two in [512, 4096]), stored in the
// superblock.
//
//	0          4096       8192                                        8192+regionLen
//	+----------+----------+-------------------------------------------+
//	| super    | super    | log region: batches, circular              |
//	| copy 0   | copy 1   | each batch starts at a multiple of blk     |
//	+----------+----------+-------------------------------------------+
//
// # Superblock (one copy; bytes 128..4095 of its slot are written as zero
// and ignored when read, room for later versions)
//
//	off  size  field
//	  0     4  magic      0x53564e53 ("SNVS", little-endian, as all integers)
//	  4     2  version    1
//	  6     2  length     128
//	  8     8  generation larger is newer; each write goes to the slot not
//	                      holding the newest valid copy, with generation+1
//	 16    16  array UUID Options.UUID; Open refuses another (ErrIdentity)
//	 32    16  log ID     random at Format; every batch carries it
//	 48     4  blk        batch alignment
//	 52     4  reserved   zero
//	 56     8  regionOff  8192
//	 64     8  regionLen  multiple of blk, ≥ 16 blocks
//	 72     8  trimSeq    entries with seq ≤ trimSeq are trimmed
//	 80     8  startPos   device offset of the first live batch (or where the
//	                      next batch goes when none is live)
//	 88     8  startSeq   first seq of the batch at startPos
//	 96     8  lastSeq    highest durable seq when this copy was written: seqs
//	                      never go backwards, even when the log is empty
//	104    20  reserved   zero
//	124     4  crc32c     of bytes 0..123
//
// INVARIANT: startSeq-1 ≤ trimSeq ≤ lastSeq. The superblock changes only at
// Trim and when an empty log rewinds its start to the region start.
//
// # Batch (at a blk-aligned offset in the region; never wraps)
//
//	off  size  field
//	  0     4  magic      0x42564e53 ("SNVB")
//	  4     2  version    1
//	  6     2  headerLen  64
//	  8    16  log ID     must equal the superblock's
//	 24     8  firstSeq   seq of the first entry
//	 32     4  count      entries, ≥ 1
//	 36     4  bodyLen    bytes of entries following the header
//	 40    20  reserved   zero
//	 60     4  crc32c     of header bytes 0..59 followed by the body
//	 64        body       count entries, back to back:
//	                        off size
//	                          0    8  seq   firstSeq + i
//	                          8    4  n     length of the entry
//	                         12    n  entry bytes
//	           padding    zeros up to a multiple of blk (not checksummed)
//
// A batch that does not fit between the head and the end of the region goes
// to the region start instead; the bytes left at the end are wasted for that
// lap.
//
// # Recovery
//
// Open takes the newest valid superblock copy (a torn copy falls back to the
// other, whose trim point is older but whose batches are all still there:
// space is reused only after the new copy is synced). From startPos,
// expecting startSeq, it reads a batch header; the batch is accepted if the
// magic, version, log ID and firstSeq match exactly and the crc covers header
// and body. If not, and the position is not the region start, it tries the
// region start (a wrapped batch, which must be larger than the gap it
// skipped). The next batch is expected right after the accepted one, with
// firstSeq + count. The first position with no acceptable batch ends the
// log. A batch from an earlier lap has a smaller seq than expected; one from
// an earlier log has another log ID; a torn one fails its crc or, on NAND
// whose program was cut, reads back as unreadable (backend.ErrCorrupt),
// which counts the same; so does an unreadable superblock copy. The walk
// reads at most the region once.
//
// This is sound because of the writer's invariant: a batch is written only
// after the previous one is synced, so only the newest batch can be torn,
// and nothing valid lies beyond it. Open then overwrites the free header
// positions just past the end and syncs, so that a torn batch can never be
// completed by later writes into a valid-looking batch with reused seqs.
//
// An entry is durable, and is reported to its committer, only after its
// batch's sync; it then survives any crash until trimmed. An entry whose
// committer saw an error or no answer may or may not be replayed, but only
// whole, and seqs always come back in order with no gaps.
//
// # Group commit
//
// Committers copy their entry into the open batch (reserving room and a seq
// under the lock, copying outside it) and wait. A single writer goroutine
// seals the open batch as soon as the previous batch's sync has returned
// (or, with Options.MaxDelay, once the batch is that old or full), writes it
// with one WriteAt, syncs once, and hands the acknowledgements to a
// completion goroutine, which tells committers in seq order. Two batch
// buffers take turns; when the open one is full, committers queue FIFO for
// the next. When the region has no room for the sealed batch the writer
// waits for Trim, and the queue pushes back on committers.
//
// # Failure
//
// A failed write or sync stops the log (ErrFailed): after a failed sync the
// device's state is unknown, and retrying the sync could report success for
// data already lost. Every waiting and later Commit gets the error; Close the
// log and Open the device again to find out what is really durable.
package nvlog
