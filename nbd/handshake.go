package nbd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"
)

// Reasons a negotiation ends without transmission, used as close reasons.
var (
	errClientAbort        = errors.New("client sent ABORT")
	errServerShuttingDown = errors.New("server shutting down")
)

// negotiate runs the fixed newstyle handshake. It returns nil once the
// connection has entered transmission (c.exp set), or the reason the
// connection must be closed.
func (c *conn) negotiate() error {
	o := &c.srv.opts
	c.raw.SetDeadline(time.Now().Add(o.HandshakeTimeout))
	var g [greetingLen]byte
	putGreeting(g[:])
	if _, err := c.nc.Write(g[:]); err != nil {
		return fmt.Errorf("writing greeting: %w", err)
	}
	var cf [4]byte
	if _, err := readFull(c.br, cf[:]); err != nil {
		return fmt.Errorf("reading client flags: %w", err)
	}
	flags := be32(cf[:])
	if flags&^clientKnownFlags != 0 {
		return fmt.Errorf("unknown client flags %#x", flags)
	}
	// We always advertise NO_ZEROES, so C_NO_ZEROES is always acceptable.
	c.fixed = flags&clientFixedNewstyle != 0
	c.noZeroes = flags&clientNoZeroes != 0
	if !c.fixed && o.TLSMode == TLSRequire {
		return errors.New("client is not fixed newstyle, so it cannot start the TLS the server requires")
	}
	var h [optHeaderLen]byte
	for {
		if _, err := readFull(c.br, h[:]); err != nil {
			return fmt.Errorf("reading option: %w", err)
		}
		if m := be64(h[:]); m != optMagic {
			return fmt.Errorf("bad option magic %#x", m)
		}
		opt, length := be32(h[8:]), be32(h[12:])
		c.nopts++
		if c.nopts > o.MaxOptions {
			return fmt.Errorf("more than %d options", o.MaxOptions)
		}
		if int64(length) > int64(o.MaxOptionBytes) {
			if opt == optExportName {
				return fmt.Errorf("EXPORT_NAME of %d bytes", length)
			}
			if int64(length) > 16*int64(o.MaxOptionBytes) {
				return fmt.Errorf("option %s with %d bytes of data", optionName(opt), length)
			}
			if err := skip(c.br, int64(length), c.scratch()); err != nil {
				return fmt.Errorf("skipping option data: %w", err)
			}
			if err := c.optError(opt, repErrTooBig, "option data too large"); err != nil {
				return err
			}
			continue
		}
		if cap(c.optBuf) < int(length) {
			c.optBuf = make([]byte, length)
		}
		data := c.optBuf[:length]
		if _, err := readFull(c.br, data); err != nil {
			return fmt.Errorf("reading option data: %w", err)
		}
		enter, err := c.handleOption(opt, data)
		if err != nil || enter {
			return err
		}
	}
}

// handleOption answers one option. enter reports that transmission
// begins; err that the connection must close.
func (c *conn) handleOption(opt uint32, data []byte) (enter bool, err error) {
	o := &c.srv.opts
	if c.srv.closing.Load() && opt != optAbort {
		if opt == optExportName {
			return false, errServerShuttingDown
		}
		return false, c.optError(opt, repErrShutdown, "server is shutting down")
	}
	if o.TLSMode == TLSRequire && !c.tls {
		switch opt {
		case optStartTLS, optAbort:
		case optExportName:
			return false, errors.New("EXPORT_NAME before the required TLS")
		default:
			return false, c.optError(opt, repErrTLSReqd, "TLS is required: send STARTTLS first")
		}
	}
	switch opt {
	case optExportName:
		return c.optExportName(data)
	case optAbort:
		// The client may close without reading the ACK; ignore errors.
		c.optReply(opt, repAck, nil)
		return false, errClientAbort
	case optList:
		return false, c.optList(data)
	case optStartTLS:
		return false, c.optStartTLS(data)
	case optInfo, optGo:
		return c.optInfoGo(opt, data)
	case optStructuredReply:
		if len(data) != 0 {
			return false, c.optError(opt, repErrInvalid, "STRUCTURED_REPLY takes no data")
		}
		c.sr = true
		return false, c.optReply(opt, repAck, nil)
	case optListMetaContext, optSetMetaContext:
		return false, c.optMetaContext(opt, data)
	default:
		// EXTENDED_HEADERS, PEEK_EXPORT and anything unknown.
		return false, c.optError(opt, repErrUnsup, "option not supported")
	}
}

// optReply sends one option reply.
func (c *conn) optReply(opt, typ uint32, payload []byte) error {
	b := c.obuf[:0]
	b = append(b, make([]byte, optReplyHeaderLen)...)
	putOptReplyHeader(b, opt, typ, uint32(len(payload)))
	b = append(b, payload...)
	c.obuf = b
	if _, err := c.nc.Write(b); err != nil {
		return fmt.Errorf("writing option reply: %w", err)
	}
	return nil
}

