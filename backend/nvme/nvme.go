//go:build linux

// Package nvme is the "nvme" backend: a drive is a raw block device (an
// NVMe namespace, a SATA or SAS disk, a partition, a loop device; anything
// under /dev that is a block device).
//
// The device is opened O_RDWR|O_DIRECT|O_EXCL. O_DIRECT bypasses the page
// cache: offsets, lengths and buffer addresses must be multiples of
// Alignment(), the device's logical block size (BLKSSZGET), so allocate
// buffers with backend.AlignedBuffer. O_EXCL makes the kernel refuse a
// device that is mounted, in use by the device mapper, md or another
// exclusive opener (including another open of this backend), and keeps
// them off it while it is open; a plain open by another program (dd, a
// partitioner) is not prevented, as nothing in Linux can prevent it.
//
// I/O is pread and pwrite. Sync is fdatasync, which flushes the drive's
// volatile write cache; Discard is BLKDISCARD (a no-op on devices that
// cannot discard, counted in Stats). The size is the device's
// (BLKGETSIZE64), or Spec.Size when set, which must not exceed it and then
// limits the usable part to the start of the device.
//
// There are no options.
package nvme

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"unsafe"

	"github.com/shalestore/shale/backend"
	"github.com/shalestore/shale/backend/internal/fdio"
	"golang.org/x/sys/unix"
)

// Name is the name the backend registers under.
const Name = "nvme"

func init() {
	backend.Register(Name, func(spec backend.Spec) (backend.Device, error) { return Open(spec) })
}

// ErrInUse means the kernel refused the exclusive open: the device is
// mounted or opened exclusively by another program (or by this one).
var ErrInUse = errors.New("in use")

// Stats are a device's counters since it was opened (Device.Stats).
type Stats = fdio.Stats

// Device is a drive on a raw block device.
type Device struct {
	*fdio.File
	// deviceSize is the whole device's size, of which Size() may be a
	// prefix.
	deviceSize int64
	physBlock  int
}

// DeviceSize returns the size of the whole block device, which is at least
// Size().
func (d *Device) DeviceSize() int64 { return d.deviceSize }

// PhysicalBlockSize returns the device's physical block size (BLKPBSZGET):
// writes smaller than it cost the drive a read-modify-write.
func (d *Device) PhysicalBlockSize() int { return d.physBlock }

// Open opens the block device spec describes. Errors name the path.
func Open(spec backend.Spec) (*Device, error) {
	if err := backend.UnknownOptions(spec.Options); err != nil {
		return nil, err
	}
	path := spec.Path
	if path == "" {
		return nil, errors.New("path: required for the nvme backend (a block device such as /dev/nvme0n1)")
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", path, unwrapPath(err))
	}
	if err := checkBlockDevice(path, st.Mode()); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_DIRECT|unix.O_EXCL, 0)
	if err != nil {
		switch errno := unwrapPath(err); {
		case errors.Is(errno, unix.EBUSY):
			return nil, fmt.Errorf("device %s is %w (mounted or opened by another program)", path, ErrInUse)
		case errors.Is(errno, unix.EACCES) || errors.Is(errno, unix.EPERM):
			return nil, fmt.Errorf("device %s: permission denied (run as root or as a member of the device's group)", path)
		case errors.Is(errno, unix.EROFS):
			return nil, fmt.Errorf("device %s is read-only", path)
		default:
			return nil, fmt.Errorf("device %s: %w", path, errno)
		}
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
		}
	}()
	// The path may have changed between stat and open (a udev rename);
	// check what was opened.
	if st, err := f.Stat(); err != nil {
		return nil, fmt.Errorf("device %s: %w", path, unwrapPath(err))
	} else if err := checkBlockDevice(path, st.Mode()); err != nil {
		return nil, err
	}

	fd := int(f.Fd())
	var devSize uint64
	if err := ioctlPtr(fd, unix.BLKGETSIZE64, unsafe.Pointer(&devSize)); err != nil {
		return nil, fmt.Errorf("device %s: BLKGETSIZE64: %w", path, err)
	}
	lbs, err := unix.IoctlGetInt(fd, unix.BLKSSZGET)
	if err != nil {
		return nil, fmt.Errorf("device %s: BLKSSZGET: %w", path, err)
	}
	pbs, err := unix.IoctlGetUint32(fd, unix.BLKPBSZGET)
	if err != nil {
		pbs = uint32(lbs)
	}
	if lbs < 512 || lbs > backend.MaxAlignment || lbs&(lbs-1) != 0 {
		return nil, fmt.Errorf("device %s: logical block size %d is not supported (a power of two from 512 to %d)", path, lbs, backend.MaxAlignment)
	}
	size := int64(devSize) / int64(lbs) * int64(lbs)
	if size <= 0 {
		return nil, fmt.Errorf("device %s is empty (size 0)", path)
	}
	switch {
	case spec.Size == 0:
	case spec.Size > size:
		return nil, fmt.Errorf("size: %d is larger than device %s (%d bytes)", spec.Size, path, size)
	case spec.Size%int64(lbs) != 0:
		return nil, fmt.Errorf("size: %d is not a multiple of device %s's logical block size %d", spec.Size, path, lbs)
	default:
		size = spec.Size
	}

	file, err := fdio.New(f, fdio.Config{
		Path:    path,
		Size:    size,
		Align:   lbs,
		Direct:  true,
		Kind:    spec.Kind,
		Discard: blkDiscard,
	})
	if err != nil {
		return nil, err
	}
	ok = true
	slog.Default().Debug("opened block device", "device", spec.Name, "path", path,
		"size", size, "device_size", devSize, "logical_block", lbs, "physical_block", pbs)
	return &Device{File: file, deviceSize: int64(devSize), physBlock: int(pbs)}, nil
}

// checkBlockDevice refuses anything but a block device, saying what it is
// and what to use instead.
func checkBlockDevice(path string, mode fs.FileMode) error {
	switch {
	case mode&fs.ModeDevice != 0 && mode&fs.ModeCharDevice == 0:
		return nil
	case mode.IsRegular():
		return fmt.Errorf("device %s is a regular file, not a block device: use the file backend for files", path)
	case mode&fs.ModeCharDevice != 0:
		return fmt.Errorf("device %s is a character device, not a block device (for NVMe use the namespace, e.g. /dev/nvme0n1, not the controller /dev/nvme0)", path)
	case mode.IsDir():
		return fmt.Errorf("device %s is a directory, not a block device", path)
	}
	return fmt.Errorf("device %s is not a block device (mode %v)", path, mode)
}

// blkDiscard is the nvme backend's discard: BLKDISCARD on [off, off+n).
func blkDiscard(fd uintptr, off, n int64) error {
	r := [2]uint64{uint64(off), uint64(n)}
	return ioctlPtr(int(fd), unix.BLKDISCARD, unsafe.Pointer(&r))
}

// ioctlPtr is an ioctl whose argument is a pointer.
func ioctlPtr(fd int, req uint, arg unsafe.Pointer) error {
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg)); e != 0 {
		return e
	}
	return nil
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
