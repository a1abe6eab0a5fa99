package pyramid

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// fuzzDB is a DB with the standard relations and no storage: enough to
// decode commit-log entries.
func fuzzDB() *DB {
	db := &DB{byID: map[uint16]*Relation{}, byName: map[string]*Relation{}}
	for _, s := range StandardSchemas() {
		r := newRelation(db, s)
		db.rels = append(db.rels, r)
		db.byID[s.ID], db.byName[s.Name] = r, r
	}
	return db
}

func sampleBatches(db *DB) [][]byte {
	var out [][]byte
	var b Batch
	b.Insert(db.byName[BlockMap], 1, 0, 64, KindData, 3, 4096, 9000, 0)
	out = append(out, b.encode(nil))
	b.Insert(db.byName[SegmentTable], 100, 2, 5, 77, 0)
	b.Elide(db.byName[MediumElide], 17, 20)
	out = append(out, b.encode(nil))
	b.Reset()
	out = append(out, b.encode(nil))
	b.Insert(db.byName[BlockMap], 1, 8, 8, KindData, 3, 8192, 700, 0)
	b.Attach([]byte("cblock payload"))
	out = append(out, b.encode(nil))
	out = append(out, encodeV1([]uint64{1, 0, 64, KindData, 3, 4096, 9000, 0}))
	return out
}

// encodeV1 builds a version 1 entry (no attachment) of one block-map
// tuple, as Persist wrote them before attachments.
func encodeV1(t []uint64) []byte {
	dst := []byte{batchMagic0, batchMagic1, batchVersion1}
	dst = binary.AppendUvarint(dst, 1)
	dst = binary.AppendUvarint(dst, 1) // block map
	for _, v := range t {
		dst = binary.AppendUvarint(dst, v)
	}
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst, castagnoli))
}

func TestBatchAttachment(t *testing.T) {
	db := fuzzDB()
	bm := []uint64{1, 0, 64, KindData, 3, 4096, 9000, 0}
	for _, att := range [][]byte{nil, {}, []byte("x"), bytes.Repeat([]byte("payload"), 5000)} {
		var b Batch
		if err := b.Insert(db.byName[BlockMap], bm...); err != nil {
			t.Fatal(err)
		}
		b.Attach(att)
		enc := b.encode(nil)
		got, err := EntryAttachment(enc)
		if err != nil || !bytes.Equal(got, att) {
			t.Fatalf("attachment of %d bytes: got %d bytes, %v", len(att), len(got), err)
		}
		var d Batch
		if err := db.decodeBatch(enc, &d); err != nil || !slices.Equal(d.data, bm) || !bytes.Equal(d.attach, att) {
			t.Fatalf("decode with attachment of %d bytes: %v %v", len(att), d.data, err)
		}
		for i := range enc {
			bad := slices.Clone(enc)
			bad[i] ^= 0x10
			if _, err := EntryAttachment(bad); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("byte %d flipped: %v", i, err)
			}
		}
		b.Reset()
		if b.attach != nil {
			t.Fatal("Reset kept the attachment")
		}
	}
	// Version 1 entries still decode, without an attachment.
	v1 := encodeV1(bm)
	var d Batch
	if err := db.decodeBatch(v1, &d); err != nil || !slices.Equal(d.data, bm) {
		t.Fatalf("version 1 entry: %v %v", d.data, err)
	}
	if a, err := EntryAttachment(v1); err != nil || a != nil {
		t.Fatalf("version 1 attachment: %q %v", a, err)
	}
}

func sampleManifests() [][]byte {
	m := &manifest{relID: 1, k: 2, f: 8, through: 40, patches: []PatchInfo{
		{SeqLo: 21, SeqHi: 40, Tuples: 10, LeafPages: 1, Bytes: 300, Root: Addr{1, 2}, MinKey: []uint64{1, 0}, MaxKey: []uint64{1, 900}, LastEnd: 964},
		{SeqLo: 1, SeqHi: 20, Tuples: 5000, LeafPages: 7, Bytes: 30000, Levels: 1, Root: Addr{3}, MinKey: []uint64{1, 0}, MaxKey: []uint64{2, 5}, LastEnd: 6, ElidedThrough: 12},
	}}
	empty := &manifest{relID: 6, k: 1, f: 2}
	return [][]byte{m.encode(), empty.encode()}
}

