package nbd

import (
	"context"
	"errors"
	"syscall"
)

// sparseReadMin is the smallest READ answered sparsely: below it the
// Extents call costs more than sending the zeros.
const sparseReadMin = 64 << 10

// maxReadChunks bounds the content chunks of one sparse READ reply; the
// rest of the range goes out as data.
const maxReadChunks = 32

// Reply header space in a request: one 32-byte header per chunk, plus an
// error chunk with a message of up to maxErrMsg bytes.
const (
	maxErrMsg = 256
	hbufLen   = 32*(maxReadChunks+2) + chunkHeaderLen + 6 + maxErrMsg
)

// request is one transmission request and its reply. Requests are
// recycled through the connection's flow; nothing in one is allocated per
// I/O once the connection is warm.
type request struct {
	h      requestHeader
	errno  uint32
	msg    string
	bufp   *[]byte // pooled payload: WRITE data, READ data, BLOCK_STATUS descriptors
	data   []byte  // view into *bufp
	budget int64   // flow bytes held
	hbuf   []byte  // reply headers; fixed capacity hbufLen
	iov    [][]byte
	ext    []Extent // scratch for Export.Extents
	segs   []readSeg
	// pins keep the export memory that iov points into (PinReader)
	// unchanged; released with the request, after its reply is sent.
	pins []Pin
}

// maxKeptIov is the largest iov capacity a recycled request keeps: enough
// for a pinned 4 MiB READ in 4 KiB pages. Longer ones (pinned reads of up
// to 32 MiB) are dropped, so an occasional huge READ does not leave every
// request of the connection holding a large slice.
const maxKeptIov = 1040

// readSeg is one run of a sparse READ: data or zeros.
type readSeg struct {
	off, length int64
	zero        bool
}

func newRequest() *request {
	return &request{
		hbuf: make([]byte, 0, hbufLen),
		iov:  make([][]byte, 0, 2*maxReadChunks+4),
		ext:  make([]Extent, 0, 64),
		segs: make([]readSeg, 0, maxReadChunks+1),
		pins: make([]Pin, 0, maxReadChunks+1),
	}
}

// release returns r's payload buffer and clears its reply.
func (r *request) release() {
	if r.bufp != nil {
		putBuf(r.bufp)
		r.bufp = nil
	}
	r.data = nil
	for i, p := range r.pins {
		p.Release()
		r.pins[i] = nil
	}
	r.pins = r.pins[:0]
	if cap(r.iov) > maxKeptIov {
		r.iov = make([][]byte, 0, 2*maxReadChunks+4)
	}
	for i := range r.iov {
		r.iov[i] = nil
	}
	r.iov = r.iov[:0]
	r.hbuf = r.hbuf[:0]
	r.errno = 0
	r.msg = ""
}

func (r *request) replyLen() int {
	n := 0
	for _, b := range r.iov {
		n += len(b)
	}
	return n
}

// header appends n bytes to hbuf and returns them.
func (r *request) header(n int) []byte {
	k := len(r.hbuf)
	r.hbuf = r.hbuf[:k+n]
	return r.hbuf[k : k+n : k+n]
}

// fail sets r's reply to the error errno: a simple reply, or an ERROR
// chunk with msg when structured replies are on (the spec forbids a
// simple reply to READ then; qemu wants messages well under 1000 bytes).
func (c *conn) fail(r *request, errno uint32, msg string) {
	r.errno = errno
	r.msg = msg
	r.iov = r.iov[:0]
	r.hbuf = r.hbuf[:0]
	if !c.sr {
		b := r.header(simpleReplyLen)
		putSimpleReply(b, errno, r.h.cookie)
		r.iov = append(r.iov, b)
		return
	}
	if len(msg) > maxErrMsg {
		msg = msg[:maxErrMsg]
	}
	b := r.header(chunkHeaderLen + 6 + len(msg))
	putChunkHeader(b, replyFlagDone, chunkError, r.h.cookie, uint32(6+len(msg)))
	put32(b[20:], errno)
	put16(b[24:], uint16(len(msg)))
	copy(b[26:], msg)
	r.iov = append(r.iov, b)
}

// ok sets a payload-less success reply.
func (c *conn) ok(r *request) {
	b := r.header(simpleReplyLen)
	putSimpleReply(b, 0, r.h.cookie)
	r.iov = append(r.iov, b)
}

