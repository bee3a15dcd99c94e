package node

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Snapshots is the optional power of an Images store to keep sandboxes'
// writable layers as snapshots; *image.Store has it. Node discovers it on
// Config.Images by type assertion.
type Snapshots interface {
	AddSnapshot(ctx context.Context, spec image.NewSnapshot, fill func(ctx context.Context, dir string, maxBytes int64) (int64, error)) (*image.Snapshot, error)
	GetSnapshot(id string) (*image.Snapshot, error)
	// LookupSnapshot and ResolveSnapshot know the snapshots other
	// replicas took too (image.Store's Directory): the first describes
	// one, the second brings its layers here.
	LookupSnapshot(ctx context.Context, id string) (*image.Snapshot, error)
	ResolveSnapshot(ctx context.Context, id string) (*image.Snapshot, error)
	TouchSnapshot(ctx context.Context, id string) error
	RemoveSnapshot(ctx context.Context, id string) error
	UnpushSnapshot(ctx context.Context, ref string) error
}

var _ Snapshots = (*image.Store)(nil)

// snapshotTimeout bounds copying one sandbox's changes; longer than
// driverTimeout because the copy is as large as what the sandbox wrote.
const snapshotTimeout = 10 * time.Minute

var errNoSnapshots = sandbox.Errorf(sandbox.ErrUnsupported, "snapshots_unsupported", "this node cannot take snapshots")

func (m *Manager) snapshots() (Snapshots, error) {
	s, ok := m.cfg.Images.(Snapshots)
	if !ok {
		return nil, errNoSnapshots
	}
	return s, nil
}

// resolveSnapshot finds a snapshot and the root filesystem for a sandbox
// created from it: one another replica took is pulled here first, if it
// was pushed to a registry (Snapshots.ResolveSnapshot).
func (m *Manager) resolveSnapshot(ctx context.Context, id string) (*image.Snapshot, *runtime.Rootfs, error) {
	store, err := m.snapshots()
	if err != nil {
		return nil, nil, err
	}
	snap, err := store.ResolveSnapshot(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	// Only its expiry depends on it: not worth failing the create.
	if err := store.TouchSnapshot(ctx, id); err != nil {
		m.log.Warn("touch snapshot", "snapshot", id, "err", err)
	}
	// A snapshot's layers are in lowerdir order already (its own first).
	return snap, &runtime.Rootfs{Lowers: slices.Clone(snap.Layers), OnHost: snap.OnHost, Ref: snap.Ref}, nil
}

// CanSnapshot returns the error Snapshot of id would fail with once id is
// stopped, before it copies anything (no snapshot store here, a runtime
// that cannot, or one that snapshots running sandboxes only), or nil. For
// a caller about to stop a sandbox in order to snapshot it, which must not
// stop it only to learn that the snapshot cannot be taken.
func (m *Manager) CanSnapshot(ctx context.Context, id string) error {
	if _, err := m.snapshots(); err != nil {
		return err
	}
	e, err := m.lookup(ctx, id)
	if err != nil {
		return err
	}
	sb, _, _ := e.snapshot()
	if _, err = m.snapshotterOf(sb); err != nil {
		return err
	}
	if _, err = m.snapshotPush(sb, true); err != nil {
		return err
	}
	if caps := m.driverOf(sb).Capabilities(); caps.SnapshotRunningOnly {
		return sandbox.Errorf(sandbox.ErrUnsupported, sandbox.CodeSnapshotRunningOnly,
			"runtime %q snapshots running sandboxes only: a stopped sandbox's changes are gone with it (pause a sandbox to keep them)", caps.Name)
	}
	return nil
}

// Snapshot copies a running or stopped sandbox's changes into a new
// snapshot stacked on the sandbox's own layers. The sandbox keeps running
// (frozen for the copy by drivers that can) and keeps its writable layer.
func (m *Manager) Snapshot(ctx context.Context, id string) (*image.Snapshot, error) {
	store, err := m.snapshots()
	if err != nil {
		return nil, err
	}
	e, err := m.lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	// Held for the copy, so that a stop or delete waits for it instead of
	// removing the layer under it.
	e.op.Lock()
	defer e.op.Unlock()
	sb, _, gone := e.snapshot()
	switch {
	case gone:
		return nil, notFound(id)
	case sb.State != sandbox.Running && sb.State != sandbox.Stopped:
		return nil, sandbox.Errorf(sandbox.ErrConflict, "sandbox_not_snapshottable", "sandbox %s is %s: only a running or stopped sandbox can be snapshotted", id, sb.State)
	case !sb.LayerRemovedAt.IsZero():
		return nil, errLayerRemoved(sb, m.cfg.StoppedRetention)
	}
	snapper, err := m.snapshotterOf(sb)
	if err != nil {
		return nil, err
	}
	snap, err := m.snapshotLocked(ctx, store, snapper, sb, true)
	if err != nil {
		return nil, err
	}
	m.emit(ctx, Event{Type: EventSnapshotted, Sandbox: sb, SnapshotID: snap.ID})
	m.log.Info("sandbox snapshotted", "sandbox", id, "snapshot", snap.ID, "bytes", snap.Size)
	return snap, nil
}

// snapshotLocked copies sb's writable layer into a new snapshot. share:
// push it for the other replicas even when this one's driver needs no
// push (sharingPush); a pause's snapshot, resumed here, is not. The
// caller holds the sandbox's op lock.
func (m *Manager) snapshotLocked(ctx context.Context, store Snapshots, snapper runtime.Snapshotter, sb sandbox.Sandbox, share bool) (*image.Snapshot, error) {
	push, err := m.snapshotPush(sb, share)
	if err != nil {
		return nil, err
	}
	env := slices.Sorted(maps.Keys(sb.Env))
	for i, k := range env {
		env[i] = k + "=" + sb.Env[k]
	}
	spec := image.NewSnapshot{
		Source: sb.ID, TeamID: sb.TeamID, Image: sb.Image, Digest: sb.ImageDigest,
		// Only the host image has no digest, and it is not in the store.
		OnHost:  sb.ImageDigest == "",
		Runtime: m.driverOf(sb).Capabilities().Name,
		Config:  image.ImageConfig{Env: env, WorkingDir: sb.WorkingDir, User: sb.ImageUser},
		Lowers:  sb.ImageLayers,
		Push:    push,
	}
	// What the sandbox was created from, for a driver that tells the
	// sandbox's deletions from it (Kubernetes).
	base := &runtime.Rootfs{Lowers: slices.Clone(sb.ImageLayers), OnHost: spec.OnHost}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), snapshotTimeout)
	defer cancel()
	snap, err := store.AddSnapshot(sctx, spec, func(ctx context.Context, dir string, maxBytes int64) (int64, error) {
		return snapper.Snapshot(ctx, sb.ID, base, dir, maxBytes)
	})
	if err != nil {
		return nil, fmt.Errorf("node: snapshot sandbox %s: %w", sb.ID, err)
	}
	return snap, nil
}

