package nbd

// Wire constants of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md).
// Everything on the wire is big-endian.
const (
	nbdMagic       = 0x4e42444d41474943 // "NBDMAGIC"
	optMagic       = 0x49484156454F5054 // "IHAVEOPT"
	optReplyMagic  = 0x3e889045565a9
	requestMagic   = 0x25609513
	simpleMagic    = 0x67446698
	structMagic    = 0x668e33ef
	extRequestMagc = 0x21e41c71 // extended headers; never negotiated here
)

// Handshake flags (server, u16) and client flags (u32).
const (
	flagFixedNewstyle = 1 << 0
	flagNoZeroes      = 1 << 1

	clientFixedNewstyle = 1 << 0
	clientNoZeroes      = 1 << 1
	clientKnownFlags    = clientFixedNewstyle | clientNoZeroes
)

// Options.
const (
	optExportName      = 1
	optAbort           = 2
	optList            = 3
	optPeekExport      = 4
	optStartTLS        = 5
	optInfo            = 6
	optGo              = 7
	optStructuredReply = 8
	optListMetaContext = 9
	optSetMetaContext  = 10
	optExtendedHeaders = 11
)

// Option replies.
const (
	repAck           = 1
	repServer        = 2
	repInfo          = 3
	repMetaContext   = 4
	repErrUnsup      = 1<<31 + 1
	repErrPolicy     = 1<<31 + 2
	repErrInvalid    = 1<<31 + 3
	repErrPlatform   = 1<<31 + 4
	repErrTLSReqd    = 1<<31 + 5
	repErrUnknown    = 1<<31 + 6
	repErrShutdown   = 1<<31 + 7
	repErrBlockSize  = 1<<31 + 8
	repErrTooBig     = 1<<31 + 9
	repErrExtHdrReqd = 1<<31 + 10
)

// NBD_INFO_* types.
const (
	infoExport      = 0
	infoName        = 1
	infoDescription = 2
	infoBlockSize   = 3
)

// Transmission flags (u16).
const (
	tflagHasFlags        = 1 << 0
	tflagReadOnly        = 1 << 1
	tflagSendFlush       = 1 << 2
	tflagSendFUA         = 1 << 3
	tflagRotational      = 1 << 4
	tflagSendTrim        = 1 << 5
	tflagSendWriteZeroes = 1 << 6
	tflagSendDF          = 1 << 7
	tflagCanMultiConn    = 1 << 8
	tflagSendCache       = 1 << 10
	tflagSendFastZero    = 1 << 11
)

// Commands.
const (
	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdCache       = 5
	cmdWriteZeroes = 6
	cmdBlockStatus = 7
	numCommands    = 8
)

// Command flags (u16).
const (
	cmdFlagFUA      = 1 << 0
	cmdFlagNoHole   = 1 << 1
	cmdFlagDF       = 1 << 2
	cmdFlagReqOne   = 1 << 3
	cmdFlagFastZero = 1 << 4
)

// Structured reply chunk types and flags.
const (
	replyFlagDone = 1 << 0

	chunkNone        = 0
	chunkOffsetData  = 1
	chunkOffsetHole  = 2
	chunkBlockStatus = 5
	chunkError       = 32769
)

// NBD error values.
const (
	errPerm     = 1
	errIO       = 5
	errNoMem    = 12
	errInval    = 22
	errNoSpc    = 28
	errOverflow = 75
	errNotSup   = 95
	errShutdown = 108
)

// Sizes of fixed wire structures, in bytes.
const (
	greetingLen       = 18
	optHeaderLen      = 16
	optReplyHeaderLen = 20
	requestLen        = 28
	simpleReplyLen    = 16
	chunkHeaderLen    = 20
	maxStringLen      = 4096 // export names, messages, context names
)

// metaContextBaseAllocation is the only metadata context we serve.
const metaContextBaseAllocation = "base:allocation"

// baseAllocationID is the opaque id the server gives base:allocation.
const baseAllocationID = 1

var commandNames = [numCommands]string{"read", "write", "disc", "flush", "trim", "cache", "write_zeroes", "block_status"}

func optionName(opt uint32) string {
	switch opt {
	case optExportName:
		return "EXPORT_NAME"
	case optAbort:
		return "ABORT"
	case optList:
		return "LIST"
	case optPeekExport:
		return "PEEK_EXPORT"
	case optStartTLS:
		return "STARTTLS"
	case optInfo:
		return "INFO"
	case optGo:
		return "GO"
	case optStructuredReply:
		return "STRUCTURED_REPLY"
	case optListMetaContext:
		return "LIST_META_CONTEXT"
	case optSetMetaContext:
		return "SET_META_CONTEXT"
	case optExtendedHeaders:
		return "EXTENDED_HEADERS"
	}
	return "unknown"
}

// errnoName names an NBD error value for stats and logs.
func errnoName(e uint32) string {
	switch e {
	case errPerm:
		return "EPERM"
	case errIO:
		return "EIO"
	case errNoMem:
		return "ENOMEM"
	case errInval:
		return "EINVAL"
	case errNoSpc:
		return "ENOSPC"
	case errOverflow:
		return "EOVERFLOW"
	case errNotSup:
		return "ENOTSUP"
	case errShutdown:
		return "ESHUTDOWN"
	}
	return "E?"
}

// errnoIndex maps an error value to a slot of the per-error counters.
var errnoList = [...]uint32{errPerm, errIO, errNoMem, errInval, errNoSpc, errOverflow, errNotSup, errShutdown}

func errnoIndex(e uint32) int {
	for i, v := range errnoList {
		if v == e {
			return i
		}
	}
	return errIndexOther
}

const errIndexOther = len(errnoList)
