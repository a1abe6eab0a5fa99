package nvlog

import (
	"testing"

	"github.com/shalestore/shale/backend"
	"github.com/shalestore/shale/backend/sim"
)

// simCrash is a backend/sim NVRAM device in virtual time: power loss keeps
// synced data and keeps, drops or tears (per sector) each unsynced write,
// as the seed decides.
type simCrash struct{ *sim.Device }

// newCrashDev returns a sim NVRAM device of size bytes (rounded up to 4 KiB);
// odd seeds get 4096-byte sectors, even ones 512; seeds 2 and 3 mod 4 also
// get CorruptTorn (torn writes may leave garbage or unreadable sectors).
func newCrashDev(t testing.TB, size int64, seed uint64) crashable {
	t.Helper()
	p := sim.NVRAMProfile()
	if seed%2 == 1 {
		p.Alignment = 4096
	}
	d, err := sim.New(sim.Options{
		Size:        (size + 4095) &^ 4095,
		Kind:        backend.NVRAM,
		Profile:     p,
		Seed:        int64(seed),
		Time:        sim.Virtual,
		CorruptTorn: seed%4 >= 2,
		Logger:      quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	return simCrash{d}
}

func (s simCrash) cut(t testing.TB) crashable {
	d, err := s.PowerLoss()
	if err != nil {
		t.Errorf("power loss: %v", err)
		return nil
	}
	return simCrash{d}
}
