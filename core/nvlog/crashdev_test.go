package nvlog

import (
	"math/rand/v2"
	"testing"
)

// memCrash makes memDev crashable (until backend/sim is merged).
type memCrash struct {
	*memDev
	rng *rand.Rand
}

func newCrashDev(t testing.TB, size int64, seed uint64) crashable {
	return memCrash{newMemDev(size, 512), rand.New(rand.NewPCG(seed, 3))}
}

func (m memCrash) cut(t testing.TB) crashable {
	return memCrash{m.powerLoss(m.rng), m.rng}
}
