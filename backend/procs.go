package backend

import (
	"os"
	"runtime"
)

// MinIOProcs is the smallest GOMAXPROCS a process doing drive I/O through
// the file and nvme backends should run with, whatever its CPU count.
//
// Those backends make blocking pread/pwrite calls, one per I/O, from the
// caller's goroutine. A goroutine in a blocking system call keeps its P
// (the runtime's right to run Go code) until the runtime's sysmon thread
// takes the P back, at least one sysmon tick (20 µs, often more) later.
// With GOMAXPROCS equal to a small CPU count (2 on the development VM),
// only about that many goroutines can enter a pread at a time, so a queue
// of 32 random 4 KiB reads keeps only a few in flight and reaches about
// half of what fio's 32 psync jobs (32 processes) get from the same device.
// With MinIOProcs Ps, 4 KiB random reads at queue depth 32 keep as many
// I/Os in flight as with 32 Ps and reach 0.84–0.97× fio instead of
// 0.5–0.6× (bench/RESULTS.md, "Backends: Go vs fio", has the
// measurements, a sweep of GOMAXPROCS, and the random-write gap that more
// Ps do not close).
//
// The extra Ps are not free, which is why this is a floor of 8 and not
// one P per I/O in flight: Go code on more Ps than CPUs is time-sliced by
// the kernel rather than scheduled by the runtime, and the garbage
// collector's dedicated mark workers are a quarter of the Ps, so on a
// 2-CPU machine a collection can take up to half the CPU while it marks
// instead of a quarter. The floor suits about one drive at queue depth 32
// on a small machine; deep queues on many fast drives want an
// asynchronous interface (io_uring), not ever more Ps.
const MinIOProcs = 8

// IOProcs returns the GOMAXPROCS to run with when the current setting is
// cur: cur raised to MinIOProcs.
func IOProcs(cur int) int { return max(cur, MinIOProcs) }

// SetIOProcs raises GOMAXPROCS to IOProcs of its current value, unless the
// GOMAXPROCS environment variable is set (an operator's explicit choice
// wins). It returns the GOMAXPROCS in effect afterwards. cmd/shale calls
// it at start-up, and the file and nvme benchmarks call it too so that
// they measure what the server runs with. Where the current value already
// meets the floor it changes nothing, which keeps the runtime's automatic
// updates of GOMAXPROCS (to a changed CPU limit) in force.
func SetIOProcs() int {
	cur := runtime.GOMAXPROCS(0)
	if _, set := os.LookupEnv("GOMAXPROCS"); set {
		return cur
	}
	if want := IOProcs(cur); want != cur {
		runtime.GOMAXPROCS(want)
		return want
	}
	return cur
}
