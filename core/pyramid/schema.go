package pyramid

import (
	"fmt"
	"slices"

	"github.com/shalestore/shale/core/page"
)

// Schema is the fixed shape of one relation: unsigned integer key fields
// then value fields. A tuple is a []uint64 holding the keys then the
// values, len(Keys)+len(Values) long.
//
// A point relation maps each key to at most one value.
//
// A range relation (Range true) maps runs: its last key field is the run
// start, the field at index Len is the run length (≥ 1), and the run covers
// positions [start, start+len) under the other key fields (the prefix).
// Newest sequence wins per position: a newer run hides the part of an older
// run it overlaps. When a run is split or clipped, the value fields listed
// in Shift advance by the same amount as its start (for the block map, the
// sector within the cblock; for the medium table, the target offset).
type Schema struct {
	// Name names the relation, its root and its elide references.
	Name string
	// ID identifies the relation in commit-log entries: nonzero, unique in
	// a DB, never reused for another shape.
	ID uint16
	// Keys and Values name the fields, in tuple order.
	Keys, Values []string
	// Range makes the relation range-keyed (see above).
	Range bool
	// Len is the tuple index of the run length (a value field).
	Len int
	// Shift lists tuple indexes of value fields that advance with the start.
	Shift []int
	// Elide lists the relation's elide rules.
	Elide []ElideRule
	// ElideTable marks an elide table: a range relation with one key field
	// ("start") and one value field ("len") whose runs are the deleted
	// ranges of values. Use ElideTableSchema to make one.
	ElideTable bool
}

// ElideRule says that tuples whose key field Field holds a value in one of
// the ranges of elide table Table are deleted.
//
// INVARIANT: Field is a key field and not a range relation's start field,
// so every version of a key (in every patch) is elided alike; a rule on a
// value field would let a merge drop a newer elided version and expose an
// older one.
type ElideRule struct {
	Field int
	Table string
}

// ElideTableSchema returns the schema of an elide table.
func ElideTableSchema(name string, id uint16) Schema {
	return Schema{Name: name, ID: id, Keys: []string{"start"}, Values: []string{"len"},
		Range: true, Len: 1, ElideTable: true}
}

// Fields returns the number of fields of a tuple.
func (s *Schema) Fields() int { return len(s.Keys) + len(s.Values) }

// validate checks the schema on its own; Open checks the references
// between schemas.
func (s *Schema) validate() error {
	k, f := len(s.Keys), s.Fields()
	switch {
	case s.Name == "":
		return fmt.Errorf("schema %d: empty name", s.ID)
	case s.ID == 0:
		return fmt.Errorf("schema %s: id 0", s.Name)
	case k < 1:
		return fmt.Errorf("schema %s: no key fields", s.Name)
	case f > page.MaxFields || k+2 > page.MaxFields:
		return fmt.Errorf("schema %s: %d fields, at most %d", s.Name, f, page.MaxFields)
	}
	if s.Range {
		if s.Len < k || s.Len >= f {
			return fmt.Errorf("schema %s: length field %d is not a value field", s.Name, s.Len)
		}
		for _, i := range s.Shift {
			if i < k || i >= f || i == s.Len {
				return fmt.Errorf("schema %s: shift field %d is not a value field other than the length", s.Name, i)
			}
		}
		if len(s.Shift) != len(slicesCompactSorted(s.Shift)) {
			return fmt.Errorf("schema %s: shift fields repeat", s.Name)
		}
	} else if len(s.Shift) != 0 {
		return fmt.Errorf("schema %s: shift fields on a point relation", s.Name)
	}
	for _, r := range s.Elide {
		last := k
		if s.Range {
			last = k - 1
		}
		if r.Field < 0 || r.Field >= last {
			return fmt.Errorf("schema %s: elide rule on field %d, which is not a key field other than a run start", s.Name, r.Field)
		}
	}
	if s.ElideTable && (!s.Range || k != 1 || f != 2 || s.Len != 1 || len(s.Shift) != 0 || len(s.Elide) != 0) {
		return fmt.Errorf("schema %s: an elide table is ElideTableSchema's shape", s.Name)
	}
	return nil
}

func slicesCompactSorted(s []int) []int {
	c := slices.Clone(s)
	slices.Sort(c)
	return slices.Compact(c)
}

