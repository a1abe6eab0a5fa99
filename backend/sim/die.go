package sim

import "slices"

// opKind is what a die is doing.
type opKind uint8

const (
	kindNone    opKind = iota
	kindRead           // host read (or the read half of a read-modify-write)
	kindProgram        // host page program
	kindGC             // GC page move: read + program on the same plane
	kindErase          // block erase
)

// dieOp is a run of count identical back-to-back NAND operations, each dur
// nanoseconds, that may start no earlier than ready. A run keeps the queue
// short (a 1 MiB write is one run per die) while a read arriving mid-run
// still waits for only the instance in progress.
type dieOp struct {
	ready, dur int64
	count      int64
	kind       opKind
	// cachePages is the host pages each instance drains from the write
	// cache (programs only).
	cachePages int64
}

// die is one NAND die's timeline: a FIFO of runs where host reads jump
// ahead of everything not yet started. Times are nanoseconds of the device
// clock. Start times are computed lazily: a run starts at max(ready, end of
// the run before it), so inserting a read pushes back everything behind it.
//
// INVARIANT: base ≤ the time passed to the last settle, and every run in
// ops[head:] with start ≤ that time is the head, in progress.
type die struct {
	ops  []dieOp
	head int
	// base is when the last finished instance ended: the head run's
	// earliest start.
	base int64
}

func (d *die) empty() bool { return d.head == len(d.ops) }

func (d *die) pop() {
	d.ops[d.head] = dieOp{}
	d.head++
	if d.head == len(d.ops) {
		d.ops, d.head = d.ops[:0], 0
	} else if d.head >= 64 && d.head*2 >= len(d.ops) {
		n := copy(d.ops, d.ops[d.head:])
		d.ops, d.head = d.ops[:n], 0
	}
}

// settle retires every instance finished by now.
func (d *die) settle(now int64) {
	for !d.empty() {
		op := &d.ops[d.head]
		start := max(op.ready, d.base)
		if start > now {
			return
		}
		if op.dur == 0 {
			d.base = start
			d.pop()
			continue
		}
		done := (now - start) / op.dur
		if done >= op.count {
			d.base = start + op.count*op.dur
			d.pop()
			continue
		}
		if done > 0 {
			op.count -= done
			op.ready = start + done*op.dur
			d.base = op.ready
		}
		return
	}
}

// read schedules n read operations of dur each for a host read issued at
// now and returns when they complete and what kind of operation, if any,
// the read had to wait for (the in-progress instance; reads queued ahead
// count as kindRead).
func (d *die) read(now int64, n, dur int64) (end int64, waited opKind) {
	d.settle(now)
	pos, t := d.head, now
	if pos < len(d.ops) {
		op := &d.ops[pos]
		if start := max(op.ready, d.base); start <= now {
			waited = op.kind
			t = start + op.dur
			if op.count > 1 {
				rest := *op
				rest.count--
				rest.ready = t
				op.count = 1
				d.ops = slices.Insert(d.ops, pos+1, rest)
			}
			pos++
		}
	}
	for pos < len(d.ops) && d.ops[pos].kind == kindRead {
		if waited == kindNone {
			waited = kindRead
		}
		op := &d.ops[pos]
		t = max(t, op.ready) + op.count*op.dur
		pos++
	}
	if n*dur > 0 {
		d.ops = slices.Insert(d.ops, pos, dieOp{ready: now, dur: dur, count: n, kind: kindRead})
	}
	return t + n*dur, waited
}

// push appends a run behind everything queued (after retiring what is done
// by now).
func (d *die) push(now int64, op dieOp) {
	d.settle(now)
	if op.count <= 0 {
		return
	}
	if op.dur == 0 && d.empty() {
		// Takes no time and nothing is ahead of it: done at once. (base
		// stays; an idle die has no "last end" later than now.)
		return
	}
	d.ops = append(d.ops, op)
}

// tailEnd is when everything queued is done.
func (d *die) tailEnd() int64 {
	t := d.base
	for i := d.head; i < len(d.ops); i++ {
		op := &d.ops[i]
		t = max(t, op.ready) + op.count*op.dur
	}
	return t
}

// programsEnd is when the last queued host program completes (Sync waits
// for it), or base if none is queued.
func (d *die) programsEnd() int64 {
	t, last := d.base, d.base
	for i := d.head; i < len(d.ops); i++ {
		op := &d.ops[i]
		t = max(t, op.ready) + op.count*op.dur
		if op.kind == kindProgram {
			last = t
		}
	}
	return last
}

// cachePagesAt is how many host pages still wait in the write cache for
// this die at time t (instances not finished by t), given the queue as it
// stands.
func (d *die) cachePagesAt(t int64) int64 {
	var pages int64
	cur := d.base
	for i := d.head; i < len(d.ops); i++ {
		op := &d.ops[i]
		start := max(cur, op.ready)
		cur = start + op.count*op.dur
		if op.cachePages == 0 {
			continue
		}
		left := op.count
		if t >= start {
			if op.dur == 0 {
				left = 0
			} else {
				left -= min(op.count, (t-start)/op.dur)
			}
		}
		pages += left * op.cachePages
	}
	return pages
}

// reset forgets all queued work (power loss).
func (d *die) reset(now int64) {
	d.ops, d.head, d.base = d.ops[:0], 0, now
}
