package pyramid

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
)

// Batch collects the tuples of one persist: they get one sequence number
// and become durable and visible together (each tuple atomically; a reader
// racing the persist may see some of them before others).
type Batch struct {
	rels   []*Relation
	data   []uint64 // tuples back to back
	attach []byte   // opaque bytes carried in the entry (Attach)
}

// Attach sets an opaque attachment that is written in the same commit-log
// entry as the tuples (the engine puts the cblock payloads the tuples
// point at there, so facts and data become durable together). The
// pyramid never interprets it; EntryAttachment returns it from an entry
// at replay. The batch keeps p (no copy) until Reset; the caller must not
// modify it until Persist returns. A batch without tuples is not persisted
// at all, attachment or not.
func (b *Batch) Attach(p []byte) { b.attach = p }

// each calls fn for every tuple in order. t is the batch's own memory.
func (b *Batch) each(fn func(r *Relation, t []uint64)) {
	off := 0
	for _, r := range b.rels {
		fn(r, b.data[off:off+r.sh.f])
		off += r.sh.f
	}
}

// Len returns the number of tuples.
func (b *Batch) Len() int { return len(b.rels) }

// Reset empties the batch, keeping its memory.
func (b *Batch) Reset() { b.rels, b.data, b.attach = b.rels[:0], b.data[:0], nil }

// Insert adds tuple t (keys then values) for relation r. For a range
// relation the length must be ≥ 1 and the run must end at or below 2^64-1.
func (b *Batch) Insert(r *Relation, t ...uint64) error {
	if err := r.checkTuple(t); err != nil {
		return err
	}
	b.rels = append(b.rels, r)
	b.data = append(b.data, t...)
	return nil
}

// Elide adds the deletion of values lo..hi (inclusive) to elide table
// table. REQUIRES: lo ≤ hi < 2^64-1.
func (b *Batch) Elide(table *Relation, lo, hi uint64) error {
	if !table.schema.ElideTable {
		return fmt.Errorf("pyramid: %s is not an elide table", table.schema.Name)
	}
	if hi < lo || hi == math.MaxUint64 {
		return fmt.Errorf("pyramid: elide range %d..%d", lo, hi)
	}
	return b.Insert(table, lo, hi-lo+1)
}

// checkTuple validates a tuple for r.
func (r *Relation) checkTuple(t []uint64) error {
	sh := &r.sh
	if len(t) != sh.f {
		return fmt.Errorf("relation %s: tuple of %d fields, want %d", r.schema.Name, len(t), sh.f)
	}
	if sh.isRange {
		if t[sh.lenF] == 0 {
			return fmt.Errorf("relation %s: run of length 0", r.schema.Name)
		}
		if s := sh.start(t); s+t[sh.lenF] < s {
			return fmt.Errorf("relation %s: run %d+%d wraps", r.schema.Name, s, t[sh.lenF])
		}
	}
	return nil
}

// Commit-log entry encoding: drawn in the package documentation (Formats).
const (
	batchMagic0, batchMagic1 = 'P', 'B'
	batchVersion             = 2 // what encode writes
	batchVersion1            = 1 // still decoded: no attachment
)

// encode appends the batch's entry to dst.
func (b *Batch) encode(dst []byte) []byte {
	start := len(dst)
	dst = append(dst, batchMagic0, batchMagic1, batchVersion)
	dst = binary.AppendUvarint(dst, uint64(len(b.attach)))
	dst = append(dst, b.attach...)
	dst = binary.AppendUvarint(dst, uint64(len(b.rels)))
	off := 0
	for _, r := range b.rels {
		dst = binary.AppendUvarint(dst, uint64(r.schema.ID))
		for _, v := range b.data[off : off+r.sh.f] {
			dst = binary.AppendUvarint(dst, v)
		}
		off += r.sh.f
	}
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// entryHeader checks an entry's header and checksum and returns its
// attachment (nil for version 1) and the offset of the tuple count.
func entryHeader(entry []byte) (attach []byte, pos int, err error) {
	if len(entry) < 8 || entry[0] != batchMagic0 || entry[1] != batchMagic1 ||
		(entry[2] != batchVersion && entry[2] != batchVersion1) {
		return nil, 0, fmt.Errorf("%w: commit-log entry: bad header", ErrCorrupt)
	}
	body := entry[:len(entry)-4]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(entry[len(entry)-4:]) {
		return nil, 0, fmt.Errorf("%w: commit-log entry: checksum", ErrCorrupt)
	}
	pos = 3
	if entry[2] == batchVersion1 {
		return nil, pos, nil
	}
	n, w := binary.Uvarint(body[pos:])
	if w <= 0 || n > uint64(len(body)-pos-w) {
		return nil, 0, fmt.Errorf("%w: commit-log entry: bad attachment length", ErrCorrupt)
	}
	pos += w
	if n > 0 {
		attach = body[pos : pos+int(n) : pos+int(n)]
	}
	return attach, pos + int(n), nil
}

// EntryAttachment returns the attachment (Batch.Attach) of a commit-log
// entry written by Persist, after checking the entry's header and
// checksum; nil if it has none (or is a version 1 entry). The result
// aliases entry. Errors are ErrCorrupt.
func EntryAttachment(entry []byte) ([]byte, error) {
	a, _, err := entryHeader(entry)
	return a, err
}

// maxBatchTuples bounds a decoded batch.
const maxBatchTuples = 1 << 24

// decodeBatch decodes a commit-log entry into b (reset first), checking all
// of it before returning. Errors are ErrCorrupt.
func (db *DB) decodeBatch(entry []byte, b *Batch) error {
	b.Reset()
	attach, pos, err := entryHeader(entry)
	if err != nil {
		return err
	}
	b.attach = attach
	body := entry[:len(entry)-4]
	uv := func() (uint64, error) {
		v, n := binary.Uvarint(body[pos:])
		if n <= 0 {
			return 0, fmt.Errorf("%w: commit-log entry: truncated at byte %d", ErrCorrupt, pos)
		}
		pos += n
		return v, nil
	}
	count, err := uv()
	if err != nil {
		return err
	}
	if count > maxBatchTuples || count > uint64(len(body)) {
		return fmt.Errorf("%w: commit-log entry: %d tuples", ErrCorrupt, count)
	}
	for i := uint64(0); i < count; i++ {
		id, err := uv()
		if err != nil {
			return err
		}
		r := db.byID[uint16(id)]
		if r == nil || id > math.MaxUint16 {
			return fmt.Errorf("%w: commit-log entry: unknown relation %d", ErrCorrupt, id)
		}
		at := len(b.data)
		for f := 0; f < r.sh.f; f++ {
			v, err := uv()
			if err != nil {
				return err
			}
			b.data = append(b.data, v)
		}
		if err := r.checkTuple(b.data[at:]); err != nil {
			return fmt.Errorf("%w: commit-log entry: %w", ErrCorrupt, err)
		}
		b.rels = append(b.rels, r)
	}
	if pos != len(body) {
		return fmt.Errorf("%w: commit-log entry: %d trailing bytes", ErrCorrupt, len(body)-pos)
	}
	return nil
}
