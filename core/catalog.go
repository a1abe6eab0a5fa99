package core

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// catalog is the array's small directory: volume and snapshot names, the
// medium each names, sizes, origins, and every medium still kept (named
// or depended on). It lives in the boot region (root "core.catalog") and
// is replaced whole by each admin operation.
type catalog struct {
	// NextMedium is the next medium id to hand out (ids start at 1; 0
	// means "none" in the medium table).
	NextMedium uint64        `json:"next_medium"`
	Volumes    []catVolume   `json:"volumes"`
	Snapshots  []catSnapshot `json:"snapshots"`
	// Mediums lists every medium not yet elided.
	Mediums []catMedium `json:"mediums"`
}

type catVolume struct {
	Name    string    `json:"name"`
	Medium  uint64    `json:"medium"`
	Size    int64     `json:"size"`
	Origin  string    `json:"origin,omitempty"`
	Created time.Time `json:"created"`
}

type catSnapshot struct {
	Volume  string    `json:"volume"`
	Name    string    `json:"name"`
	Medium  uint64    `json:"medium"`
	Size    int64     `json:"size"`
	Created time.Time `json:"created"`
}

// catMedium is one medium: its medium-table run [0, Sectors) maps to
// Parent (0: none) at offset 0.
type catMedium struct {
	ID      uint64 `json:"id"`
	Parent  uint64 `json:"parent,omitempty"`
	Sectors uint64 `json:"sectors"`
	RO      bool   `json:"ro,omitempty"`
}

const catalogVersion = 1

func (c *catalog) encode() []byte {
	b, err := json.Marshal(c)
	if err != nil {
		panic(err) // plain data: cannot fail
	}
	return append([]byte{catalogVersion}, b...)
}

// decodeCatalog decodes and checks a catalog root. A missing root (nil)
// is an empty catalog.
func decodeCatalog(b []byte) (*catalog, error) {
	c := &catalog{NextMedium: 1}
	if b == nil {
		return c, nil
	}
	if len(b) < 1 || b[0] != catalogVersion {
		return nil, fmt.Errorf("%w: catalog version", ErrCorruptRoot)
	}
	if err := json.Unmarshal(b[1:], c); err != nil {
		return nil, fmt.Errorf("%w: catalog: %v", ErrCorruptRoot, err)
	}
	if err := c.check(); err != nil {
		return nil, fmt.Errorf("%w: catalog: %v", ErrCorruptRoot, err)
	}
	return c, nil
}

// check verifies the catalog's invariants.
//
// INVARIANT: names are valid and unique; every named medium is listed in
// Mediums; every parent is listed and has a smaller id (so the medium
// graph has no cycle); every id is below NextMedium; sizes are positive
// multiples of 512.
func (c *catalog) check() error {
	ms := map[uint64]catMedium{}
	for _, m := range c.Mediums {
		if m.ID == 0 || m.ID >= c.NextMedium {
			return fmt.Errorf("medium id %d (next %d)", m.ID, c.NextMedium)
		}
		if _, dup := ms[m.ID]; dup {
			return fmt.Errorf("medium %d listed twice", m.ID)
		}
		ms[m.ID] = m
	}
	for _, m := range c.Mediums {
		if m.Parent != 0 {
			if _, ok := ms[m.Parent]; !ok || m.Parent >= m.ID {
				return fmt.Errorf("medium %d: parent %d", m.ID, m.Parent)
			}
		}
	}
	names := map[string]bool{}
	for _, v := range c.Volumes {
		if validName(v.Name) != nil || names[v.Name] || v.Size <= 0 || v.Size%SectorSize != 0 {
			return fmt.Errorf("volume %q", v.Name)
		}
		if _, ok := ms[v.Medium]; !ok {
			return fmt.Errorf("volume %q: medium %d not listed", v.Name, v.Medium)
		}
		names[v.Name] = true
	}
	for _, s := range c.Snapshots {
		full := s.Volume + "@" + s.Name
		if validName(s.Name) != nil || !names[s.Volume] || names[full] || s.Size <= 0 || s.Size%SectorSize != 0 {
			return fmt.Errorf("snapshot %q", full)
		}
		if _, ok := ms[s.Medium]; !ok {
			return fmt.Errorf("snapshot %q: medium %d not listed", full, s.Medium)
		}
		names[full] = true
	}
	return nil
}

func (c *catalog) clone() *catalog {
	n := *c
	n.Volumes = slices.Clone(c.Volumes)
	n.Snapshots = slices.Clone(c.Snapshots)
	n.Mediums = slices.Clone(c.Mediums)
	return &n
}

func (c *catalog) volume(name string) (int, bool) {
	for i, v := range c.Volumes {
		if v.Name == name {
			return i, true
		}
	}
	return -1, false
}

func (c *catalog) snapshot(vol, snap string) (int, bool) {
	for i, s := range c.Snapshots {
		if s.Volume == vol && s.Name == snap {
			return i, true
		}
	}
	return -1, false
}

func (c *catalog) medium(id uint64) (int, bool) {
	for i, m := range c.Mediums {
		if m.ID == id {
			return i, true
		}
	}
	return -1, false
}

// garbageMediums returns the listed mediums that no volume or snapshot
// needs: not named, and not under (parent chain) a named medium. It is
// the decision of what deletion may elide, without I/O.
func garbageMediums(c *catalog) []uint64 {
	parent := map[uint64]uint64{}
	for _, m := range c.Mediums {
		parent[m.ID] = m.Parent
	}
	live := map[uint64]bool{}
	mark := func(id uint64) {
		for id != 0 && !live[id] {
			live[id] = true
			id = parent[id]
		}
	}
	for _, v := range c.Volumes {
		mark(v.Medium)
	}
	for _, s := range c.Snapshots {
		mark(s.Medium)
	}
	var out []uint64
	for _, m := range c.Mediums {
		if !live[m.ID] {
			out = append(out, m.ID)
		}
	}
	return out
}

// dropMediums removes ids from the catalog's medium list.
func (c *catalog) dropMediums(ids []uint64) {
	c.Mediums = slices.DeleteFunc(c.Mediums, func(m catMedium) bool { return slices.Contains(ids, m.ID) })
}

// validName checks a volume or snapshot name: 1-64 bytes of
// [A-Za-z0-9._-], not starting with '.' or '-'.
func validName(name string) error {
	if len(name) < 1 || len(name) > 64 || name[0] == '.' || name[0] == '-' {
		return fmt.Errorf("%w: name %q", ErrInvalid, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w: name %q", ErrInvalid, name)
		}
	}
	return nil
}

// splitSnapshot splits "VOL@SNAP"; ok false if name has no '@'.
func splitSnapshot(name string) (vol, snap string, ok bool) {
	return strings.Cut(name, "@")
}