// optError sends an error reply carrying msg for the user.
func (c *conn) optError(opt, typ uint32, msg string) error {
	c.optErrors++
	return c.optReply(opt, typ, []byte(msg))
}

func (c *conn) optExportName(data []byte) (bool, error) {
	if len(data) > maxNameLen {
		return false, fmt.Errorf("EXPORT_NAME of %d bytes", len(data))
	}
	exp, info, ok := c.srv.opts.Exports.Lookup(string(data))
	if !ok {
		return false, fmt.Errorf("EXPORT_NAME for unknown export %q", data)
	}
	c.enter(exp, info)
	b := make([]byte, 10, 10+124)
	put64(b, uint64(c.size))
	put16(b[8:], c.tflags)
	if !c.noZeroes {
		b = append(b, make([]byte, 124)...)
	}
	if _, err := c.nc.Write(b); err != nil {
		return false, fmt.Errorf("writing EXPORT_NAME reply: %w", err)
	}
	return true, nil
}

func (c *conn) optList(data []byte) error {
	if len(data) != 0 {
		return c.optError(optList, repErrInvalid, "LIST takes no data")
	}
	for _, e := range c.srv.opts.Exports.List() {
		p := make([]byte, 4, 4+len(e.Name)+len(e.Description))
		put32(p, uint32(len(e.Name)))
		p = append(p, e.Name...)
		p = append(p, e.Description...)
		if err := c.optReply(optList, repServer, p); err != nil {
			return err
		}
	}
	return c.optReply(optList, repAck, nil)
}

