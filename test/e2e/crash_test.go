package e2e

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"
)

var crashLong = flag.Bool("long", false, "run the crash test for 50 rounds instead of 6")

// Geometry of the crash workload: vol0 (64 MiB) in 4 KiB blocks, written
// by crashConns connections in runs of 1 to crashMaxRun blocks, each
// connection in its own quarter of the volume, one write at a time, so a
// block never has two writes in flight.
const (
	crashBlock    = 4096
	crashBlocks   = 64 << 20 / crashBlock
	crashConns    = 4
	crashMaxRun   = 8 // blocks per write, at most
	crashIOTimout = 20 * time.Second
)

// crashBlockData fills a block with (block, token) records; token 0 never
// occurs, so an all-zero block is one never written.
func crashBlockData(dst []byte, block int, token uint64) {
	for i := 0; i < len(dst); i += 16 {
		binary.LittleEndian.PutUint64(dst[i:], uint64(block))
		binary.LittleEndian.PutUint64(dst[i+8:], token)
	}
}

// crashToken decodes a block read back: its token (0 for zeros), or an
// error if it is neither zeros nor a whole block written by the workload.
func crashToken(b []byte, block int) (uint64, error) {
	if bytes.Equal(b, make([]byte, len(b))) {
		return 0, nil
	}
	token := binary.LittleEndian.Uint64(b[8:])
	want := make([]byte, len(b))
	crashBlockData(want, block, token)
	if !bytes.Equal(b, want) {
		return 0, fmt.Errorf("block %d holds neither zeros nor one whole write (first record: block %d token %d)",
			block, binary.LittleEndian.Uint64(b), token)
	}
	return token, nil
}

// crashState is what the workload knows of each block: the token of the
// last write acknowledged to it (0: none), and the token of a write sent
// but not acknowledged when the server died (0: none).
type crashState struct {
	acked   [crashBlocks]uint64
	pending [crashBlocks]uint64
}

// TestEngineCrash kills shale with SIGKILL while four connections write
// (multi-conn, no FUA, no flush), restarts it, and checks every block:
// it must hold the last acknowledged write, or the write in flight at the
// kill; nothing else, never a torn block. (A write in flight may land in
// part: its blocks are checked one by one.) Six rounds in CI, 50 with -long.
func TestEngineCrash(t *testing.T) {
	rounds := 6
	if *crashLong {
		rounds = 50
	}
	dir := t.TempDir()
	st := new(crashState)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	var token uint64
	for r := range rounds {
		s := startServerIn(t, dir, engineConfig(dir))
		if r > 0 && s.count("creating a new array") > 0 {
			t.Fatalf("round %d: a new array was created over the old one", r)
		}
		crashVerify(t, s, st, r)

		// Write until the kill.
		var wg sync.WaitGroup
		var mu sync.Mutex // guards st and token while writers run
		acks := 0
		for c := range crashConns {
			conn, err := dialExport(s.addr, "vol0")
			if err != nil {
				t.Fatalf("round %d: %v", r, err)
			}
			wrng := rand.New(rand.NewPCG(rng.Uint64(), uint64(c)))
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				const quarter = crashBlocks / crashConns
				buf := make([]byte, crashMaxRun*crashBlock)
				for {
					n := 1 + wrng.IntN(crashMaxRun)
					first := c*quarter + wrng.IntN(quarter-n+1)
					mu.Lock()
					token++
					tok := token
					for b := first; b < first+n; b++ {
						st.pending[b] = tok
					}
					mu.Unlock()
					for i := range n {
						crashBlockData(buf[i*crashBlock:(i+1)*crashBlock], first+i, tok)
					}
					if err := conn.write(int64(first)*crashBlock, buf[:n*crashBlock]); err != nil {
						return // the server is gone; the write stays in flight
					}
					mu.Lock()
					for b := first; b < first+n; b++ {
						st.acked[b], st.pending[b] = tok, 0
					}
					acks++
					mu.Unlock()
				}
			}()
		}
		time.Sleep(time.Duration(200+rng.IntN(800)) * time.Millisecond)
		s.kill9(t)
		wg.Wait()
		if acks == 0 {
			t.Fatalf("round %d: no write was acknowledged before the kill", r)
		}
		t.Logf("round %d: %d writes acknowledged before SIGKILL", r, acks)
	}
	s := startServerIn(t, dir, engineConfig(dir))
	crashVerify(t, s, st, rounds)
}

