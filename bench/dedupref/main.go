// Command dedupref computes the reference data-reduction figure of issue 7:
// what a 4 KiB-aligned deduplicating, per-block compressing store (the way
// VDO and ZFS with dedup=on and compression=zstd work) would store for a
// set of files written to it, one after the other.
//
// The model, chosen to match those systems and documented so the figure
// can be checked by hand:
//
//   - Each file is split into 4 KiB blocks at 4 KiB offsets from its start;
//     a short last block is padded with zeros (a disk image is a whole
//     number of blocks, so this only matters for odd inputs).
//   - A block of zeros is free: ZFS and VDO store no data for it (holes /
//     zero-block elision). It counts in neither logical nor physical bytes.
//   - Blocks are deduplicated across all files by SHA-256 (ZFS's dedup
//     checksum; a collision is not a practical concern at these sizes).
//     Only the first copy is stored.
//   - Each unique block is compressed alone with zstd at the level shale
//     uses inline (cblock.Level), and kept raw when compression saves less
//     than 1/8 (ZFS's rule; shale's cblock uses the same one).
//   - The stored size is rounded up to a 512-byte sector (ZFS with
//     ashift=9; with ashift=12, the common default on 4Kn/flash, every
//     block would cost 4 KiB and only dedup would count, so 512 is the
//     figure most favourable to the reference).
//   - Logical bytes are the non-zero blocks' bytes, as written (duplicates
//     included); physical bytes are the stored unique blocks' rounded sizes;
//     the ratio is logical / physical. No metadata (dedup table, block
//     pointers) is counted, again in the reference's favour.
//
// Usage:
//
//	go run ./bench/dedupref [--json] FILE...
package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/DataDog/zstd"

	"github.com/shalestore/shale/core/cblock"
)

const (
	// blockBytes is the dedup and compression unit (VDO's block, ZFS's
	// recordsize for a 4 KiB-volblocksize zvol).
	blockBytes = 4096
	// sectorBytes is the allocation unit stored sizes round up to (ashift=9).
	sectorBytes = 512
)

// Result is the reduction of a set of files.
type Result struct {
	Files []string `json:"files"`
	// Blocks counts 4 KiB blocks read, ZeroBlocks those all zero,
	// UniqueBlocks the distinct non-zero ones, RawBlocks the unique ones
	// stored uncompressed.
	Blocks       int64 `json:"blocks"`
	ZeroBlocks   int64 `json:"zero_blocks"`
	UniqueBlocks int64 `json:"unique_blocks"`
	RawBlocks    int64 `json:"raw_blocks"`
	// LogicalBytes is the non-zero blocks' size; PhysicalBytes the stored
	// size of the unique blocks, each compressed and rounded to 512 B.
	LogicalBytes  int64 `json:"logical_bytes"`
	PhysicalBytes int64 `json:"physical_bytes"`
	// DedupRatio is non-zero blocks / unique blocks (dedup alone);
	// DataReduction is LogicalBytes / PhysicalBytes (dedup and compression).
	DedupRatio    float64 `json:"dedup_ratio"`
	DataReduction float64 `json:"data_reduction"`
}

// Reducer accumulates blocks. The zero value is not usable; use newReducer.
type Reducer struct {
	seen map[[sha256.Size]byte]struct{}
	zctx zstd.Ctx
	zbuf []byte
	res  Result
}

func newReducer() *Reducer {
	return &Reducer{
		seen: make(map[[sha256.Size]byte]struct{}),
		zctx: zstd.NewCtx(),
		zbuf: make([]byte, 0, zstd.CompressBound(blockBytes)),
	}
}

var zeroBlock [blockBytes]byte

// storedSize is what one unique block costs: its zstd encoding when that
// saves at least 1/8, else the raw block; rounded up to a sector.
func (r *Reducer) storedSize(b []byte) (n int64, raw bool, err error) {
	z, err := r.zctx.CompressLevel(r.zbuf[:0], b, cblock.Level)
	if err != nil {
		return 0, false, fmt.Errorf("zstd: %w", err)
	}
	size := len(z)
	if size > blockBytes-blockBytes/8 {
		size, raw = blockBytes, true
	}
	return int64((size + sectorBytes - 1) / sectorBytes * sectorBytes), raw, nil
}

// Add accounts one block of exactly 4 KiB.
func (r *Reducer) Add(b []byte) error {
	if len(b) != blockBytes {
		return fmt.Errorf("dedupref: block of %d bytes", len(b))
	}
	r.res.Blocks++
	if [blockBytes]byte(b) == zeroBlock {
		r.res.ZeroBlocks++
		return nil
	}
	r.res.LogicalBytes += blockBytes
	h := sha256.Sum256(b)
	if _, ok := r.seen[h]; ok {
		return nil
	}
	r.seen[h] = struct{}{}
	n, raw, err := r.storedSize(b)
	if err != nil {
		return err
	}
	r.res.UniqueBlocks++
	if raw {
		r.res.RawBlocks++
	}
	r.res.PhysicalBytes += n
	return nil
}

// AddReader accounts everything rd yields, split into 4 KiB blocks, the
// last one zero-padded.
func (r *Reducer) AddReader(rd io.Reader) error {
	br := bufio.NewReaderSize(rd, 1<<20)
	buf := make([]byte, blockBytes)
	for {
		n, err := io.ReadFull(br, buf)
		if n > 0 {
			clear(buf[n:])
			if aerr := r.Add(buf); aerr != nil {
				return aerr
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// Result returns the figures so far.
func (r *Reducer) Result() Result {
	res := r.res
	if res.UniqueBlocks > 0 {
		res.DedupRatio = float64(res.Blocks-res.ZeroBlocks) / float64(res.UniqueBlocks)
	}
	if res.PhysicalBytes > 0 {
		res.DataReduction = float64(res.LogicalBytes) / float64(res.PhysicalBytes)
	}
	return res
}

func run(files []string, asJSON bool, w io.Writer) error {
	r := newReducer()
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return err
		}
		err = r.AddReader(fh)
		fh.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
	}
	res := r.Result()
	res.Files = files
	if asJSON {
		e := json.NewEncoder(w)
		e.SetIndent("", "  ")
		return e.Encode(res)
	}
	_, err := fmt.Fprintf(w, "files: %v\nblocks: %d (zero %d, unique non-zero %d, stored raw %d)\nlogical bytes: %d\nphysical bytes: %d\ndedup ratio: %.3f\ndata reduction: %.3f\n",
		res.Files, res.Blocks, res.ZeroBlocks, res.UniqueBlocks, res.RawBlocks,
		res.LogicalBytes, res.PhysicalBytes, res.DedupRatio, res.DataReduction)
	return err
}

func main() {
	asJSON := flag.Bool("json", false, "print the result as JSON")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: dedupref [--json] FILE...\n\n4 KiB-aligned dedup with per-4 KiB zstd (level %d), 512 B rounding, zero blocks free.\n", cblock.Level)
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(flag.Args(), *asJSON, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "dedupref:", err)
		os.Exit(1)
	}
}
