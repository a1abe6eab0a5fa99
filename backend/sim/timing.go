package sim

// Timing of host calls on the drive model. Every method needs the device's
// tmu held and takes now, the device time read under it (so now never goes
// backwards between calls).

// dieLoad is the NAND work one call puts on one die.
type dieLoad struct {
	progOps, progPages, readOps, moves, erases int64
}

// fold turns the FTL's per-plane work into per-die loads: planes of a die
// work together (multi-plane operations), so its program or read operations
// are the most any one plane needs; GC moves and erases of different planes
// run one after the other.
func (v *drive) fold(loads []dieLoad) []int32 {
	f := v.ftl
	v.dieTouched = v.dieTouched[:0]
	for _, p := range f.touched {
		w := &f.work[p]
		di := f.dieOfPlane(int(p))
		l := &loads[di]
		if *l == (dieLoad{}) {
			v.dieTouched = append(v.dieTouched, int32(di))
		}
		l.progOps = max(l.progOps, w.prog)
		l.progPages += w.prog
		l.readOps = max(l.readOps, w.reads)
		l.moves += w.moves
		l.erases += w.erases
	}
	f.clearWork()
	return v.dieTouched
}

func (v *drive) clearLoads(loads []dieLoad) {
	for _, di := range v.dieTouched {
		loads[di] = dieLoad{}
	}
	v.dieTouched = v.dieTouched[:0]
}

// xfer is the link time of n bytes.
func xfer(p *Profile, n int64) int64 {
	if p.LinkBytesPerSec == 0 || n == 0 {
		return 0
	}
	return int64(float64(n) * 1e9 / float64(p.LinkBytesPerSec))
}

// slowed applies a Slow fault to a call issued at now ending at end.
func slowed(now, end int64, fx *effects) int64 {
	if fx.slowFactor > 1 {
		end = now + int64(float64(end-now)*fx.slowFactor)
	}
	return end + fx.slowDelay
}

func pageSpan(off, n int64) (first, last int64) {
	return off / PageSize, (off + n - 1) / PageSize
}

func (v *drive) timeRead(d *Device, now, off, n int64, fx *effects) int64 {
	p := &d.prof
	v.c.reads++
	v.c.readBytes += n
	end := now + int64(p.Command)
	if n > 0 {
		f := v.ftl
		first, last := pageSpan(off, n)
		for lpn := first; lpn <= last; lpn++ {
			f.readPage(lpn)
		}
		loads := v.loads()
		t := end
		var wait int64
		var erase bool
		for _, di := range v.fold(loads) {
			l := &loads[di]
			if l.readOps == 0 {
				continue
			}
			dur := int64(p.Read)
			e, k := v.dies[di].read(t, l.readOps, dur)
			v.c.busy[kindRead] += l.readOps * dur
			if w := e - l.readOps*dur - t; w > 0 && k != kindRead {
				wait = max(wait, w)
				erase = erase || k == kindErase
			}
			end = max(end, e)
		}
		v.clearLoads(loads)
		if wait > 0 {
			v.c.readStalls++
			v.c.stallTime += wait
			if erase {
				v.c.readStallsErase++
			}
		}
		if x := xfer(p, n); x > 0 {
			v.linkOut = max(end, v.linkOut) + x
			end = v.linkOut
		}
	}
	end = slowed(now, end, fx)
	v.hist[histRead].add(end - now)
	return end
}

func (v *drive) loads() []dieLoad {
	if v.dieLoads == nil {
		v.dieLoads = make([]dieLoad, len(v.dies))
	}
	return v.dieLoads
}

