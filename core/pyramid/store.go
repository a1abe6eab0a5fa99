package pyramid

import (
	"context"
	"encoding/hex"
)

// AddrSize is the size of an Addr.
const AddrSize = 16

// Addr names one persisted page. Its meaning belongs to the PageStore (the
// segment store encodes a segment, an offset and a length); the pyramid
// only stores and compares it. Index pages store an Addr as two big-endian
// uint64 fields, so pages written close together (close addresses)
// compress well.
type Addr [AddrSize]byte

// String returns the address in hex.
func (a Addr) String() string { return hex.EncodeToString(a[:]) }

// PatchTag says which patch a set of pages belongs to. The page store
// records it with the pages (in the log record headers of a segment) so
// segments stay self-describing.
type PatchTag struct {
	// Relation is the relation's name.
	Relation string
	// SeqLo and SeqHi are the patch's sequence range, inclusive.
	SeqLo, SeqHi uint64
}

// PageStore persists the pages of patches. In shale the segment store
// implements it: pages are log records packed from the back of a segio.
//
// Space: pages of a patch that no manifest references any more (after a
// flatten) may be reclaimed at any time; the set of live pages is what
// Relation.LivePages reports. A reader that still holds an older version
// may then read a reclaimed address: it must get an error or bytes that are
// not the page it expects (the pyramid checks the checksum and the page's
// tag and retries with the current version), never a panic.
type PageStore interface {
	// NewWriter starts the pages of one patch.
	NewWriter(ctx context.Context, tag PatchTag) (PageWriter, error)
	// ReadPage returns the page at addr. It may return a longer buffer
	// than the page (the page records its own length). The pyramid keeps
	// the returned slice (in its cache) and never modifies it; dst, when
	// big enough, may be used as the buffer.
	ReadPage(ctx context.Context, addr Addr, dst []byte) ([]byte, error)
}

// PageWriter writes the pages of one patch.
type PageWriter interface {
	// Append adds a page and returns its stable address. The store copies
	// page before returning; the caller reuses the buffer. The page need not
	// be durable yet.
	Append(ctx context.Context, page []byte) (Addr, error)
	// Finish makes every appended page durable. Only after Finish returns
	// nil does the pyramid reference the pages from a manifest.
	Finish(ctx context.Context) error
	// Abort abandons the writer; its pages will never be referenced.
	Abort()
}

// RootStore holds small named roots durably. In shale the boot region
// implements it. The pyramid keeps one root per relation, named
// RootPrefix + the relation's name, holding the relation's manifest (a few
// hundred bytes: it lists patches, not pages).
type RootStore interface {
	// SetRoot durably and atomically replaces the named root: after a
	// crash, GetRoot returns either the old or the new value, whole.
	SetRoot(ctx context.Context, name string, value []byte) error
	// GetRoot returns the named root, or ok false if it was never set.
	GetRoot(ctx context.Context, name string) (value []byte, ok bool, err error)
}

// RootPrefix starts the names of the pyramid's roots.
const RootPrefix = "pyramid."

// Committer is the NVRAM commit log, as the pyramid's persist uses it.
// core/nvlog's *Log implements it as is.
//
// The pyramid inserts a batch into its DRAM patches inside done, which the
// log calls one entry at a time in sequence order. That order is what makes
// sealing a DRAM patch cut the sequence space cleanly: a sealed patch holds
// exactly the batches numbered up to its seal, the next patch those after.
type Committer interface {
	// CommitAsync copies entry, gives it the next sequence number (strictly
	// increasing, across restarts too, never reused even after a trim) and
	// returns without waiting for the device. It calls done(seq, nil) once
	// the entry is durable, or done(seq, err) if it failed (seq 0 if it was
	// refused at once). Calls to done happen one at a time, in sequence
	// order, and must not block for long; done may run before CommitAsync
	// returns. CommitAsync may block while the log is full.
	CommitAsync(entry []byte, done func(seq uint64, err error))
	// Replay calls fn for every durable entry not yet trimmed, in sequence
	// order. Entries may repeat ones the pyramid already persisted; the
	// pyramid ignores what it already has.
	Replay(ctx context.Context, fn func(seq uint64, entry []byte) error) error
}
