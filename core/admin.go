package core

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/shalestore/shale/core/pyramid"
)

// Volume is an open volume or snapshot. Offsets and lengths are multiples
// of 512 (SectorSize); p's length too. Methods are safe for concurrent use.
// Every write is durable (in NVRAM) when its method returns: Flush and
// fua have nothing left to do, which is why MultiConn can be promised.
type Volume struct {
	a  *Array
	vs *volState
}

// Name returns "VOL" or "VOL@SNAP".
func (v *Volume) Name() string { return v.vs.name }

// Size returns the current size in bytes.
func (v *Volume) Size() int64 {
	v.vs.mu.RLock()
	defer v.vs.mu.RUnlock()
	return v.vs.size
}

// ReadOnly reports whether this is a snapshot.
func (v *Volume) ReadOnly() bool { return v.vs.readOnly }

// Volume opens a volume or a snapshot ("VOL@SNAP") for I/O. The handle
// stays valid across resizes (Size follows) and fails with ErrNotFound
// once the volume is deleted.
func (a *Array) Volume(name string) (*Volume, error) {
	if err := a.enter(); err != nil {
		return nil, err
	}
	defer a.exit()
	a.catMu.RLock()
	defer a.catMu.RUnlock()
	vs, ok := a.vols[name]
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, ErrNotFound)
	}
	return &Volume{a: a, vs: vs}, nil
}

func checkSize(size int64) error {
	if size <= 0 || size%SectorSize != 0 || size > 1<<50 {
		return fmt.Errorf("%w: size %d (a positive multiple of 512 up to 1 PiB)", ErrInvalid, size)
	}
	return nil
}

// commitCatalog makes next the durable catalog and the one in memory.
// REQUIRES: a.adminMu held.
func (a *Array) commitCatalog(ctx context.Context, next *catalog) error {
	if err := next.check(); err != nil {
		return fmt.Errorf("core: catalog would break an invariant: %w", err)
	}
	if err := a.roots.SetRoot(ctx, catalogRoot, next.encode()); err != nil {
		return fmt.Errorf("%w: catalog: %w", ErrIO, err)
	}
	a.catMu.Lock()
	a.cat = next
	a.catMu.Unlock()
	return nil
}

// persistFacts persists an admin operation's facts. REQUIRES: a.adminMu.
func (a *Array) persistFacts(ctx context.Context, b *pyramid.Batch) error {
	if b.Len() == 0 {
		return nil
	}
	if _, err := a.db.Persist(ctx, b); err != nil {
		return fmt.Errorf("%w: %w", ErrIO, err)
	}
	a.hook(CrashAdminFacts)
	return nil
}

// CreateVolume creates an empty volume. Names: 1-64 bytes of [A-Za-z0-9._-],
// not starting with '.' or '-'. Size: a positive multiple of 512.
func (a *Array) CreateVolume(ctx context.Context, name string, size int64) (VolumeInfo, error) {
	if err := a.enter(); err != nil {
		return VolumeInfo{}, err
	}
	defer a.exit()
	if err := validName(name); err != nil {
		return VolumeInfo{}, err
	}
	if err := checkSize(size); err != nil {
		return VolumeInfo{}, err
	}
	a.adminMu.Lock()
	defer a.adminMu.Unlock()
	next := a.cat.clone()
	if _, ok := next.volume(name); ok {
		return VolumeInfo{}, fmt.Errorf("volume %s: %w", name, ErrExists)
	}
	id := next.NextMedium
	sectors := uint64(size / SectorSize)
	var b pyramid.Batch
	if err := b.Insert(a.mt, id, 0, sectors, 0, 0, pyramid.MediumRW); err != nil {
		return VolumeInfo{}, err
	}
	if err := a.persistFacts(ctx, &b); err != nil {
		return VolumeInfo{}, err
	}
	vr := catVolume{Name: name, Medium: id, Size: size, Created: time.Now().UTC().Truncate(time.Second)}
	next.NextMedium++
	next.Volumes = append(next.Volumes, vr)
	next.Mediums = append(next.Mediums, catMedium{ID: id, Sectors: sectors})
	if err := a.commitCatalog(ctx, next); err != nil {
		return VolumeInfo{}, err
	}
	a.catMu.Lock()
	a.vols[name] = &volState{name: name, medium: id, size: size}
	a.catMu.Unlock()
	a.log.Info("core: volume created", "volume", name, "size", size, "medium", id)
	return volumeInfo(vr), nil
}

