package backend

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

func TestAlignedBufferShape(t *testing.T) {
	for _, n := range []int{0, 1, 512, 4095, 4096, HugeBufferMin - 1, HugeBufferMin,
		HugeBufferMin + 512, 1 << 20, 1<<20 + 512, 2 << 20, 3<<20 + 4096} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			b := AlignedBuffer(n)
			if len(b) != n || cap(b) != n {
				t.Fatalf("len %d cap %d, want %d", len(b), cap(b), n)
			}
			if !IsAligned(b, MaxAlignment) {
				t.Fatalf("address %p not a multiple of %d", unsafe.SliceData(b), MaxAlignment)
			}
			if bytes.IndexFunc(b, func(r rune) bool { return r != 0 }) >= 0 {
				t.Fatal("not zeroed")
			}
		})
	}
}

// Buffers carved from shared slabs must never overlap, however the sizes
// mix, and must stay intact while others are carved and dropped.
func TestAlignedBufferNoOverlap(t *testing.T) {
	sizes := []int{HugeBufferMin, 768 << 10, 1 << 20, 300 << 10, 2 << 20, 4 << 20, 200<<10 + 512}
	var bufs [][]byte
	for i := 0; i < 40; i++ {
		b := AlignedBuffer(sizes[i%len(sizes)])
		for j := range b {
			b[j] = byte(i + 1)
		}
		bufs = append(bufs, b)
		if i%5 == 0 {
			_ = AlignedBuffer(sizes[(i+3)%len(sizes)]) // dropped at once
			runtime.GC()
		}
	}
	for i, b := range bufs {
		if k := bytes.IndexFunc(b, func(r rune) bool { return r != rune(byte(i+1)) }); k >= 0 {
			t.Fatalf("buffer %d (%d bytes) overwritten at %d", i, len(b), k)
		}
	}
}

// On Linux with transparent huge pages available, a large buffer lies in
// memory advised for them: the kernel lists its mapping with the "hg" flag.
func TestAlignedBufferHugeAdvice(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("transparent huge pages are a Linux feature")
	}
	mode, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil || strings.Contains(string(mode), "[never]") {
		t.Skipf("transparent huge pages unavailable here (%q, %v)", mode, err)
	}
	for _, n := range []int{1 << 20, 3 << 20} {
		refused := hugeAdviceRefused.Load()
		b := AlignedBuffer(n)
		if hugeAdviceRefused.Load() != refused {
			t.Fatalf("%d bytes: kernel refused MADV_HUGEPAGE", n)
		}
		flags, err := vmFlags(uintptr(unsafe.Pointer(&b[0])))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(" "+flags+" ", " hg ") {
			t.Fatalf("%d bytes: mapping flags %q lack hg (MADV_HUGEPAGE)", n, flags)
		}
		runtime.KeepAlive(b)
	}
	if b := AlignedBuffer(HugeBufferMin / 2); true {
		flags, err := vmFlags(uintptr(unsafe.Pointer(&b[0])))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(" "+flags+" ", " hg ") {
			t.Fatalf("small buffer in a huge-page mapping: %q", flags)
		}
		runtime.KeepAlive(b)
	}
}

// vmFlags returns the VmFlags line of the mapping of this process that
// contains addr, from /proc/self/smaps.
func vmFlags(addr uintptr) (string, error) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in := false
	for sc.Scan() {
		line := sc.Text()
		if fields := strings.Fields(line); len(fields) > 0 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			lo, hi, ok := strings.Cut(fields[0], "-")
			a, err1 := strconv.ParseUint(lo, 16, 64)
			z, err2 := strconv.ParseUint(hi, 16, 64)
			in = ok && err1 == nil && err2 == nil && uint64(addr) >= a && uint64(addr) < z
			continue
		}
		if in && strings.HasPrefix(line, "VmFlags:") {
			return strings.TrimSpace(strings.TrimPrefix(line, "VmFlags:")), nil
		}
	}
	return "", fmt.Errorf("no mapping holds %#x", addr)
}