// errnoOf maps an export's error to an NBD error value.
func errnoOf(ctx context.Context, err error) uint32 {
	switch {
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EROFS):
		return errPerm
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EFBIG):
		return errNoSpc
	case errors.Is(err, syscall.EINVAL):
		return errInval
	case errors.Is(err, syscall.ENOTSUP):
		return errNotSup
	case errors.Is(err, syscall.EOVERFLOW):
		return errOverflow
	case errors.Is(err, syscall.ESHUTDOWN), ctx.Err() != nil:
		return errShutdown
	}
	return errIO
}

// exportError sets r's reply for an error returned by the export.
func (c *conn) exportError(r *request, err error) {
	errno := errnoOf(c.ctx, err)
	if errno == errNotSup && (r.h.typ != cmdWriteZeroes || r.h.flags&cmdFlagFastZero == 0) {
		// ENOTSUP is reserved for FAST_ZERO.
		errno = errIO
	}
	msg := err.Error()
	if len(msg) > maxErrMsg {
		msg = msg[:maxErrMsg]
	}
	if errno == errIO {
		c.log.Warn("nbd export error", "remote", c.remote, "export", c.info.Name, "command", commandNames[r.h.typ], "offset", r.h.offset, "length", r.h.length, "err", err)
	}
	c.fail(r, errno, msg)
}

// process performs a validated request and prepares its reply.
func (c *conn) process(r *request) {
	h := &r.h
	off, length := int64(h.offset), int64(h.length)
	fua := h.flags&cmdFlagFUA != 0
	var err error
	switch h.typ {
	case cmdRead:
		c.read(r)
		return
	case cmdBlockStatus:
		c.blockStatus(r)
		return
	case cmdWrite:
		if length > 0 {
			err = c.exp.WriteAt(c.ctx, r.data, off, fua)
		} else if fua {
			err = c.exp.Flush(c.ctx)
		}
	case cmdFlush:
		err = c.exp.Flush(c.ctx)
	case cmdTrim:
		if length > 0 {
			err = c.exp.Trim(c.ctx, off, length, fua)
		}
	case cmdWriteZeroes:
		if length > 0 {
			err = c.exp.WriteZeroes(c.ctx, off, length, ZeroFlags{
				NoHole:   h.flags&cmdFlagNoHole != 0,
				FastZero: h.flags&cmdFlagFastZero != 0,
				FUA:      fua,
			})
		}
	case cmdCache:
		if length > 0 {
			err = c.exp.Cache(c.ctx, off, length)
		}
	}
	if err != nil {
		c.exportError(r, err)
		return
	}
	c.ok(r)
}

// read performs a READ: a simple reply, one OFFSET_DATA chunk, or, when
// the export reports zero ranges, a mix of OFFSET_DATA and OFFSET_HOLE
// chunks so zeros never cross the wire. The data is pinned in the
// export's memory (PinReader) or copied into a pooled buffer.
func (c *conn) read(r *request) {
	h := &r.h
	off, length := int64(h.offset), int64(h.length)
	if length == 0 {
		if c.sr {
			b := r.header(chunkHeaderLen)
			putChunkHeader(b, replyFlagDone, chunkNone, h.cookie, 0)
			r.iov = append(r.iov, b)
		} else {
			c.ok(r)
		}
		return
	}
	if c.pinner == nil {
		r.bufp = getBuf(int(length))
		r.data = (*r.bufp)[:length]
	}
	if c.sr && length >= sparseReadMin && h.flags&cmdFlagDF == 0 && c.feat.Extents && !c.srv.opts.DenseReads && c.readSparse(r) {
		return
	}
	if !c.sr {
		b := r.header(simpleReplyLen)
		putSimpleReply(b, 0, h.cookie)
		r.iov = append(r.iov, b)
	} else {
		b := r.header(chunkHeaderLen + 8)
		putChunkHeader(b, replyFlagDone, chunkOffsetData, h.cookie, uint32(8+length))
		put64(b[20:], uint64(off))
		r.iov = append(r.iov, b)
	}
	if err := c.readData(r, off, length); err != nil {
		c.exportError(r, err)
	}
}

// readData appends to r.iov the data at [off, off+n), a part of r's
// range: views pinned in the export's memory, or a copy read into r.data.
func (c *conn) readData(r *request, off, n int64) error {
	if c.pinner != nil {
		iov, pin, err := c.pinner.PinRead(c.ctx, off, n, r.iov)
		if err != nil {
			return err
		}
		r.iov = iov
		if pin != nil {
			r.pins = append(r.pins, pin)
		}
		return nil
	}
	d := r.data[off-int64(r.h.offset):][:n]
	if err := c.exp.ReadAt(c.ctx, d, off); err != nil {
		return err
	}
	r.iov = append(r.iov, d)
	return nil
}

