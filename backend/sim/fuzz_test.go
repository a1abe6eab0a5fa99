package sim

import (
	"testing"
)

// FuzzFTL drives a tiny FTL with arbitrary page writes, partial writes,
// discards and reads, checking its invariants and its mapping against a
// plain set of mapped pages.
func FuzzFTL(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7})
	f.Add([]byte{3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{200, 9, 17, 33, 65, 129, 2, 4, 8, 16, 32, 64, 128, 255, 254, 253})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		p := SSDProfile()
		p.Dies = 1 + int(data[0]%3)
		p.Planes = 1 + int(data[0]/3%2)
		p.PagesPerBlock = 1 << (data[0] / 6 % 4) // 1..8
		pages := int64(8 + int(data[1]%64))
		g, err := deriveGeometry(pages*PageSize, p)
		if err != nil {
			t.Fatal(err)
		}
		fl := newFTL(g)
		mapped := map[int64]bool{}
		// Repeat the ops so even short inputs fill the device and GC.
		for round := 0; round < 8; round++ {
			for i, b := range data[2:] {
				lpn := (int64(b) + int64(i)*7 + int64(round)*13) % pages
				switch b % 4 {
				case 0, 1:
					if err := fl.writePage(lpn, b%4 == 1); err != nil {
						t.Fatal(err)
					}
					mapped[lpn] = true
				case 2:
					fl.discardPage(lpn)
					delete(mapped, lpn)
				case 3:
					fl.readPage(lpn)
				}
				fl.clearWork()
			}
		}
		if err := fl.check(); err != nil {
			t.Fatal(err)
		}
		if fl.nMapped != int64(len(mapped)) {
			t.Fatalf("%d pages mapped, model %d", fl.nMapped, len(mapped))
		}
		for lpn := int64(0); lpn < pages; lpn++ {
			if (fl.lookup(lpn) != 0) != mapped[lpn] {
				t.Fatalf("lpn %d mapped %v, model %v", lpn, fl.lookup(lpn) != 0, mapped[lpn])
			}
		}
		if fl.programs != fl.hostPages+fl.gcMoves {
			t.Fatalf("programs %d != host %d + moves %d", fl.programs, fl.hostPages, fl.gcMoves)
		}
	})
}

// FuzzDie drives one die's queue with arbitrary pushes and reads at
// non-decreasing times and checks the timing rules: a read waits at most
// for the instance in progress plus the reads queued ahead of it, and the
// queue drains.
func FuzzDie(f *testing.F) {
	f.Add([]byte{1, 10, 2, 20, 3, 30, 4, 40})
	f.Add([]byte{0, 0, 0, 0, 255, 255, 1, 1, 1, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		var d die
		now := int64(0)
		var maxDur int64
		for i := 0; i+1 < len(data); i += 2 {
			op, arg := data[i], int64(data[i+1])
			now += int64(op>>4) * 7
			switch op % 3 {
			case 0:
				dur := arg % 50
				maxDur = max(maxDur, dur)
				kind := []opKind{kindProgram, kindGC, kindErase}[arg%3]
				d.push(now, dieOp{ready: now + arg%5, dur: dur, count: 1 + arg%4, kind: kind})
			case 1, 2:
				// Reads queued ahead of this one, after settling at now.
				d.settle(now)
				var ahead int64
				for j := d.head; j < len(d.ops); j++ {
					if d.ops[j].kind == kindRead {
						ahead += d.ops[j].count * d.ops[j].dur
					}
				}
				dur, n := 1+arg%9, 1+arg%3
				maxDur = max(maxDur, dur)
				end, _ := d.read(now, n, dur)
				if end < now+n*dur {
					t.Fatalf("read at %d of %d x %d ended at %d", now, n, dur, end)
				}
				if end > now+maxDur+ahead+n*dur {
					t.Fatalf("read at %d of %d x %d ended at %d: waited for more than one operation (%d) and %d of reads", now, n, dur, end, maxDur, ahead)
				}
			}
			if te := d.tailEnd(); te < d.base {
				t.Fatalf("tail %d before base %d", te, d.base)
			}
		}
		d.settle(d.tailEnd() + 1)
		if !d.empty() {
			t.Fatalf("queue did not drain: %+v", d.ops[d.head:])
		}
	})
}
