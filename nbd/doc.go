// Package nbd is the server side of the Network Block Device protocol
// (NetworkBlockDevice/nbd doc/proto.md). It serves anything that
// implements Export and knows nothing of storage.
//
// # Handshake
//
// Fixed newstyle only, with NO_ZEROES. Options: EXPORT_NAME (124 zero bytes
// unless both sides set NO_ZEROES; an unknown export closes the
// connection), ABORT, LIST (one NBD_REP_SERVER per export, with its
// description), INFO and GO (NBD_INFO_EXPORT always, NAME and DESCRIPTION
// when asked, BLOCK_SIZE always: the export's real minimum only when the
// client asked for BLOCK_SIZE, 1 otherwise, as qemu's server does),
// STRUCTURED_REPLY, LIST_META_CONTEXT and SET_META_CONTEXT with the single
// context base:allocation, and STARTTLS (crypto/tls, X.509). Everything
// else, EXTENDED_HEADERS included, is answered NBD_REP_ERR_UNSUP after its
// data is read, so the stream stays in sync.
//
// # Transmission
//
//	reader goroutine ──work──▶ workers (≤ MaxInFlight, started on demand)
//	      │ validation errors            │ replies
//	      └──────────────▶ reply queue ◀─┘ ──▶ one writer at a time (writev)
//
// The reader decodes and validates each request (and reads a WRITE's
// payload), the workers call the Export concurrently, and replies go out
// in completion order. A goroutine that queues a reply while no write is in
// progress becomes the writer and sends everything queued, each reply
// (header and payload) whole and usually several replies per writev, until
// the queue is empty (flat combining: no writer goroutine to wake per
// reply). A connection holds at most MaxInFlight requests and
// MaxInFlightBytes of payload; when it is full the reader stops reading the
// socket, which is the backpressure. Request structs and payload buffers
// are recycled (size-class pools), so steady-state I/O allocates nothing.
//
// An export whose Features say NonBlocking (a RAM volume) has its
// requests run on the reader itself (all but READs over 128 KiB), with
// their replies held until the reader would wait for the client and then
// sent in one writev; this saves the goroutine switches that dominate
// small I/O and large writes.
//
// READ data is copied into a pooled buffer with Export.ReadAt, unless the
// export implements PinReader (a RAM volume): then the reply's iovecs point
// into the export's own memory, pinned until the writer has handed them to
// the socket, and each byte read is copied once (by the kernel) instead of
// twice. Options.CopyReads turns this off.
//
// With structured replies, the zero ranges (Export.Extents) of a READ of
// 64 KiB or more are sent as OFFSET_HOLE chunks, unless DF is set; errors
// are ERROR chunks with a short message (qemu rejects non-data
// chunks over 1000 bytes). BLOCK_STATUS returns coalesced base:allocation
// descriptors, at most MaxExtents, exactly one with REQ_ONE.
//
// # Bad input
//
// Requests that can be answered are answered and the connection goes on:
// unknown command or flag, unadvertised command, DF/FAST_ZERO/REQ_ONE where
// they do not apply, misaligned or out-of-range requests, READ or WRITE
// over MaxPayload (a WRITE's payload is skipped) and BLOCK_STATUS without a
// metadata context get EINVAL; WRITE and WRITE_ZEROES past the end get
// ENOSPC; writes, trims and zeroes on a read-only export get EPERM (a
// WRITE's payload is still read). What cannot be answered closes the
// connection: a bad request or option magic, a WRITE payload over twice
// MaxPayload, an option longer than 16*MaxOptionBytes, more than MaxOptions
// options, EXPORT_NAME for an unknown export or before required TLS, a
// failed TLS handshake, and the handshake timeout.
//
// # Shutdown
//
// Server.Shutdown stops accepting, answers further options with
// NBD_REP_ERR_SHUTDOWN and further requests with ESHUTDOWN, waits for the
// requests in flight to be answered and closes each connection when it has
// none left.
package nbd
