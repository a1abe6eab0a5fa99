package core

import (
	"fmt"

	"github.com/shalestore/shale/core/pyramid"
)

// explain prints how sector lba of medium m resolves (debugging aid).
func (e *simEnv) explain(m, lba uint64) string {
	out := ""
	for d := 0; d < 64; d++ {
		var bm []uint64
		e.a.bm.Resolve(e.ctx, []uint64{m}, lba, 1, pyramid.ReadOptions{}, func(t []uint64) error { bm = append([]uint64(nil), t...); return nil })
		var bmr []uint64
		e.a.bm.Resolve(e.ctx, []uint64{m}, lba, 1, pyramid.ReadOptions{Relaxed: true}, func(t []uint64) error { bmr = append([]uint64(nil), t...); return nil })
		var mt []uint64
		e.a.mt.Resolve(e.ctx, []uint64{m}, lba, 1, pyramid.ReadOptions{}, func(t []uint64) error { mt = append([]uint64(nil), t...); return nil })
		out += fmt.Sprintf("medium %d lba %d: bm %v (relaxed %v) mt %v\n", m, lba, bm, bmr, mt)
		if bm != nil || mt == nil || mt[pyramid.MTTarget] == 0 {
			break
		}
		m, lba = mt[pyramid.MTTarget], mt[pyramid.MTTargetOffset]
	}
	return out
}
