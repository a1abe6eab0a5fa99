package nbd

import (
	"encoding/binary"
	"io"
)

func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }
func be32(b []byte) uint32 { return binary.BigEndian.Uint32(b) }
func be64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

func put16(b []byte, v uint16) { binary.BigEndian.PutUint16(b, v) }
func put32(b []byte, v uint32) { binary.BigEndian.PutUint32(b, v) }
func put64(b []byte, v uint64) { binary.BigEndian.PutUint64(b, v) }

// readFull reads exactly len(b) bytes from r (io.ReadFull).
func readFull(r io.Reader, b []byte) (int, error) { return io.ReadFull(r, b) }

func putGreeting(b []byte) {
	put64(b[0:], nbdMagic)
	put64(b[8:], optMagic)
	put16(b[16:], flagFixedNewstyle|flagNoZeroes)
}

func putOptReplyHeader(b []byte, opt, typ, length uint32) {
	put64(b[0:], optReplyMagic)
	put32(b[8:], opt)
	put32(b[12:], typ)
	put32(b[16:], length)
}

// putSimpleReply writes a 16-byte simple reply header.
func putSimpleReply(b []byte, errno uint32, cookie uint64) {
	put32(b[0:], simpleMagic)
	put32(b[4:], errno)
	put64(b[8:], cookie)
}

// putChunkHeader writes a 20-byte structured reply chunk header.
func putChunkHeader(b []byte, flags, typ uint16, cookie uint64, length uint32) {
	put32(b[0:], structMagic)
	put16(b[4:], flags)
	put16(b[6:], typ)
	put64(b[8:], cookie)
	put32(b[16:], length)
}

// request is a decoded 28-byte transmission request header.
type requestHeader struct {
	magic  uint32
	flags  uint16
	typ    uint16
	cookie uint64
	offset uint64
	length uint32
}

func parseRequestHeader(b []byte) requestHeader {
	return requestHeader{
		magic:  be32(b[0:]),
		flags:  be16(b[4:]),
		typ:    be16(b[6:]),
		cookie: be64(b[8:]),
		offset: be64(b[16:]),
		length: be32(b[24:]),
	}
}

// skip discards n bytes from r through scratch.
func skip(r io.Reader, n int64, scratch []byte) error {
	for n > 0 {
		k := int64(len(scratch))
		if k > n {
			k = n
		}
		if _, err := io.ReadFull(r, scratch[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}
