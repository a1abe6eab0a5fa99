package admin

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/shalestore/shale/core"
)

// fakeArray is an in-memory Array with core's naming and size rules, and
// an error to inject into the next call (fail).
type fakeArray struct {
	mu    sync.Mutex
	vols  map[string]core.VolumeInfo // volumes and snapshots by name
	fail  error                      // returned by every mutating call when set
	block chan struct{}              // when set, mutating calls wait for it
	stats core.Stats
	calls []string
}

func newFake() *fakeArray { return &fakeArray{vols: map[string]core.VolumeInfo{}} }

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$`)

func (f *fakeArray) enter(call string) error {
	f.mu.Lock()
	f.calls = append(f.calls, call)
	block, err := f.block, f.fail
	f.mu.Unlock()
	if block != nil {
		<-block
	}
	return err
}

func checkName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("name %q: %w", name, core.ErrInvalid)
	}
	return nil
}

func checkSize(size int64) error {
	if size <= 0 || size%core.SectorSize != 0 {
		return fmt.Errorf("size %d: %w", size, core.ErrInvalid)
	}
	return nil
}

func (f *fakeArray) CreateVolume(ctx context.Context, name string, size int64) (core.VolumeInfo, error) {
	if err := f.enter("CreateVolume " + name); err != nil {
		return core.VolumeInfo{}, err
	}
	if err := checkName(name); err != nil {
		return core.VolumeInfo{}, err
	}
	if err := checkSize(size); err != nil {
		return core.VolumeInfo{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.vols[name]; ok {
		return core.VolumeInfo{}, fmt.Errorf("volume %q: %w", name, core.ErrExists)
	}
	v := core.VolumeInfo{Name: name, Size: size, Created: time.Unix(1700000000, 0).UTC()}
	f.vols[name] = v
	return v, nil
}

func (f *fakeArray) ResizeVolume(ctx context.Context, name string, size int64) (core.VolumeInfo, error) {
	if err := f.enter("ResizeVolume " + name); err != nil {
		return core.VolumeInfo{}, err
	}
	if err := checkSize(size); err != nil {
		return core.VolumeInfo{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.vols[name]
	if !ok {
		return core.VolumeInfo{}, fmt.Errorf("volume %q: %w", name, core.ErrNotFound)
	}
	if v.Snapshot {
		return core.VolumeInfo{}, fmt.Errorf("%q is a snapshot: %w", name, core.ErrReadOnly)
	}
	v.Size = size
	f.vols[name] = v
	return v, nil
}

func (f *fakeArray) DeleteVolume(ctx context.Context, name string) error {
	if err := f.enter("DeleteVolume " + name); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if v, ok := f.vols[name]; !ok || v.Snapshot {
		return fmt.Errorf("volume %q: %w", name, core.ErrNotFound)
	}
	for n := range f.vols {
		if n == name || strings.HasPrefix(n, name+"@") {
			delete(f.vols, n)
		}
	}
	return nil
}

func (f *fakeArray) list(snap bool, volume string) []core.VolumeInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []core.VolumeInfo
	for n, v := range f.vols {
		if v.Snapshot == snap && (volume == "" || strings.HasPrefix(n, volume+"@")) {
			out = append(out, v)
		}
	}
	slices.SortFunc(out, func(a, b core.VolumeInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (f *fakeArray) Volumes() []core.VolumeInfo { return f.list(false, "") }

func (f *fakeArray) Snapshots(volume string) []core.VolumeInfo { return f.list(true, volume) }

func (f *fakeArray) CreateSnapshot(ctx context.Context, volume, snap string) (core.VolumeInfo, error) {
	if err := f.enter("CreateSnapshot " + volume + "@" + snap); err != nil {
		return core.VolumeInfo{}, err
	}
	if err := checkName(snap); err != nil {
		return core.VolumeInfo{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.vols[volume]
	if !ok || v.Snapshot {
		return core.VolumeInfo{}, fmt.Errorf("volume %q: %w", volume, core.ErrNotFound)
	}
	name := volume + "@" + snap
	if _, ok := f.vols[name]; ok {
		return core.VolumeInfo{}, fmt.Errorf("snapshot %q: %w", name, core.ErrExists)
	}
	s := core.VolumeInfo{Name: name, Size: v.Size, Snapshot: true, Origin: volume, Created: v.Created}
	f.vols[name] = s
	return s, nil
}

func (f *fakeArray) DeleteSnapshot(ctx context.Context, name string) error {
	if err := f.enter("DeleteSnapshot " + name); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if v, ok := f.vols[name]; !ok || !v.Snapshot {
		return fmt.Errorf("snapshot %q: %w", name, core.ErrNotFound)
	}
	delete(f.vols, name)
	return nil
}

func (f *fakeArray) Clone(ctx context.Context, snapshot, volume string) (core.VolumeInfo, error) {
	if err := f.enter("Clone " + snapshot + " " + volume); err != nil {
		return core.VolumeInfo{}, err
	}
	if err := checkName(volume); err != nil {
		return core.VolumeInfo{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.vols[snapshot]
	if !ok || !s.Snapshot {
		return core.VolumeInfo{}, fmt.Errorf("snapshot %q: %w", snapshot, core.ErrNotFound)
	}
	if _, ok := f.vols[volume]; ok {
		return core.VolumeInfo{}, fmt.Errorf("volume %q: %w", volume, core.ErrExists)
	}
	v := core.VolumeInfo{Name: volume, Size: s.Size, Origin: snapshot, Created: s.Created}
	f.vols[volume] = v
	return v, nil
}

func (f *fakeArray) Stats() core.Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

func fakeVolume(name string, snap bool) core.VolumeInfo {
	v := core.VolumeInfo{Name: name, Size: 1 << 20, Snapshot: snap}
	if i := strings.IndexByte(name, '@'); i >= 0 {
		v.Origin = name[:i]
	}
	return v
}
