package nvlog

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Limits and defaults.
const (
	// DefaultMaxEntryBytes is the default bound on one entry: the largest
	// NBD write (32 MiB of payload) plus 1 MiB for its facts and cblock
	// headers.
	DefaultMaxEntryBytes = 33 << 20
	// HardMaxEntryBytes is the largest MaxEntryBytes accepted. Batch
	// lengths are 32-bit on the device; this keeps every batch well inside.
	HardMaxEntryBytes = 256 << 20
	// DefaultMaxBatchBytes is the default bound on a batch (header and
	// entries, before padding). A single entry larger than this still
	// goes, alone in its batch.
	DefaultMaxBatchBytes = 1 << 20
	// MinMaxBatchBytes and HardMaxBatchBytes bound Options.MaxBatchBytes.
	MinMaxBatchBytes  = 4096
	HardMaxBatchBytes = 256 << 20
	// ackLists is how many batches' acknowledgement lists exist: one for
	// the open batch, one for the batch being written, the rest queued for
	// the completion goroutine. When they are all queued the writer waits,
	// which bounds how far the device may run ahead of done callbacks.
	ackLists = 8
)

// Error classes; test with errors.Is.
var (
	// ErrNotFormatted means the device holds no valid superblock.
	ErrNotFormatted = errors.New("nvlog: no log on device")
	// ErrFormatted means Format found a valid log and Options.Force was
	// not set.
	ErrFormatted = errors.New("nvlog: device already holds a log")
	// ErrIdentity means the log on the device belongs to another array
	// (its UUID differs from Options.UUID).
	ErrIdentity = errors.New("nvlog: log belongs to another array")
	// ErrCorrupt means the device contradicts what the log made durable:
	// a batch that was acknowledged (or was valid at Open) cannot be read
	// back intact.
	ErrCorrupt = errors.New("nvlog: log corrupt")
	// ErrEntryTooLarge means an entry exceeds MaxEntryBytes or can never
	// fit in the log region. It is returned at once, never after waiting.
	ErrEntryTooLarge = errors.New("nvlog: entry too large")
	// ErrFailed means the log stopped after a device write or sync failed.
	// After a failed sync nothing is known about what reached the medium
	// (a later sync may report success for pages the kernel or device
	// already dropped), so the log refuses every later Commit and Trim.
	// Close it and Open the device again: recovery reads what is really
	// there. The error also wraps the device's error.
	ErrFailed = errors.New("nvlog: log failed")
	// ErrClosed means the log was used after Close.
	ErrClosed = errors.New("nvlog: log closed")
	// ErrTrimRange means Trim was asked to trim entries that are not
	// durable yet.
	ErrTrimRange = errors.New("nvlog: trim beyond durable entries")
	// ErrOptions means Options are invalid.
	ErrOptions = errors.New("nvlog: invalid options")
)

// Options configure Format and Open. The zero value, plus a UUID, is
// valid.
type Options struct {
	// UUID is the array's identity. Format stores it; Open refuses a log
	// that holds another one (ErrIdentity). It must not be all zeros.
	UUID [16]byte

	// Logger receives recovery summaries and failures; default
	// slog.Default().
	Logger *slog.Logger

	// CrashHook, if set, is called synchronously at each named step of the
	// commit, trim, format and open protocols with one of the Crash*
	// constants. Tests cut power there. It may be called from several
	// goroutines at once (the writer, the completion goroutine, Trim's
	// caller) and must not call back into the Log.
	CrashHook func(point string)

	// MaxEntryBytes bounds len(entry); larger entries fail at once with
	// ErrEntryTooLarge. Default DefaultMaxEntryBytes, at most
	// HardMaxEntryBytes. An entry must also fit, alone in a batch, in the
	// log region.
	MaxEntryBytes int

	// MaxBatchBytes bounds a batch's header and entries: an entry that
	// would push the open batch past it waits for the next batch. Default
	// DefaultMaxBatchBytes, within [MinMaxBatchBytes, HardMaxBatchBytes];
	// Open lowers it to the region size. Memory: the log holds two batch
	// buffers of this size (larger while a larger single entry passes).
	MaxBatchBytes int

	// MaxDelay, if positive, lets a batch wait up to this long after its
	// first entry for more entries before it is written (unless it fills
	// up first). The default 0 writes a batch as soon as the previous
	// batch's sync returns, which already groups every entry that arrived
	// during that sync.
	MaxDelay time.Duration

	// FirstSeq is the seq of the first entry of a freshly formatted log
	// (Format only; default 1). An engine that replaces its NVRAM sets it
	// above every seq it has used, so seqs keep increasing.
	FirstSeq uint64

	// Force lets Format overwrite a device that already holds a valid
	// log (Format only). Unsafe: everything in the old log is lost.
	Force bool
}

