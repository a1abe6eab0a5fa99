package backendtest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/shalestore/shale/backend"
)

// A generation names the contents of one write: every 8-byte word of a
// block written with generation g at device offset o holds word(o, g), so
// a block read back says both where it was written and by which write.
// Generations start at 1; genAny marks a block whose contents are
// unspecified (discarded, or hit by a write that failed).
const genAny uint32 = 0

// word is the pattern word at byte offset o (a multiple of 8) for
// generation g. splitmix64 is a bijection, and (o/8, g) are packed without
// overlap for devices below 8 TiB, so no two (offset, generation) pairs share
// a word.
func word(o int64, g uint32) uint64 {
	z := uint64(o)>>3 | uint64(g)<<40
	z += 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// fill writes generation g's pattern for device offset off into buf.
func fill(buf []byte, off int64, g uint32) {
	for i := 0; i+8 <= len(buf); i += 8 {
		binary.LittleEndian.PutUint64(buf[i:], word(off+int64(i), g))
	}
}

// holds reports whether buf (read from device offset off) holds exactly
// generation g's pattern.
func holds(buf []byte, off int64, g uint32) bool {
	for i := 0; i+8 <= len(buf); i += 8 {
		if binary.LittleEndian.Uint64(buf[i:]) != word(off+int64(i), g) {
			return false
		}
	}
	return true
}

// describe says, for a mismatch report, what a block holds: zeros, one of
// the candidate generations, a block torn inside, or some write's data for
// another offset (a misplaced write). It tries the candidates, then every
// generation up to maxGen.
func describe(buf []byte, off int64, cands []uint32, maxGen uint32) string {
	zero := true
	for _, c := range buf {
		if c != 0 {
			zero = false
			break
		}
	}
	if zero {
		return "all zeros"
	}
	for _, g := range cands {
		if g != genAny && holds(buf, off, g) {
			return fmt.Sprintf("generation %d", g)
		}
	}
	all := slices.Clone(cands)
	for g := uint32(1); g <= maxGen && g < 1<<16; g++ {
		all = append(all, g)
	}
	first := binary.LittleEndian.Uint64(buf)
	for _, g := range all {
		if g == genAny {
			continue
		}
		if holds(buf, off, g) {
			return fmt.Sprintf("generation %d (another write's data)", g)
		}
		if word(off, g) == first {
			return fmt.Sprintf("generation %d in its first word only (torn inside the block)", g)
		}
		for d := int64(-1 << 20); d <= 1<<20; d += 512 {
			if o := off + d; o >= 0 && d != 0 && word(o, g) == first {
				return fmt.Sprintf("generation %d's data for offset %d (misplaced by %d bytes)", g, o, -d)
			}
		}
	}
	return fmt.Sprintf("unknown data (first word %#x)", first)
}

// model is what the suite knows of a device's contents, block by block
// (blocks of the device's Alignment). It is sparse: blocks the test never
// wrote are unknown and not checked.
//
// For power-loss tests it also keeps, per block, the generations written
// since the last Sync: after a power cut the block may hold its durable
// generation or any of those.
type model struct {
	align int64
	// cur is what a read returns now: the generation last written to each
	// block, or genAny.
	cur map[int64]uint32
	// durable is cur as of the last Sync.
	durable map[int64]uint32
	// since lists, per block, the generations written (or genAny for
	// discards) after the last Sync, oldest first.
	since map[int64][]uint32
	// gen, if set, is the test's generation counter, for error messages.
	gen *atomic.Uint32
}

func (m *model) maxGen() uint32 {
	if m.gen == nil {
		return 0
	}
	return m.gen.Load()
}

func newModel(align int) *model {
	return &model{
		align:   int64(align),
		cur:     map[int64]uint32{},
		durable: map[int64]uint32{},
		since:   map[int64][]uint32{},
	}
}

// wrote records a successful write of generation g over [off, off+n).
func (m *model) wrote(off, n int64, g uint32) {
	for b := off / m.align; b < (off+n)/m.align; b++ {
		m.cur[b] = g
		m.since[b] = append(m.since[b], g)
	}
}

// forget records that [off, off+n) now holds unspecified data (a discard,
// or a write that failed).
func (m *model) forget(off, n int64) { m.wrote(off, n, genAny) }

// synced records a successful Sync with no write in flight.
func (m *model) synced() {
	m.durable = maps.Clone(m.cur)
	clear(m.since)
}

// merge adds another model's state of disjoint blocks (from a goroutine
// that owned its own range).
func (m *model) merge(o *model) {
	maps.Copy(m.cur, o.cur)
	for b, s := range o.since {
		m.since[b] = append(m.since[b], s...)
	}
}

// runs returns the known blocks as maximal runs of adjacent block numbers,
// each at most maxRun blocks long, in order.
func runs(blocks []int64, maxRun int64) [][2]int64 {
	slices.Sort(blocks)
	var out [][2]int64
	for i := 0; i < len(blocks); {
		j := i + 1
		for j < len(blocks) && blocks[j] == blocks[j-1]+1 && int64(j-i) < maxRun {
			j++
		}
		out = append(out, [2]int64{blocks[i], int64(j - i)})
		i = j
	}
	return out
}

// check reads every block the model knows and compares it with cur. It
// returns a description of the first few mismatches, or nil.
func (m *model) check(ctx context.Context, dev backend.Device) error {
	var bad []string
	err := m.scan(ctx, dev, slices.Collect(maps.Keys(m.cur)), func(b int64, data []byte, err error) bool {
		g := m.cur[b]
		if err != nil {
			bad = append(bad, fmt.Sprintf("block at %d: want generation %d, read fails: %v", b*m.align, g, err))
			return len(bad) < 5
		}
		if g == genAny || holds(data, b*m.align, g) {
			return true
		}
		bad = append(bad, fmt.Sprintf("block at %d: want generation %d, have %s", b*m.align, g, describe(data, b*m.align, []uint32{g}, m.maxGen())))
		return len(bad) < 5
	})
	if err != nil {
		return err
	}
	if len(bad) > 0 {
		return fmt.Errorf("contents differ from what was written:\n\t%s", strings.Join(bad, "\n\t"))
	}
	return nil
}

// checkAfterPowerLoss reads every block touched since the model began and
// checks the power-loss rule: a block not written since the last Sync holds
// its durable generation exactly; a block written since holds its durable
// generation or one of the generations written since (each block whole:
// tearing happens between blocks, not inside one), or, with garbage, any
// data at all or a read error of class ErrCorrupt. Afterwards the model
// holds what the device holds, all of it durable.
func (m *model) checkAfterPowerLoss(ctx context.Context, dev backend.Device, garbage bool) error {
	blocks := slices.Collect(maps.Keys(m.durable))
	for b := range m.since {
		if _, ok := m.durable[b]; !ok {
			blocks = append(blocks, b)
		}
	}
	var bad []string
	now := map[int64]uint32{}
	err := m.scan(ctx, dev, blocks, func(b int64, data []byte, err error) bool {
		off := b * m.align
		d, wasDurable := m.durable[b]
		if !wasDurable {
			d = genAny // never synced: the old contents are unknown
		}
		cands := append([]uint32{d}, m.since[b]...)
		unsynced := len(m.since[b]) > 0
		switch {
		case err != nil && garbage && unsynced && errors.Is(err, backend.ErrCorrupt):
			now[b] = genAny
			return true
		case err != nil:
			bad = append(bad, fmt.Sprintf("block at %d: want generation %d or unsynced %v, read fails: %v", off, d, m.since[b], err))
			return len(bad) < 5
		}
		for _, g := range cands {
			if g != genAny && holds(data, off, g) {
				now[b] = g
				return true
			}
		}
		if slices.Contains(cands, genAny) || (garbage && unsynced) {
			now[b] = genAny // anything goes
			return true
		}
		if !unsynced {
			bad = append(bad, fmt.Sprintf("block at %d: synced generation %d lost, have %s", off, d, describe(data, off, cands, m.maxGen())))
		} else {
			bad = append(bad, fmt.Sprintf("block at %d: want synced generation %d or unsynced %v, have %s", off, d, m.since[b], describe(data, off, cands, m.maxGen())))
		}
		return len(bad) < 5
	})
	if err != nil {
		return err
	}
	if len(bad) > 0 {
		return fmt.Errorf("after power loss:\n\t%s", strings.Join(bad, "\n\t"))
	}
	m.cur = now
	m.synced()
	return nil
}

// scan reads the given blocks in runs of up to 1 MiB and calls visit for
// each block until visit returns false. Where a run fails to read, it reads
// the run's blocks one by one and passes each block's error to visit.
func (m *model) scan(ctx context.Context, dev backend.Device, blocks []int64, visit func(b int64, data []byte, err error) bool) error {
	maxRun := max(1, (1<<20)/m.align)
	buf := backend.AlignedBuffer(int(maxRun * m.align))
	for _, r := range runs(blocks, maxRun) {
		off, n := r[0]*m.align, r[1]*m.align
		p := buf[:n]
		if err := dev.ReadAt(ctx, p, off); err != nil {
			for i := int64(0); i < r[1]; i++ {
				q := p[i*m.align : (i+1)*m.align]
				if !visit(r[0]+i, q, dev.ReadAt(ctx, q, off+i*m.align)) {
					return nil
				}
			}
			continue
		}
		for i := int64(0); i < r[1]; i++ {
			if !visit(r[0]+i, p[i*m.align:(i+1)*m.align], nil) {
				return nil
			}
		}
	}
	return nil
}