// readSparse tries a sparse READ. It returns false, having sent nothing,
// when the range is all data (or the export's extents are unusable), so
// the caller reads it whole.
func (c *conn) readSparse(r *request) bool {
	h := &r.h
	off, end := int64(h.offset), int64(h.offset)+int64(h.length)
	segs := r.segs[:0]
	pos := off
	for pos < end && len(segs) < maxReadChunks {
		ext, err := c.exp.Extents(c.ctx, pos, end-pos, r.ext[:0])
		r.ext = ext[:0]
		if err != nil || len(ext) == 0 {
			return false
		}
		for _, e := range ext {
			if pos >= end {
				break
			}
			l := min(e.Length, end-pos)
			if l <= 0 {
				return false
			}
			zero := e.Flags&ExtentZero != 0
			if k := len(segs); k > 0 && segs[k-1].zero == zero {
				segs[k-1].length += l
			} else {
				if k == maxReadChunks {
					break
				}
				segs = append(segs, readSeg{off: pos, length: l, zero: zero})
			}
			pos += l
		}
	}
	if pos < end {
		// Out of chunks: the rest goes as data.
		if k := len(segs); segs[k-1].zero {
			segs = append(segs, readSeg{off: pos, length: end - pos})
		} else {
			segs[k-1].length += end - pos
		}
	}
	r.segs = segs
	if len(segs) == 1 && !segs[0].zero {
		return false
	}
	for i, s := range segs {
		flags := uint16(0)
		if i == len(segs)-1 {
			flags = replyFlagDone
		}
		if s.zero {
			b := r.header(chunkHeaderLen + 12)
			putChunkHeader(b, flags, chunkOffsetHole, h.cookie, 12)
			put64(b[20:], uint64(s.off))
			put32(b[28:], uint32(s.length))
			r.iov = append(r.iov, b)
			continue
		}
		b := r.header(chunkHeaderLen + 8)
		putChunkHeader(b, flags, chunkOffsetData, h.cookie, uint32(8+s.length))
		put64(b[20:], uint64(s.off))
		r.iov = append(r.iov, b)
		if err := c.readData(r, s.off, s.length); err != nil {
			// One ERROR chunk replaces the whole reply; data pinned for
			// earlier chunks is released with the request.
			c.exportError(r, err)
			return true
		}
	}
	return true
}

// blockStatusMax is the descriptor limit of a BLOCK_STATUS request.
func (c *conn) blockStatusMax(h *requestHeader) int {
	if h.flags&cmdFlagReqOne != 0 {
		return 1
	}
	return c.srv.opts.MaxExtents
}

// blockStatusBufLen is the payload buffer a BLOCK_STATUS reply needs.
func (c *conn) blockStatusBufLen(h *requestHeader) int {
	return 4 + 8*c.blockStatusMax(h)
}

// blockStatus answers BLOCK_STATUS for base:allocation: one chunk,
// coalesced descriptors clipped to the request, at most one with REQ_ONE.
func (c *conn) blockStatus(r *request) {
	h := &r.h
	pos, end := int64(h.offset), int64(h.offset)+int64(h.length)
	maxDesc := c.blockStatusMax(h)
	r.bufp = getBuf(c.blockStatusBufLen(h))
	buf := *r.bufp
	put32(buf, baseAllocationID)
	n := 0
	var last uint32
	for pos < end {
		ext, err := c.exp.Extents(c.ctx, pos, end-pos, r.ext[:0])
		r.ext = ext[:0]
		if err != nil {
			c.exportError(r, err)
			return
		}
		if len(ext) == 0 {
			c.fail(r, errIO, "export returned no extents")
			return
		}
		full := false
		for _, e := range ext {
			if pos >= end {
				break
			}
			l := min(e.Length, end-pos)
			if l <= 0 {
				c.fail(r, errIO, "export returned an empty extent")
				return
			}
			flags := uint32(e.Flags) & uint32(ExtentHole|ExtentZero)
			if n > 0 && flags == last {
				d := buf[4+8*(n-1):]
				put32(d, be32(d)+uint32(l))
			} else {
				if n == maxDesc {
					full = true
					break
				}
				d := buf[4+8*n:]
				put32(d, uint32(l))
				put32(d[4:], flags)
				last = flags
				n++
			}
			pos += l
		}
		if full {
			break
		}
	}
	payload := buf[:4+8*n]
	b := r.header(chunkHeaderLen)
	putChunkHeader(b, replyFlagDone, chunkBlockStatus, h.cookie, uint32(len(payload)))
	r.iov = append(r.iov, b, payload)
}