// Fork snapshots a sandbox and creates a new one from the snapshot. Fields
// of req left zero take the source's values where it has one (resources,
// network policy), so a fork is never less confined than its source by
// accident; Image must be empty.
func (m *Manager) Fork(ctx context.Context, id string, req sandbox.CreateRequest) (sandbox.Sandbox, error) {
	if req.Image != "" || req.Snapshot != "" {
		return sandbox.Sandbox{}, sandbox.Errorf(sandbox.ErrInvalid, "invalid_fork", "a fork starts from its source: image and snapshot must be empty")
	}
	src, err := m.Get(ctx, id)
	if err != nil {
		return sandbox.Sandbox{}, err
	}
	snap, err := m.Snapshot(ctx, id)
	if err != nil {
		return sandbox.Sandbox{}, err
	}
	if req.Resources == (sandbox.Resources{}) {
		req.Resources = src.Resources
	}
	if req.NetworkPolicy == nil && src.NetworkPolicy != nil && m.cfg.Network != nil {
		p := clonePolicy(*src.NetworkPolicy)
		req.NetworkPolicy = &p
	}
	req.Snapshot = snap.ID
	sb, err := m.Create(ctx, req)
	if err != nil {
		return sb, fmt.Errorf("node: fork sandbox %s: %w", id, err)
	}
	return sb, nil
}

// DeleteSnapshot forgets a snapshot, whichever replica took it, deletes
// its pushed image from its registry if it has one and the registry
// allows, and, when the store is a Collector,
// collects its layer unless a stopped sandbox still stacks it (then the
// layer goes with that sandbox). It refuses a snapshot a pending or running
// sandbox was created from (ErrConflict "snapshot_in_use").
func (m *Manager) DeleteSnapshot(ctx context.Context, id string) error {
	store, err := m.snapshots()
	if err != nil {
		return err
	}
	snap, err := store.LookupSnapshot(ctx, id)
	if err != nil {
		return err
	}
	if m.SnapshotInUse(id) {
		return sandbox.Errorf(sandbox.ErrConflict, "snapshot_in_use", "snapshot %s is used by a running sandbox", id)
	}
	if err := store.RemoveSnapshot(ctx, id); err != nil {
		return err
	}
	if snap.Ref != "" {
		// The snapshot is gone either way; its image only costs the
		// registry's storage.
		if err := store.UnpushSnapshot(ctx, snap.Ref); err != nil {
			m.log.Warn("delete a snapshot's image", "snapshot", id, "image", snap.Ref, "err", err)
		}
	}
	if c, ok := m.cfg.Images.(Collector); ok {
		if err := c.GC(ctx, m.LayerInUse); err != nil {
			return fmt.Errorf("delete snapshot %s: %w", id, err)
		}
	}
	return nil
}

// SnapshotInUse reports whether a pending or running sandbox was created
// from the snapshot, or a paused one resumes from it; deleting such a
// snapshot is refused.
func (m *Manager) SnapshotInUse(id string) bool {
	for _, sb := range m.records() {
		if sb.Snapshot == id && (sb.State == sandbox.Pending || sb.State == sandbox.Running) ||
			sb.Pause != nil && sb.Pause.Snapshot == id {
			return true
		}
	}
	return false
}
