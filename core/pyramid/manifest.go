package pyramid

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"slices"
)

// manifest is a relation's root: its persisted patches, newest first, and
// how far its flushes have reached. Its encoding is drawn in the package
// documentation (Formats).
type manifest struct {
	relID   uint16
	k, f    int
	through uint64
	patches []PatchInfo
}

const (
	maxManifestPatches = 1 << 12
	maxLevels          = 16
)

func (m *manifest) encode() []byte {
	b := []byte{'S', 'P', 'M', 1}
	b = binary.AppendUvarint(b, uint64(m.relID))
	b = binary.AppendUvarint(b, uint64(m.k))
	b = binary.AppendUvarint(b, uint64(m.f))
	b = binary.AppendUvarint(b, m.through)
	b = binary.AppendUvarint(b, uint64(len(m.patches)))
	for _, p := range m.patches {
		for _, v := range []uint64{p.SeqLo, p.SeqHi, p.Tuples, p.LeafPages, p.Bytes, uint64(p.Levels), p.LastEnd, p.ElidedThrough} {
			b = binary.AppendUvarint(b, v)
		}
		b = append(b, p.Root[:]...)
		for _, v := range p.MinKey {
			b = binary.AppendUvarint(b, v)
		}
		for _, v := range p.MaxKey {
			b = binary.AppendUvarint(b, v)
		}
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func decodeManifest(b []byte) (*manifest, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: manifest: "+format, append([]any{ErrCorrupt}, args...)...)
	}
	if len(b) < 8 || b[0] != 'S' || b[1] != 'P' || b[2] != 'M' || b[3] != 1 {
		return nil, bad("bad header")
	}
	body := b[:len(b)-4]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return nil, bad("checksum")
	}
	pos := 4
	var err error
	uv := func() uint64 {
		if err != nil {
			return 0
		}
		v, n := binary.Uvarint(body[pos:])
		if n <= 0 {
			err = bad("truncated at byte %d", pos)
			return 0
		}
		pos += n
		return v
	}
	m := &manifest{}
	id, k, f := uv(), uv(), uv()
	m.through = uv()
	count := uv()
	if err != nil {
		return nil, err
	}
	if id == 0 || id > 0xffff || k < 1 || f < k || f > 64 || count > maxManifestPatches {
		return nil, bad("relation %d, %d/%d fields, %d patches", id, k, f, count)
	}
	m.relID, m.k, m.f = uint16(id), int(k), int(f)
	for i := uint64(0); i < count; i++ {
		var p PatchInfo
		p.SeqLo, p.SeqHi, p.Tuples, p.LeafPages, p.Bytes = uv(), uv(), uv(), uv(), uv()
		levels := uv()
		p.LastEnd, p.ElidedThrough = uv(), uv()
		if err != nil {
			return nil, err
		}
		if pos+AddrSize > len(body) {
			return nil, bad("patch %d: root truncated", i)
		}
		copy(p.Root[:], body[pos:])
		pos += AddrSize
		p.MinKey, p.MaxKey = make([]uint64, m.k), make([]uint64, m.k)
		for j := range p.MinKey {
			p.MinKey[j] = uv()
		}
		for j := range p.MaxKey {
			p.MaxKey[j] = uv()
		}
		if err != nil {
			return nil, err
		}
		if levels > maxLevels || p.SeqLo > p.SeqHi || p.SeqHi > m.through || p.Tuples == 0 ||
			slices.Compare(p.MinKey, p.MaxKey) > 0 {
			return nil, bad("patch %d: levels %d, seq %d..%d through %d, %d tuples, keys %v..%v",
				i, levels, p.SeqLo, p.SeqHi, m.through, p.Tuples, p.MinKey, p.MaxKey)
		}
		if n := len(m.patches); n > 0 && m.patches[n-1].SeqLo <= p.SeqHi {
			return nil, bad("patch %d: seq %d..%d not older than %d..%d", i, p.SeqLo, p.SeqHi,
				m.patches[n-1].SeqLo, m.patches[n-1].SeqHi)
		}
		p.Levels = int(levels)
		m.patches = append(m.patches, p)
	}
	if pos != len(body) {
		return nil, bad("%d trailing bytes", len(body)-pos)
	}
	return m, nil
}
