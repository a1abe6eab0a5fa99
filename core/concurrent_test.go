package core

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

// TestConcurrent runs writers on disjoint regions, readers checking them,
// and snapshots being taken, all at once (run it with -race). Every 4 KiB
// block a writer writes carries (region, version) in each sector, so a
// snapshot's blocks can be checked without knowing when it was taken.
func TestConcurrent(t *testing.T) {
	e := newSimEnv(t, simConfig{seed: 11})
	const regions, regionBytes, rounds = 8, 256 << 10, 60
	if _, err := e.a.CreateVolume(e.ctx, "vol", regions*regionBytes); err != nil {
		t.Fatal(err)
	}
	block := func(region, version int) []byte {
		p := make([]byte, 4096)
		for s := 0; s < 4096; s += 512 {
			binary.LittleEndian.PutUint32(p[s:], uint32(region+1))
			binary.LittleEndian.PutUint32(p[s+4:], uint32(version))
			for i := s + 8; i < s+512; i++ {
				p[i] = byte(region*31 + version)
			}
		}
		return p
	}
	// final[region][block] is the version last written there.
	final := make([][]int, regions)
	var wg sync.WaitGroup
	errs := make(chan error, regions+2)
	for r := range regions {
		final[r] = make([]int, regionBytes/4096)
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := e.volume("vol")
			rng := rand.New(rand.NewPCG(uint64(r), 1))
			got := make([]byte, 4096)
			for ver := 1; ver <= rounds; ver++ {
				b := rng.IntN(regionBytes / 4096)
				off := int64(r*regionBytes + b*4096)
				if err := v.WriteAt(e.ctx, block(r, ver), off); err != nil {
					errs <- err
					return
				}
				final[r][b] = ver
				if err := v.ReadAt(e.ctx, got, off); err != nil {
					errs <- err
					return
				}
				if binary.LittleEndian.Uint32(got[4:]) != uint32(ver) {
					errs <- fmt.Errorf("region %d block %d: read version %d after writing %d", r, b, binary.LittleEndian.Uint32(got[4:]), ver)
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 5 {
			if _, err := e.a.CreateSnapshot(e.ctx, "vol", fmt.Sprint("s", i)); err != nil {
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	checkBlocks := func(name string, exact bool) {
		t.Helper()
		p := make([]byte, regions*regionBytes)
		if err := e.volume(name).ReadAt(e.ctx, p, 0); err != nil {
			t.Fatal(err)
		}
		for r := range regions {
			for b := range regionBytes / 4096 {
				got := p[r*regionBytes+b*4096:][:4096]
				ver := int(binary.LittleEndian.Uint32(got[4:]))
				if binary.LittleEndian.Uint32(got) == 0 && ver == 0 {
					if exact && final[r][b] != 0 {
						t.Fatalf("%s: region %d block %d is zero, want version %d", name, r, b, final[r][b])
					}
					continue
				}
				if string(got) != string(block(r, ver)) || (exact && ver != final[r][b]) || ver > final[r][b] {
					t.Fatalf("%s: region %d block %d holds a bad block (version %d, final %d)", name, r, b, ver, final[r][b])
				}
			}
		}
	}
	checkBlocks("vol", true)
	for i := range 5 {
		checkBlocks(fmt.Sprint("vol@s", i), false)
	}
	e.powerLoss()
	checkBlocks("vol", true)
}
