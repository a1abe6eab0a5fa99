package nbd

import (
	"bufio"
	"io"
	"math/rand/v2"
	"testing"
)

// benchExport is a flat RAM export for benchmarks: no extents, so READs
// take the plain path.
func benchExport(size int64, nonBlocking bool) *memExport {
	e := newMemExport(size, Features{Flush: true, Trim: true, WriteZeroes: true, MultiConn: true, NonBlocking: nonBlocking})
	for i := range e.data {
		e.data[i] = byte(i)
	}
	return e
}

// benchIO drives b.N requests of size bytes through a loopback TCP
// connection with qd in flight, using a client that allocates nothing, so
// allocs/op is the server's.
func benchIO(b *testing.B, typ uint16, size, qd int, random bool) {
	b.Run("workers", func(b *testing.B) { benchIOMode(b, typ, size, qd, random, false) })
	b.Run("inline", func(b *testing.B) { benchIOMode(b, typ, size, qd, random, true) })
}

func benchIOMode(b *testing.B, typ uint16, size, qd int, random, nonBlocking bool) {
	const expSize = 256 << 20
	ts := startServer(b, Options{}, map[string]Export{"a": benchExport(expSize, nonBlocking)})
	c := dial(b, ts.addr)
	c.open("a", true, false)
	c.c.SetDeadline(timeZero)
	br := bufio.NewReaderSize(c.c, 256<<10)
	reqs := make([][]byte, qd)
	for i := range reqs {
		var payload []byte
		if typ == cmdWrite {
			payload = pattern(size, byte(i))
		}
		reqs[i] = reqBytes(typ, 0, uint64(i), 0, uint32(size), payload)
	}
	offs := make([]uint64, 4096)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range offs {
		if random {
			offs[i] = uint64(rng.IntN(expSize/size)) * uint64(size)
		} else {
			offs[i] = uint64(i*size) % expSize
		}
	}
	data := make([]byte, size+8)
	var hdr [chunkHeaderLen]byte
	sent := 0
	send := func(slot int) {
		put64(reqs[slot][16:], offs[sent%len(offs)])
		sent++
		if _, err := c.c.Write(reqs[slot]); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < qd && sent < b.N; i++ {
		send(i)
	}
	for done := 0; done < b.N; done++ {
		if _, err := io.ReadFull(br, hdr[:4]); err != nil {
			b.Fatal(err)
		}
		var cookie uint64
		switch be32(hdr[:]) {
		case simpleMagic:
			if _, err := io.ReadFull(br, hdr[4:16]); err != nil {
				b.Fatal(err)
			}
			if be32(hdr[4:]) != 0 {
				b.Fatalf("error %d", be32(hdr[4:]))
			}
			cookie = be64(hdr[8:])
		case structMagic:
			if _, err := io.ReadFull(br, hdr[4:20]); err != nil {
				b.Fatal(err)
			}
			if be16(hdr[6:]) != chunkOffsetData || be16(hdr[4:])&replyFlagDone == 0 {
				b.Fatalf("chunk type %d flags %d", be16(hdr[6:]), be16(hdr[4:]))
			}
			cookie = be64(hdr[8:])
			if _, err := io.ReadFull(br, data[:be32(hdr[16:])]); err != nil {
				b.Fatal(err)
			}
		default:
			b.Fatalf("bad magic")
		}
		if sent < b.N {
			send(int(cookie))
		}
	}
	b.StopTimer()
}

func BenchmarkRead4kQD32(b *testing.B)    { benchIO(b, cmdRead, 4096, 32, true) }
func BenchmarkWrite4kQD32(b *testing.B)   { benchIO(b, cmdWrite, 4096, 32, true) }
func BenchmarkRead1MSeqQD4(b *testing.B)  { benchIO(b, cmdRead, 1<<20, 4, false) }
func BenchmarkWrite1MSeqQD4(b *testing.B) { benchIO(b, cmdWrite, 1<<20, 4, false) }
