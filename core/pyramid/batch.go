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
	rels []*Relation
	data []uint64 // tuples back to back
}

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
func (b *Batch) Reset() { b.rels, b.data = b.rels[:0], b.data[:0] }

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
	batchVersion             = 1
)

// encode appends the batch's entry to dst.
func (b *Batch) encode(dst []byte) []byte {
	start := len(dst)
	dst = append(dst, batchMagic0, batchMagic1, batchVersion)
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

// maxBatchTuples bounds a decoded batch.
const maxBatchTuples = 1 << 24

// decodeBatch decodes a commit-log entry into b (reset first), checking all
// of it before returning. Errors are ErrCorrupt.
func (db *DB) decodeBatch(entry []byte, b *Batch) error {
	b.Reset()
	if len(entry) < 8 || entry[0] != batchMagic0 || entry[1] != batchMagic1 || entry[2] != batchVersion {
		return fmt.Errorf("%w: commit-log entry: bad header", ErrCorrupt)
	}
	body := entry[:len(entry)-4]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(entry[len(entry)-4:]) {
		return fmt.Errorf("%w: commit-log entry: checksum", ErrCorrupt)
	}
	pos := 3
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