func (c *conn) optStartTLS(data []byte) error {
	o := &c.srv.opts
	if o.TLSMode == TLSOff || !c.fixed {
		return c.optError(optStartTLS, repErrPolicy, "TLS is not enabled on this server")
	}
	if len(data) != 0 {
		return c.optError(optStartTLS, repErrInvalid, "STARTTLS takes no data")
	}
	if c.tls {
		return c.optError(optStartTLS, repErrInvalid, "TLS is already active")
	}
	if err := c.optReply(optStartTLS, repAck, nil); err != nil {
		return err
	}
	if c.br.Buffered() != 0 {
		return errors.New("client sent plaintext after STARTTLS")
	}
	tc := tls.Server(c.raw, o.TLSConfig)
	ctx, cancel := context.WithTimeout(c.ctx, o.HandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	c.nc = tc
	c.br.Reset(tc)
	c.tls = true
	// Everything negotiated in plaintext is forgotten (spec: STARTTLS).
	c.sr = false
	c.metaSet = false
	c.metaExport = ""
	return nil
}

func (c *conn) optInfoGo(opt uint32, data []byte) (bool, error) {
	if len(data) < 6 {
		return false, c.optError(opt, repErrInvalid, "option data too short")
	}
	nl := be32(data)
	if int64(nl) > int64(len(data)-6) {
		return false, c.optError(opt, repErrInvalid, "export name length exceeds option length")
	}
	if nl > maxNameLen {
		return false, c.optError(opt, repErrInvalid, "export name longer than 4096 bytes")
	}
	name := string(data[4 : 4+nl])
	n := int(be16(data[4+nl:]))
	reqs := data[6+nl:]
	if len(reqs) != 2*n {
		return false, c.optError(opt, repErrInvalid, "information request count does not match option length")
	}
	var wantName, wantDesc, wantBlockSize bool
	for i := 0; i < n; i++ {
		switch be16(reqs[2*i:]) {
		case infoName:
			wantName = true
		case infoDescription:
			wantDesc = true
		case infoBlockSize:
			wantBlockSize = true
		}
	}
	exp, info, ok := c.srv.opts.Exports.Lookup(name)
	if !ok {
		return false, c.optError(opt, repErrUnknown, "unknown export")
	}
	feat := exp.Features()
	size := exp.Size()
	flags := transmissionFlags(feat, c.sr)

	p := make([]byte, 12, 64)
	put16(p, infoExport)
	put64(p[2:], uint64(size))
	put16(p[10:], flags)
	if err := c.optReply(opt, repInfo, p); err != nil {
		return false, err
	}
	if wantName {
		p = append(p[:2], info.Name...)
		put16(p, infoName)
		if err := c.optReply(opt, repInfo, p); err != nil {
			return false, err
		}
	}
	if wantDesc && info.Description != "" {
		p = append(p[:2], info.Description...)
		put16(p, infoDescription)
		if err := c.optReply(opt, repInfo, p); err != nil {
			return false, err
		}
	}
	bmin, bpref, bmax := blockSizes(feat.BlockSize, c.srv.opts.MaxPayload)
	if !wantBlockSize {
		// The client has not promised to honour constraints; tell it
		// min 1 and answer misaligned requests with EINVAL.
		bmin = 1
	}
	p = p[:14]
	put16(p, infoBlockSize)
	put32(p[2:], bmin)
	put32(p[6:], bpref)
	put32(p[10:], bmax)
	if err := c.optReply(opt, repInfo, p); err != nil {
		return false, err
	}
	if err := c.optReply(opt, repAck, nil); err != nil {
		return false, err
	}
	if opt == optInfo {
		return false, nil
	}
	c.enter(exp, info)
	return true, nil
}

func (c *conn) optMetaContext(opt uint32, data []byte) error {
	set := opt == optSetMetaContext
	if set {
		// SET replaces the previous selection even when it fails.
		c.metaSet = false
		c.metaExport = ""
	}
	bad := func(msg string) error { return c.optError(opt, repErrInvalid, msg) }
	if len(data) < 8 {
		return bad("option data too short")
	}
	nl := be32(data)
	if int64(nl) > int64(len(data)-8) {
		return bad("export name length exceeds option length")
	}
	if nl > maxNameLen {
		return bad("export name longer than 4096 bytes")
	}
	name := string(data[4 : 4+nl])
	p := 4 + int(nl)
	nq := be32(data[p:])
	p += 4
	var all, wantAlloc bool
	if nq == 0 {
		all = true
	}
	for i := uint32(0); i < nq; i++ {
		if len(data)-p < 4 {
			return bad("query count exceeds option length")
		}
		ql := be32(data[p:])
		p += 4
		if int64(ql) > int64(len(data)-p) {
			return bad("query length exceeds option length")
		}
		if ql > maxStringLen {
			return bad("query longer than 4096 bytes")
		}
		q := string(data[p : p+int(ql)])
		p += int(ql)
		switch {
		case q == metaContextBaseAllocation:
			wantAlloc = true
		case q == "base:" && !set:
			// LIST with a bare namespace lists every context in it;
			// SET must ignore it.
			wantAlloc = true
		}
	}
	if p != len(data) {
		return bad("trailing bytes after queries")
	}
	if set && !c.sr {
		return bad("SET_META_CONTEXT needs structured replies first")
	}
	exp, info, ok := c.srv.opts.Exports.Lookup(name)
	if !ok {
		return c.optError(opt, repErrUnknown, "unknown export")
	}
	if all && set {
		// Zero queries in SET select nothing.
		all = false
	}
	if (wantAlloc || all) && exp.Features().Extents {
		id := uint32(0)
		if set {
			id = baseAllocationID
		}
		r := make([]byte, 4, 4+len(metaContextBaseAllocation))
		put32(r, id)
		r = append(r, metaContextBaseAllocation...)
		if err := c.optReply(opt, repMetaContext, r); err != nil {
			return err
		}
		if set {
			c.metaSet = true
			c.metaExport = info.Name
		}
	}
	return c.optReply(opt, repAck, nil)
}

// transmissionFlags computes the flags advertised for an export on one
// connection: exactly what feat supports, DF only with structured replies.
func transmissionFlags(feat Features, sr bool) uint16 {
	f := uint16(tflagHasFlags)
	if feat.ReadOnly {
		f |= tflagReadOnly
	}
	if feat.Flush {
		f |= tflagSendFlush | tflagSendFUA
	}
	if feat.Trim && !feat.ReadOnly {
		f |= tflagSendTrim
	}
	if feat.WriteZeroes && !feat.ReadOnly {
		f |= tflagSendWriteZeroes
		if feat.FastZero {
			f |= tflagSendFastZero
		}
	}
	if sr {
		f |= tflagSendDF
	}
	if feat.MultiConn {
		f |= tflagCanMultiConn
	}
	if feat.Cache {
		f |= tflagSendCache
	}
	return f
}

// blockSizes sanitizes an export's constraints into values every client
// accepts: min a power of two up to 64 KiB, preferred a power of two at
// least max(min, 512), max a multiple of min between preferred and
// maxPayload.
func blockSizes(bs BlockSize, maxPayload int) (bmin, bpref, bmax uint32) {
	bmin = bs.Min
	if bmin == 0 || bmin&(bmin-1) != 0 || bmin > 64<<10 {
		bmin = 1
	}
	bpref = bs.Preferred
	if bpref == 0 {
		bpref = defaultPreferredBlockSize
	}
	if bpref&(bpref-1) != 0 {
		bpref = 1 << bitsLen(bpref)
	}
	bpref = max(bpref, bmin, 512)
	bmax = bs.Max
	if bmax == 0 || bmax > uint32(maxPayload) {
		bmax = uint32(maxPayload)
	}
	bmax = max(bmax, bpref)
	bmax -= bmax % bmin
	return bmin, bpref, bmax
}

func bitsLen(v uint32) uint {
	n := uint(0)
	for v != 0 {
		n++
		v >>= 1
	}
	return n
}