func (v *drive) timeWrite(d *Device, now, off, n int64, fx *effects) (int64, error) {
	p := &d.prof
	v.c.writes++
	v.c.writeBytes += n
	t := now + int64(p.Command)
	if n == 0 {
		end := slowed(now, t, fx)
		v.hist[histWrite].add(end - now)
		return end, nil
	}
	f := v.ftl
	first, last := pageSpan(off, n)
	var err error
	for lpn := first; lpn <= last && err == nil; lpn++ {
		partial := lpn == first && off%PageSize != 0 || lpn == last && (off+n)%PageSize != 0
		err = f.writePage(lpn, partial)
	}
	loads := v.loads()
	touched := v.fold(loads)
	if x := xfer(p, n); x > 0 {
		v.linkIn = max(t, v.linkIn) + x
		t = v.linkIn
	}
	capPages := p.CacheBytes / PageSize
	if p.CacheBytes > 0 {
		capPages = max(capPages, 1)
		if ta := v.admit(now, t, last-first+1, capPages); ta > t {
			v.c.writeStalls++
			v.c.writeStallTime += ta - t
			t = ta
		}
	}
	// Sub-page writes over mapped pages read the old page first.
	ready := t
	for _, di := range touched {
		if l := &loads[di]; l.readOps > 0 {
			dur := int64(p.Read)
			e, _ := v.dies[di].read(now, l.readOps, dur)
			v.c.busy[kindRead] += l.readOps * dur
			ready = max(ready, e)
		}
	}
	progEnd := ready
	for _, di := range touched {
		l := &loads[di]
		dd := &v.dies[di]
		// GC ran to make room for this write: it is ahead of the
		// programs (foreground GC).
		if l.moves > 0 {
			dur := int64(p.Read + p.Program)
			dd.push(now, dieOp{ready: t, dur: dur, count: l.moves, kind: kindGC})
			v.c.busy[kindGC] += l.moves * dur
		}
		if l.erases > 0 {
			dur := int64(p.Erase)
			dd.push(now, dieOp{ready: t, dur: dur, count: l.erases, kind: kindErase})
			v.c.busy[kindErase] += l.erases * dur
		}
		if l.progOps > 0 {
			dur := int64(p.Program)
			q, r := l.progPages/l.progOps, l.progPages%l.progOps
			var cq int64
			if capPages > 0 {
				cq = q
			}
			if r > 0 {
				dd.push(now, dieOp{ready: ready, dur: dur, count: r, kind: kindProgram, cachePages: cq + min(cq, 1)})
			}
			dd.push(now, dieOp{ready: ready, dur: dur, count: l.progOps - r, kind: kindProgram, cachePages: cq})
			v.c.busy[kindProgram] += l.progOps * dur
			if capPages == 0 {
				progEnd = max(progEnd, dd.tailEnd())
			}
		}
	}
	v.clearLoads(loads)
	end := t
	if capPages == 0 {
		end = progEnd
	}
	end = slowed(now, end, fx)
	v.hist[histWrite].add(end - now)
	return end, err
}

// admit returns when a write of need pages, arriving at t, finds room in a
// write cache of capPages: the earliest time ≥ t at which the pages still
// waiting to be programmed leave room, given the queues as they stand.
func (v *drive) admit(now, t, need, capPages int64) int64 {
	need = min(need, capPages)
	occ := func(at int64) int64 {
		var o int64
		for i := range v.dies {
			o += v.dies[i].cachePagesAt(at)
		}
		return o
	}
	if occ(t)+need <= capPages {
		return t
	}
	hi := t
	for i := range v.dies {
		v.dies[i].settle(now)
		hi = max(hi, v.dies[i].tailEnd())
	}
	lo := t
	for lo < hi {
		mid := lo + (hi-lo)/2
		if occ(mid)+need <= capPages {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

func (v *drive) timeSync(d *Device, now int64, fx *effects) int64 {
	p := &d.prof
	v.c.syncs++
	end := now + int64(p.Command)
	for i := range v.dies {
		v.dies[i].settle(now)
		end = max(end, v.dies[i].programsEnd())
	}
	end += int64(p.Flush)
	end = slowed(now, end, fx)
	v.hist[histSync].add(end - now)
	return end
}

func (v *drive) timeDiscard(d *Device, now, off, n int64, fx *effects) int64 {
	v.c.discards++
	v.c.discardBytes += n
	f := v.ftl
	// Only whole pages are unmapped; partial ones were zeroed in the store.
	for lpn := (off + PageSize - 1) / PageSize; lpn < (off+n)/PageSize; lpn++ {
		f.discardPage(lpn)
	}
	end := slowed(now, now+int64(d.prof.Command), fx)
	v.hist[histDiscard].add(end - now)
	return end
}
