package nbd

import "context"

// PinReader is an optional interface of an Export whose data already sits
// in memory (a RAM volume; later, cached segments): the server then sends
// READ data straight from the export's memory with writev instead of
// copying it into a reply buffer first, which saves one memory copy of
// every byte read. Exports that do not implement it are read with ReadAt.
//
// The server calls PinRead for the same validated ranges it would pass to
// ReadAt, concurrently, from any goroutine.
type PinReader interface {
	// PinRead appends to iov slices which, in order, hold the data at
	// [off, off+length), and returns them with the Pin that keeps them
	// valid. The slices' contents must not change until the server calls
	// Pin.Release, which it does exactly once, after the reply has been
	// handed to the socket (or dropped); the server only reads them. The
	// Pin may be nil when nothing needs releasing. On error PinRead pins
	// nothing, and the server ignores the returned slices.
	PinRead(ctx context.Context, off, length int64, iov [][]byte) ([][]byte, Pin, error)
}

// Pin keeps the memory handed out by one PinRead call unchanged.
type Pin interface {
	// Release lets the memory go. Called exactly once per Pin.
	Release()
}