func TestBatchRoundTrip(t *testing.T) {
	db := fuzzDB()
	var b Batch
	bm := []uint64{1, 0, 64, KindData, 3, 4096, 9000, 0}
	if err := b.Insert(db.byName[BlockMap], bm...); err != nil {
		t.Fatal(err)
	}
	if err := b.Insert(db.byName[BlockMap], 1, 0, 0, 0, 0, 0, 0, 0); err == nil {
		t.Fatal("run of length 0 accepted")
	}
	if err := b.Insert(db.byName[BlockMap], 1, ^uint64(0), 2, 0, 0, 0, 0, 0); err == nil {
		t.Fatal("wrapping run accepted")
	}
	if err := b.Insert(db.byName[SegmentTable], 1, 2); err == nil {
		t.Fatal("short tuple accepted")
	}
	if err := b.Elide(db.byName[MediumElide], 5, 9); err != nil {
		t.Fatal(err)
	}
	enc := b.encode(nil)
	var got Batch
	if err := db.decodeBatch(enc, &got); err != nil {
		t.Fatal(err)
	}
	if got.Len() != 2 || !slices.Equal(got.data, append(bm, 5, 5)) {
		t.Fatalf("decoded %v", got.data)
	}
	for i := range enc {
		bad := slices.Clone(enc)
		bad[i] ^= 0x40
		if err := db.decodeBatch(bad, &got); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
}

func TestManifestRoundTrip(t *testing.T) {
	for _, enc := range sampleManifests() {
		m, err := decodeManifest(enc)
		if err != nil {
			t.Fatal(err)
		}
		if again := m.encode(); !slices.Equal(again, enc) {
			t.Fatalf("re-encoded differently")
		}
		for i := range enc {
			bad := slices.Clone(enc)
			bad[i] ^= 0x01
			if _, err := decodeManifest(bad); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("byte %d flipped: %v", i, err)
			}
		}
	}
}

// FuzzDecodeBatch: commit-log entries come from NVRAM; decoding garbage must
// fail with ErrCorrupt or yield tuples that re-encode to the same bytes.
func FuzzDecodeBatch(f *testing.F) {
	db := fuzzDB()
	for _, b := range sampleBatches(db) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, entry []byte) {
		var b Batch
		if err := db.decodeBatch(entry, &b); err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not ErrCorrupt: %v", err)
			}
			return
		}
		// What decodes re-encodes to an entry that decodes to the same
		// tuples (uvarints have several encodings: no byte compare).
		var again Batch
		if err := db.decodeBatch(b.encode(nil), &again); err != nil {
			t.Fatalf("re-encoded entry does not decode: %v", err)
		}
		if !slices.Equal(again.rels, b.rels) || !slices.Equal(again.data, b.data) {
			t.Fatal("re-encoded entry decodes to other tuples")
		}
		if a, err := EntryAttachment(entry); err != nil || !bytes.Equal(a, b.attach) || !bytes.Equal(again.attach, b.attach) {
			t.Fatalf("attachment differs: %v", err)
		}
	})
}

// FuzzDecodeManifest: manifests come from the boot region.
func FuzzDecodeManifest(f *testing.F) {
	for _, m := range sampleManifests() {
		f.Add(m)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeManifest(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not ErrCorrupt: %v", err)
			}
			return
		}
		if _, err := decodeManifest(m.encode()); err != nil {
			t.Fatalf("re-encoded manifest does not decode: %v", err)
		}
	})
}

// TestWriteSeedCorpus regenerates the committed seed corpora when
// SHALE_WRITE_CORPUS=1.
func TestWriteSeedCorpus(t *testing.T) {
	if os.Getenv("SHALE_WRITE_CORPUS") != "1" {
		t.Skip("set SHALE_WRITE_CORPUS=1 to regenerate the seed corpus")
	}
	write := func(fuzz string, i int, b []byte) {
		dir := filepath.Join("testdata", "fuzz", fuzz)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, b := range sampleBatches(fuzzDB()) {
		write("FuzzDecodeBatch", i, b)
	}
	for i, b := range sampleManifests() {
		write("FuzzDecodeManifest", i, b)
	}
}
