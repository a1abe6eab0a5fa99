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
//	  4     2  version    2 (1 is read too, see Versions)
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
//	104     8  session    number of the last Open that wrote this superblock
//	                      (< 2^63); no batch carries a larger one
//	112     8  startSess  smallest session the batch at startPos may carry:
//	                      that batch's session, or with no live batch the
//	                      session that wrote this copy
//	120     4  reserved   zero
//	124     4  crc32c     of bytes 0..123
//
// INVARIANT: startSeq-1 ≤ trimSeq ≤ lastSeq; startSess ≤ session. The
// superblock changes at every Open (a new session), at Trim and when an
// empty log rewinds its start to the region start.
//
// # Batch (at a blk-aligned offset in the region; never wraps)
//
//	off  size  field
//	  0     4  magic      0x42564e53 ("SNVB")
//	  4     2  version    2 (1 is read too)
//	  6     2  headerLen  64
//	  8    16  log ID     must equal the superblock's
//	 24     8  firstSeq   seq of the first entry
//	 32     4  count      entries, ≥ 1
//	 36     4  bodyLen    bytes of entries following the header
//	 40     8  session    the session of the Open that wrote the batch
//	 48    12  reserved   zero
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
// magic, version, log ID and firstSeq match exactly, its session lies in
// [floor, superblock session] and the crc covers header and body. The floor
// is startSess for the first batch and the session of the batch before it
// for every other: sessions never decrease along the chain. If not, and the
// position is not the region start, it tries the region start (a wrapped
// batch, which must be larger than the gap it skipped). The next batch is
// expected right after the accepted one, with firstSeq + count. The first
// position with no acceptable batch ends the log. A batch from an earlier
// lap has a smaller seq than expected; one from an earlier log has another
// log ID; a torn one fails its crc or, on NAND whose program was cut, reads
// back as unreadable (backend.ErrCorrupt), which counts the same; so does an
// unreadable superblock copy. The walk reads at most the region once.
//
// The walk may end before batches that are still intact: the newest batch
// was torn, or a batch in the middle was damaged. Whatever lies beyond the
// end is dropped for good, and its seqs are given out again. To make the
// drop stick, Open then (1) overwrites the free header positions where the
// next batch can go (the recovered head, and the region start if the next
// batch could wrap there) and syncs, so a torn batch can never be completed
// by later writes into a valid-looking one; (2) starts a session: it writes
// a superblock copy with a new session, above any a batch on the device may
// carry (normally session+1, see below), the recovered chain's last seq as
// lastSeq, and startSess set to the session of the first live batch (the
// new session if none is live), and syncs it, all before the first batch of
// the session is written. Every batch carries its writer's session.
//
// Why stale batches cannot come back: within a session seqs only grow, so
// (session, seq) names at most one batch ever written. Take the walk at
// the batch after B (session s, last seq q), expecting q+1 at B's end or
// the region start. A batch there of session s with seq q+1 is the one the
// writer wrote right after B; if a later Open had dropped it (its walk
// ended at B) it overwrote that header before starting its session, so it
// is gone. A batch of a session below s was written before session s
// began, so before B: it cannot follow B, and is refused. A batch of a
// later session s' with seq q+1 was written after the Open of s' recovered
// a chain ending at q, at B: it really continues B. (Had that walk ended
// before B, the walk now could not reach B: the header after that earlier
// end was overwritten, and past a batch of s' none of session s < s' is
// accepted.) The first batch is covered the same way by startSess. So new
// commits that reuse dropped seqs and end exactly where dropped batches of
// the same log continue, with the very seqs the walk expects next, are
// safe: the dropped batches' session is lower.
//
// The session bound and the superblock fallback: the copy that starts a
// session is synced before any batch of it exists (if it tore, there are
// none), and every later copy is written to the other slot and carries the
// same session, so after a torn write the newest valid copy holds the
// largest session of any batch. A copy that was synced and damaged later
// is another matter: its session may be one above the fallback's (it was
// the next write after it) with batches behind it. So when the other copy
// is invalid the walk accepts sessions up to the fallback's + 1, and the
// new session skips that number: it is always one above the largest
// session the walk could accept.
//
// An entry is durable, and is reported to its committer, only after its
// batch's sync; it then survives any crash until trimmed. An entry whose
// committer saw an error or no answer may or may not be replayed, but only
// whole, and seqs always come back in order with no gaps.
//
// # Versions
//
// This code writes version 2. Version 1 (before sessions) kept the session
// fields as reserved zero bytes, so a version-1 image reads as one whose
// superblock and batches all have session 0; its first Open under version 2
// starts session 1. Version-1 code refuses version-2 images.
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