func volumeInfo(v catVolume) VolumeInfo {
	return VolumeInfo{Name: v.Name, Size: v.Size, Origin: v.Origin, Created: v.Created}
}

func snapshotInfo(s catSnapshot) VolumeInfo {
	return VolumeInfo{Name: s.Volume + "@" + s.Name, Size: s.Size, Snapshot: true, Origin: s.Volume, Created: s.Created}
}

// volLocked returns the state of volume name, locked exclusively (the
// caller unlocks). REQUIRES: a.adminMu held.
func (a *Array) lockVolume(name string) (*volState, error) {
	a.catMu.RLock()
	vs, ok := a.vols[name]
	a.catMu.RUnlock()
	if !ok || vs.readOnly {
		return nil, fmt.Errorf("volume %s: %w", name, ErrNotFound)
	}
	vs.mu.Lock()
	return vs, nil
}

// ResizeVolume grows or shrinks a volume. Data beyond a shrunk end is gone;
// growing exposes zeros.
func (a *Array) ResizeVolume(ctx context.Context, name string, size int64) (VolumeInfo, error) {
	if err := a.enter(); err != nil {
		return VolumeInfo{}, err
	}
	defer a.exit()
	if err := checkSize(size); err != nil {
		return VolumeInfo{}, err
	}
	a.adminMu.Lock()
	defer a.adminMu.Unlock()
	vs, err := a.lockVolume(name)
	if err != nil {
		return VolumeInfo{}, err
	}
	defer vs.mu.Unlock()
	next := a.cat.clone()
	i, _ := next.volume(name)
	old := next.Volumes[i].Size
	if size != old {
		// The sectors between the two ends become a hole in the volume's
		// medium: gone after a shrink, zeros after a grow, whatever older
		// facts of this medium or the mediums below say.
		lo, hi := min(old, size)/SectorSize, max(old, size)/SectorSize
		var b pyramid.Batch
		if err := b.Insert(a.bm, vs.medium, uint64(lo), uint64(hi-lo), kindHole, 0, 0, 0, 0); err != nil {
			return VolumeInfo{}, err
		}
		if err := a.persistFacts(ctx, &b); err != nil {
			return VolumeInfo{}, err
		}
	}
	next.Volumes[i].Size = size
	if err := a.commitCatalog(ctx, next); err != nil {
		return VolumeInfo{}, err
	}
	vs.size = size
	a.log.Info("core: volume resized", "volume", name, "from", old, "to", size)
	return volumeInfo(next.Volumes[i]), nil
}

// DeleteVolume deletes a volume and its snapshots. Clones made from its
// snapshots stay readable.
func (a *Array) DeleteVolume(ctx context.Context, name string) error {
	if err := a.enter(); err != nil {
		return err
	}
	defer a.exit()
	a.adminMu.Lock()
	defer a.adminMu.Unlock()
	vs, err := a.lockVolume(name)
	if err != nil {
		return err
	}
	defer vs.mu.Unlock()
	next := a.cat.clone()
	i, _ := next.volume(name)
	next.Volumes = slices.Delete(next.Volumes, i, i+1)
	var gone []string
	next.Snapshots = slices.DeleteFunc(next.Snapshots, func(s catSnapshot) bool {
		if s.Volume == name {
			gone = append(gone, s.Volume+"@"+s.Name)
			return true
		}
		return false
	})
	if err := a.dropAndElide(ctx, next, append(gone, name)); err != nil {
		return err
	}
	vs.deleted = true
	a.log.Info("core: volume deleted", "volume", name, "snapshots", len(gone))
	return nil
}