// withDefaults validates o and fills in defaults.
func (o Options) withDefaults() (Options, error) {
	if o.UUID == [16]byte{} {
		return o, fmt.Errorf("%w: UUID is all zeros", ErrOptions)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	switch {
	case o.MaxEntryBytes == 0:
		o.MaxEntryBytes = DefaultMaxEntryBytes
	case o.MaxEntryBytes < 0 || o.MaxEntryBytes > HardMaxEntryBytes:
		return o, fmt.Errorf("%w: MaxEntryBytes %d outside [1, %d]", ErrOptions, o.MaxEntryBytes, HardMaxEntryBytes)
	}
	switch {
	case o.MaxBatchBytes == 0:
		o.MaxBatchBytes = DefaultMaxBatchBytes
	case o.MaxBatchBytes < MinMaxBatchBytes || o.MaxBatchBytes > HardMaxBatchBytes:
		return o, fmt.Errorf("%w: MaxBatchBytes %d outside [%d, %d]", ErrOptions, o.MaxBatchBytes, MinMaxBatchBytes, HardMaxBatchBytes)
	}
	if o.MaxDelay < 0 {
		return o, fmt.Errorf("%w: MaxDelay %v is negative", ErrOptions, o.MaxDelay)
	}
	switch {
	case o.FirstSeq == 0:
		o.FirstSeq = 1
	case o.FirstSeq >= 1<<62:
		return o, fmt.Errorf("%w: FirstSeq %d too large", ErrOptions, o.FirstSeq)
	}
	return o, nil
}

// Crash points, in protocol order. CrashHook receives one of these.
const (
	// CrashFormatFirstCopy: Format has written and synced the first
	// superblock copy, not the second.
	CrashFormatFirstCopy = "format-first-copy"
	// CrashOpenTailCleared: Open has overwritten the header positions
	// after the recovered tail (so a torn batch there can never come back)
	// but not synced.
	CrashOpenTailCleared = "open-tail-cleared"
	// CrashOpenSessionWritten: Open has synced the cleared tail and
	// written the superblock copy that starts its session, not synced it.
	CrashOpenSessionWritten = "open-session-written"
	// CrashBatchSealed: a batch is assembled and checksummed, nothing of
	// it written.
	CrashBatchSealed = "batch-sealed"
	// CrashBatchWritten: the batch write returned, not synced.
	CrashBatchWritten = "batch-written"
	// CrashBatchSynced: the batch is durable, no committer told yet.
	CrashBatchSynced = "batch-synced"
	// CrashBatchAcked: every committer of the batch has been told.
	CrashBatchAcked = "batch-acked"
	// CrashSuperblockWritten: a superblock copy (trim point, or the
	// rewind of an empty log) is written, not synced.
	CrashSuperblockWritten = "superblock-written"
	// CrashSuperblockSynced: the superblock copy is durable, its space not
	// yet handed to the writer.
	CrashSuperblockSynced = "superblock-synced"
	// CrashTrimApplied: Trim has freed the space in memory and is about to
	// return; the writer may reuse the space from now on.
	CrashTrimApplied = "trim-applied"
)

// CrashPoints lists every crash point.
var CrashPoints = []string{
	CrashFormatFirstCopy,
	CrashOpenTailCleared,
	CrashOpenSessionWritten,
	CrashBatchSealed,
	CrashBatchWritten,
	CrashBatchSynced,
	CrashBatchAcked,
	CrashSuperblockWritten,
	CrashSuperblockSynced,
	CrashTrimApplied,
}
