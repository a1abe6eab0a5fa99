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

// Committer is the NVRAM commit log, as the pyramid's persist uses it. In
// shale core/nvlog implements it (Append and WaitDurable are its
// CommitAsync split in two).
//
// The split matters for correctness: the pyramid assigns each batch to the
// DRAM patch that is active when the batch gets its sequence number, and it
// holds a short lock across Append so that sealing a DRAM patch cuts the
// sequence space cleanly (every batch in the sealed patch has a smaller
// number than every batch after it). Append must therefore be quick (queue
// the entry, do not wait for the device).
type Committer interface {
	// Append assigns entry the next sequence number and queues it to be
	// made durable. Numbers are strictly increasing across calls and across
	// restarts (never reused, even after Trim). It does not wait for the
	// device. The log copies entry before returning.
	Append(ctx context.Context, entry []byte) (seq uint64, err error)
	// WaitDurable blocks until the entry with number seq, and every entry
	// before it, is durable.
	WaitDurable(ctx context.Context, seq uint64) error
	// Replay calls fn for every durable entry not yet trimmed, in sequence
	// order. Entries may repeat ones the pyramid already persisted; the
	// pyramid ignores what it already has.
	Replay(ctx context.Context, fn func(seq uint64, entry []byte) error) error
}