// The standard relations of shale. Their field indexes are constants so the
// engine reads tuples without lookups.
const (
	// Block map: (medium, lba) -> run of sectors.
	BMMedium  = iota // key: medium id
	BMLBA            // key: first sector of the run (range start)
	BMLen            // run length in sectors
	BMKind           // KindData, KindDup or KindZero
	BMSegment        // segment holding the cblock
	BMOffset         // byte offset of the cblock in the segment's data
	BMCLen           // stored (compressed) length of the cblock in bytes
	BMSector         // first sector of the run within the cblock (shifts)
	bmFields
)

// Block-map kinds.
const (
	KindData = 0 // the run's sectors are in the cblock at (segment, offset)
	KindDup  = 1 // as KindData, in a cblock another write put there (dedup)
	KindZero = 2 // the run reads as zeros (TRIM, WRITE_ZEROES)
)

const (
	// Medium table (paper, Figure 6): (medium, start) -> run of the medium
	// resolved through an underlying medium.
	MTMedium       = iota // key: medium id
	MTStart               // key: first sector of the run (range start)
	MTLen                 // run length in sectors
	MTTarget              // underlying medium, 0 for none
	MTTargetOffset        // sector in the underlying medium (shifts)
	MTStatus              // MediumRO or MediumRW
	mtFields
)

// Medium status values.
const (
	MediumRO = 0
	MediumRW = 1
)

const (
	// Segment table: (segment, shard) -> where that shard of the segment
	// lives.
	STSegment = iota // key: segment id
	STShard          // key: shard index, 0..k+m-1
	STDrive          // drive id
	STAU             // allocation unit on the drive
	STFlags          // segment-writer flags
	stFields
)

const (
	// Dedup table: hash -> location of the sector's data.
	DTHash    = iota // key: 64-bit sector hash
	DTSegment        // segment holding the cblock
	DTOffset         // byte offset of the cblock
	DTCLen           // stored length of the cblock
	DTSector         // sector within the cblock
	dtFields
)

const (
	// Link table: (segment, referenced segment) -> count of references,
	// for garbage collection.
	LTSegment = iota // key
	LTTarget         // key
	LTCount          // approximate reference count
	ltFields
)

// Names and IDs of the standard relations.
const (
	BlockMap     = "block-map"
	MediumTable  = "medium-table"
	SegmentTable = "segment-table"
	DedupTable   = "dedup-table"
	LinkTable    = "link-table"
	MediumElide  = "medium-elide"
	SegmentElide = "segment-elide"
)

// StandardSchemas returns fresh copies of shale's relations. The block map
// and the medium table are elided by medium id, the segment and link tables
// by segment id. The dedup table has no elide rule: its key is a hash, and
// the engine confirms every dedup hit by reading the data anyway.
func StandardSchemas() []Schema {
	return []Schema{
		{
			Name: BlockMap, ID: 1,
			Keys:   []string{"medium", "lba"},
			Values: []string{"len", "kind", "segment", "offset", "clen", "sector"},
			Range:  true, Len: BMLen, Shift: []int{BMSector},
			Elide: []ElideRule{{Field: BMMedium, Table: MediumElide}},
		},
		{
			Name: MediumTable, ID: 2,
			Keys:   []string{"medium", "start"},
			Values: []string{"len", "target", "target_offset", "status"},
			Range:  true, Len: MTLen, Shift: []int{MTTargetOffset},
			Elide: []ElideRule{{Field: MTMedium, Table: MediumElide}},
		},
		{
			Name: SegmentTable, ID: 3,
			Keys:   []string{"segment", "shard"},
			Values: []string{"drive", "au", "flags"},
			Elide:  []ElideRule{{Field: STSegment, Table: SegmentElide}},
		},
		{
			Name: DedupTable, ID: 4,
			Keys: []string{"hash"},
			// place: the sector's index in its cblock in the low 16
			// bits, the cblock's logical sectors in the next 16.
			Values: []string{"segment", "offset", "clen", "place"},
		},
		{
			Name: LinkTable, ID: 5,
			Keys:   []string{"segment", "target"},
			Values: []string{"count"},
			Elide:  []ElideRule{{Field: LTSegment, Table: SegmentElide}},
		},
		ElideTableSchema(MediumElide, 6),
		ElideTableSchema(SegmentElide, 7),
	}
}