// dropAndElide commits next (from which names were removed), forgets the
// names' states, then elides the mediums nothing needs any more.
// REQUIRES: a.adminMu held.
func (a *Array) dropAndElide(ctx context.Context, next *catalog, names []string) error {
	garbage := garbageMediums(next)
	next.dropMediums(garbage)
	if err := a.commitCatalog(ctx, next); err != nil {
		return err
	}
	a.catMu.Lock()
	for _, n := range names {
		if vs := a.vols[n]; vs != nil && vs.readOnly {
			vs.mu.Lock()
			vs.deleted = true
			vs.mu.Unlock()
		}
		delete(a.vols, n)
	}
	a.catMu.Unlock()
	a.hook(CrashAdminCatalog)
	if err := a.elideMediums(ctx, garbage); err != nil {
		// The catalog no longer names them: the next Open elides them.
		a.log.Warn("core: eliding deleted mediums failed; retried at the next open", "mediums", garbage, "err", err)
	}
	return nil
}

// Volumes lists the volumes (not snapshots), sorted by name.
func (a *Array) Volumes() []VolumeInfo {
	a.catMu.RLock()
	defer a.catMu.RUnlock()
	var out []VolumeInfo
	if a.cat == nil {
		return out
	}
	for _, v := range a.cat.Volumes {
		out = append(out, volumeInfo(v))
	}
	slices.SortFunc(out, func(x, y VolumeInfo) int { return strings.Compare(x.Name, y.Name) })
	return out
}

// CreateSnapshot freezes volume's current contents as "volume@snap".
func (a *Array) CreateSnapshot(ctx context.Context, volume, snap string) (VolumeInfo, error) {
	if err := a.enter(); err != nil {
		return VolumeInfo{}, err
	}
	defer a.exit()
	if err := validName(snap); err != nil {
		return VolumeInfo{}, err
	}
	a.adminMu.Lock()
	defer a.adminMu.Unlock()
	vs, err := a.lockVolume(volume)
	if err != nil {
		return VolumeInfo{}, err
	}
	defer vs.mu.Unlock()
	next := a.cat.clone()
	if _, ok := next.snapshot(volume, snap); ok {
		return VolumeInfo{}, fmt.Errorf("snapshot %s@%s: %w", volume, snap, ErrExists)
	}
	old := vs.medium
	mi, _ := next.medium(old)
	om := next.Mediums[mi]
	id := next.NextMedium
	sectors := uint64(vs.size / SectorSize)
	// Facts: the old medium is frozen (its medium-table run again, RO), the
	// new one lies over it.
	var b pyramid.Batch
	if err := b.Insert(a.mt, old, 0, om.Sectors, om.Parent, 0, pyramid.MediumRO); err != nil {
		return VolumeInfo{}, err
	}
	if err := b.Insert(a.mt, id, 0, sectors, old, 0, pyramid.MediumRW); err != nil {
		return VolumeInfo{}, err
	}
	if err := a.persistFacts(ctx, &b); err != nil {
		return VolumeInfo{}, err
	}
	next.NextMedium++
	next.Mediums[mi].RO = true
	next.Mediums = append(next.Mediums, catMedium{ID: id, Parent: old, Sectors: sectors})
	vi, _ := next.volume(volume)
	next.Volumes[vi].Medium = id
	sr := catSnapshot{Volume: volume, Name: snap, Medium: old, Size: vs.size, Created: time.Now().UTC().Truncate(time.Second)}
	next.Snapshots = append(next.Snapshots, sr)
	if err := a.commitCatalog(ctx, next); err != nil {
		return VolumeInfo{}, err
	}
	vs.medium = id
	full := volume + "@" + snap
	a.catMu.Lock()
	a.vols[full] = &volState{name: full, medium: old, size: sr.Size, readOnly: true}
	a.catMu.Unlock()
	a.log.Info("core: snapshot created", "snapshot", full, "medium", old, "volume_medium", id)
	return snapshotInfo(sr), nil
}