// crashVerify reads every block of vol0 and checks it against st, then
// makes what it read the new acknowledged state.
func crashVerify(t *testing.T, s *server, st *crashState, round int) {
	t.Helper()
	conn, err := dialExport(s.addr, "vol0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const chunk = 1 << 20
	var bad []string
	for off := int64(0); off < crashBlocks*crashBlock; off += chunk {
		data, err := conn.read(off, chunk)
		if err != nil {
			t.Fatalf("round %d: read at %d: %v", round, off, err)
		}
		for i := 0; i < chunk; i += crashBlock {
			block := int((off + int64(i)) / crashBlock)
			got, err := crashToken(data[i:i+crashBlock], block)
			if err == nil && got != st.acked[block] && (got == 0 || got != st.pending[block]) {
				err = fmt.Errorf("block %d holds token %d; acknowledged %d, in flight %d", block, got, st.acked[block], st.pending[block])
			}
			if err != nil {
				bad = append(bad, err.Error())
				continue
			}
			st.acked[block], st.pending[block] = got, 0
		}
	}
	if len(bad) > 0 {
		t.Fatalf("round %d: %d blocks wrong after SIGKILL and restart, e.g.:\n%s", round, len(bad), bad[0])
	}
}

// nbdConn is a minimal NBD client for the crash test: fixed newstyle, GO,
// simple replies, one request at a time.
type nbdConn struct {
	c  net.Conn
	br *bufio.Reader
	id uint64
}

func dialExport(addr, export string) (*nbdConn, error) {
	c, err := net.DialTimeout("tcp", addr, crashIOTimout)
	if err != nil {
		return nil, err
	}
	n := &nbdConn{c: c, br: bufio.NewReader(c)}
	if err := n.handshake(export); err != nil {
		c.Close()
		return nil, fmt.Errorf("NBD handshake: %w", err)
	}
	return n, nil
}

func (n *nbdConn) Close() error { return n.c.Close() }

func (n *nbdConn) handshake(export string) error {
	be := binary.BigEndian
	n.c.SetDeadline(time.Now().Add(crashIOTimout))
	defer n.c.SetDeadline(time.Time{})
	g := make([]byte, 18)
	if _, err := io.ReadFull(n.br, g); err != nil {
		return err
	}
	if string(g[:8]) != "NBDMAGIC" || be.Uint64(g[8:]) != 0x49484156454F5054 {
		return errors.New("bad greeting")
	}
	var out []byte
	out = be.AppendUint32(out, 3) // fixed newstyle, no zeroes
	out = be.AppendUint64(out, 0x49484156454F5054)
	out = be.AppendUint32(out, 7) // NBD_OPT_GO
	out = be.AppendUint32(out, uint32(4+len(export)+2))
	out = be.AppendUint32(out, uint32(len(export)))
	out = append(out, export...)
	out = be.AppendUint16(out, 0)
	if _, err := n.c.Write(out); err != nil {
		return err
	}
	for {
		h := make([]byte, 20)
		if _, err := io.ReadFull(n.br, h); err != nil {
			return err
		}
		data := make([]byte, be.Uint32(h[16:]))
		if _, err := io.ReadFull(n.br, data); err != nil {
			return err
		}
		switch typ := be.Uint32(h[12:]); {
		case typ == 1: // ACK
			return nil
		case typ == 3: // INFO
		default:
			return fmt.Errorf("GO reply %#x: %q", typ, data)
		}
	}
}

func (n *nbdConn) request(typ uint16, off int64, length uint32, payload []byte) error {
	be := binary.BigEndian
	n.id++
	var b []byte
	b = be.AppendUint32(b, 0x25609513)
	b = be.AppendUint16(b, 0)
	b = be.AppendUint16(b, typ)
	b = be.AppendUint64(b, n.id)
	b = be.AppendUint64(b, uint64(off))
	b = be.AppendUint32(b, length)
	n.c.SetDeadline(time.Now().Add(crashIOTimout))
	if _, err := n.c.Write(append(b, payload...)); err != nil {
		return err
	}
	h := make([]byte, 16)
	if _, err := io.ReadFull(n.br, h); err != nil {
		return err
	}
	if be.Uint32(h) != 0x67446698 || be.Uint64(h[8:]) != n.id {
		return fmt.Errorf("bad reply header % x", h)
	}
	if e := be.Uint32(h[4:]); e != 0 {
		return fmt.Errorf("NBD error %d", e)
	}
	return nil
}

func (n *nbdConn) write(off int64, p []byte) error {
	return n.request(1, off, uint32(len(p)), p)
}

func (n *nbdConn) read(off int64, length int) ([]byte, error) {
	if err := n.request(0, off, uint32(length), nil); err != nil {
		return nil, err
	}
	p := make([]byte, length)
	_, err := io.ReadFull(n.br, p)
	return p, err
}