// DeleteSnapshot deletes "volume@snap". Clones made from it stay readable.
func (a *Array) DeleteSnapshot(ctx context.Context, name string) error {
	if err := a.enter(); err != nil {
		return err
	}
	defer a.exit()
	vol, snap, ok := splitSnapshot(name)
	if !ok {
		return fmt.Errorf("%w: %q is not VOLUME@SNAPSHOT", ErrInvalid, name)
	}
	a.adminMu.Lock()
	defer a.adminMu.Unlock()
	next := a.cat.clone()
	i, ok := next.snapshot(vol, snap)
	if !ok {
		return fmt.Errorf("snapshot %s: %w", name, ErrNotFound)
	}
	next.Snapshots = slices.Delete(next.Snapshots, i, i+1)
	if err := a.dropAndElide(ctx, next, []string{name}); err != nil {
		return err
	}
	a.log.Info("core: snapshot deleted", "snapshot", name)
	return nil
}

// Snapshots lists the snapshots of volume, or of every volume if volume is
// "", sorted by name.
func (a *Array) Snapshots(volume string) []VolumeInfo {
	a.catMu.RLock()
	defer a.catMu.RUnlock()
	var out []VolumeInfo
	if a.cat == nil {
		return out
	}
	for _, s := range a.cat.Snapshots {
		if volume == "" || s.Volume == volume {
			out = append(out, snapshotInfo(s))
		}
	}
	slices.SortFunc(out, func(x, y VolumeInfo) int { return strings.Compare(x.Name, y.Name) })
	return out
}

// Clone creates a new read-write volume whose contents start as those of
// the snapshot ("VOL@SNAP").
func (a *Array) Clone(ctx context.Context, snapshot, volume string) (VolumeInfo, error) {
	if err := a.enter(); err != nil {
		return VolumeInfo{}, err
	}
	defer a.exit()
	if err := validName(volume); err != nil {
		return VolumeInfo{}, err
	}
	vol, snap, ok := splitSnapshot(snapshot)
	if !ok {
		return VolumeInfo{}, fmt.Errorf("%w: %q is not VOLUME@SNAPSHOT", ErrInvalid, snapshot)
	}
	a.adminMu.Lock()
	defer a.adminMu.Unlock()
	next := a.cat.clone()
	si, ok := next.snapshot(vol, snap)
	if !ok {
		return VolumeInfo{}, fmt.Errorf("snapshot %s: %w", snapshot, ErrNotFound)
	}
	if _, ok := next.volume(volume); ok {
		return VolumeInfo{}, fmt.Errorf("volume %s: %w", volume, ErrExists)
	}
	s := next.Snapshots[si]
	id := next.NextMedium
	sectors := uint64(s.Size / SectorSize)
	var b pyramid.Batch
	if err := b.Insert(a.mt, id, 0, sectors, s.Medium, 0, pyramid.MediumRW); err != nil {
		return VolumeInfo{}, err
	}
	if err := a.persistFacts(ctx, &b); err != nil {
		return VolumeInfo{}, err
	}
	next.NextMedium++
	next.Mediums = append(next.Mediums, catMedium{ID: id, Parent: s.Medium, Sectors: sectors})
	vr := catVolume{Name: volume, Medium: id, Size: s.Size, Origin: snapshot, Created: time.Now().UTC().Truncate(time.Second)}
	next.Volumes = append(next.Volumes, vr)
	if err := a.commitCatalog(ctx, next); err != nil {
		return VolumeInfo{}, err
	}
	a.catMu.Lock()
	a.vols[volume] = &volState{name: volume, medium: id, size: s.Size}
	a.catMu.Unlock()
	a.log.Info("core: clone created", "volume", volume, "from", snapshot, "medium", id)
	return volumeInfo(vr), nil
}
