package image

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Snapshots are known to every replica as images are (directory.go): the
// Directory has an entry for each, written by the replica that took it;
// a replica that lacks one pulls its pushed image by digest, or names the
// replica that has it.

// shareSnapshots is ShareRefs of the snapshots: the first time, the
// snapshots this store took before it had a directory are recorded in it.
func (s *Store) shareSnapshots(ctx context.Context, dir Directory) error {
	s.mu.Lock()
	if s.idx.SnapshotsShared {
		s.mu.Unlock()
		return nil
	}
	var local []*Snapshot
	for id, rec := range s.idx.Snapshots {
		local = append(local, s.snapshotLocked(id, rec))
	}
	s.mu.Unlock()
	for _, snap := range local {
		_, err := dir.LookupSnapshot(ctx, snap.ID)
		if err == nil {
			continue
		}
		if !errors.Is(err, sandbox.ErrNotFound) {
			return fmt.Errorf("image store: share snapshots: %w", err)
		}
		if err := dir.RecordSnapshot(ctx, entryOf(snap)); err != nil {
			return fmt.Errorf("image store: share snapshots: %w", err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.idx.SnapshotsShared = true
	if err := s.saveLocked(); err != nil {
		return fmt.Errorf("image store: share snapshots: %w", err)
	}
	if len(local) > 0 {
		s.log.InfoContext(ctx, "image store: snapshots shared with the other replicas", "snapshots", len(local))
	}
	return nil
}

// entryOf is snap as the Directory keeps it: without this host's layer
// directories.
func entryOf(snap *Snapshot) Snapshot {
	e := *snap
	e.Layers = nil
	e.Config.Env = slices.Clone(snap.Config.Env)
	return e
}

// recordSnapshot writes a snapshot this store has just taken into the
// directory.
func (s *Store) recordSnapshot(ctx context.Context, snap *Snapshot) error {
	if s.dirRefs == nil {
		return nil
	}
	if err := s.dirRefs.RecordSnapshot(ctx, entryOf(snap)); err != nil {
		return fmt.Errorf("record snapshot %s for the other replicas: %w", snap.ID, err)
	}
	return nil
}

// LookupSnapshot returns a snapshot as every replica knows it: this
// store's own, or, when only the Directory has it (taken through another
// replica), its entry there, with Replica set and no Layers (creating
// from it here resolves it: ResolveSnapshot), its expiry from its last
// use through any replica. One the Directory no longer has was deleted
// through another replica: not found. Without a Directory it is
// GetSnapshot.
func (s *Store) LookupSnapshot(ctx context.Context, id string) (*Snapshot, error) {
	if s.dirRefs == nil {
		return s.GetSnapshot(id)
	}
	e, err := s.dirRefs.LookupSnapshot(ctx, id)
	if errors.Is(err, sandbox.ErrNotFound) {
		return nil, snapshotNotFound(id)
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: read the snapshot directory: %w", id, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.knownLocked(e), nil
}

// ListSnapshots returns a team's snapshots ("" every team's), oldest
// first, as every replica knows them: with a Directory, its entries, each
// as LookupSnapshot gives it, so that every replica lists the same set
// (one this store still holds but the Directory lacks was deleted through
// another replica, and is not listed); without one, this store's.
func (s *Store) ListSnapshots(ctx context.Context, team string) ([]*Snapshot, error) {
	if s.dirRefs == nil {
		out := s.Snapshots()
		if team != "" {
			out = slices.DeleteFunc(out, func(snap *Snapshot) bool { return snap.TeamID != team })
		}
		return out, nil
	}
	entries, err := s.dirRefs.ListSnapshots(ctx, team)
	if err != nil {
		return nil, fmt.Errorf("list snapshots: read the snapshot directory: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Snapshot, 0, len(entries))
	for _, e := range entries {
		out = append(out, s.knownLocked(e))
	}
	return out, nil
}

// knownLocked is a Directory entry as this store answers for it: its own
// record, layers included, when it holds it, else the entry with Replica
// set and no Layers; either with the Directory's size and creation time,
// and the later last use of the two, from which it expires. Callers hold
// s.mu.
func (s *Store) knownLocked(e Snapshot) *Snapshot {
	snap := &e
	if rec, ok := s.idx.Snapshots[e.ID]; ok {
		snap = s.snapshotLocked(e.ID, rec)
		snap.LastUsed = later(snap.LastUsed, e.LastUsed)
		// The Directory's, as every replica answers: the order of the
		// lists, and the size the taking replica measured (a pulled
		// copy's layer is measured as unpacked here).
		snap.CreatedAt, snap.Size = e.CreatedAt, e.Size
	} else {
		snap.Layers = nil
	}
	snap.ExpiresAt = time.Time{}
	if ttl := s.ttl(); ttl > 0 {
		snap.ExpiresAt = snap.LastUsed.Add(ttl)
	}
	return snap
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// ResolveSnapshot returns a snapshot with its layers in this store, as
// the Directory says it is. One this store lacks (taken through another
// replica) is pulled first from the registry it was pushed to, by digest,
// with the pull's own checks and caps (its team's quota counted it once
// already, in the Directory); one in no registry is an error of kind sandbox.ErrNotFound
// ("snapshot_on_other_replica") naming the replica that has it. A local
// snapshot the Directory no longer has was deleted through another
// replica: it is dropped here (its layers stay while a sandbox uses them).
// Without a Directory it is GetSnapshot.
func (s *Store) ResolveSnapshot(ctx context.Context, id string) (*Snapshot, error) {
	if s.dirRefs == nil {
		return s.GetSnapshot(id)
	}
	e, err := s.dirRefs.LookupSnapshot(ctx, id)
	if errors.Is(err, sandbox.ErrNotFound) {
		if local, err := s.removeLocalSnapshot(id); err != nil {
			s.log.WarnContext(ctx, "image store: drop a snapshot deleted through another replica", "snapshot", id, "err", err)
		} else if local {
			s.log.InfoContext(ctx, "image store: snapshot deleted through another replica, dropped here", "snapshot", id)
		}
		return nil, snapshotNotFound(id)
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: read the snapshot directory: %w", id, err)
	}
	if snap, err := s.GetSnapshot(id); err == nil {
		return snap, nil
	}
	return s.fetchSnapshot(ctx, e)
}

// fetchSnapshot pulls the pushed image of a directory entry by digest and
// records it as a snapshot of this store: its layers, topmost (the
// snapshot's own) first, and what the entry says of the rest. The pull is
// bounded by PullTimeout and ends with the store.
func (s *Store) fetchSnapshot(ctx context.Context, e Snapshot) (*Snapshot, error) {
	if e.Ref == "" {
		return nil, sandbox.Errorf(sandbox.ErrNotFound, "snapshot_on_other_replica",
			"snapshot %s was taken through replica %s and is in no registry, so this replica cannot pull it: create from it through replica %s (or run the replicas with --snapshot-registry, which pushes snapshots where every replica reaches them)",
			e.ID, e.Replica, e.Replica)
	}
	from, err := name.NewDigest(e.Ref)
	if err != nil {
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_image_ref", "snapshot %s: the directory's image %q: %v", e.ID, e.Ref, err)
	}
	// No quota check: the snapshot is counted once, in the Directory,
	// whichever replicas hold it (quota.go); pulling it here adds nothing
	// to what the team keeps.
	ctx, cancel := context.WithTimeout(ctx, s.opts.PullTimeout)
	defer cancel()
	defer context.AfterFunc(s.life, cancel)()
	log := s.log.With("snapshot", e.ID, "team", e.TeamID, "image", e.Ref, "replica", e.Replica)
	log.InfoContext(ctx, "snapshot not in this replica's store: pulling its image by digest")
	// The snapshot registry is the operator's: the server's own logins
	// reach it, as they pushed to it, and so does the push's transport
	// (it may be on a private address the guard refuses: an in-cluster
	// registry). A Ref elsewhere (the setting changed) is pulled as any.
	var transport http.RoundTripper = s.registry
	if repo, err := name.NewRepository(s.opts.SnapshotRegistry); err == nil && s.opts.SnapshotRegistry != "" &&
		repo.RegistryStr() == from.Context().RegistryStr() {
		transport = remote.DefaultTransport
	}
	img, err := s.remoteImage(ctx, from, PullOptions{Keychain: true}, transport)
	if err != nil {
		return nil, snapshotPullError(e, registryError(from.Name(), err))
	}
	diffIDs, unpin, err := s.installLayers(ctx, img, func(p LayerProgress) {
		if p.Done {
			log.InfoContext(ctx, "snapshot pull: layer", "layer", p.Index+1, "of", p.Count, "bytes", p.Bytes, "cached", p.Cached)
		}
	})
	defer unpin()
	if err != nil {
		return nil, snapshotPullError(e, registryError(from.Name(), err))
	}
	if len(diffIDs) == 0 {
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_layer", "snapshot %s: its image %s has no layers", e.ID, e.Ref)
	}
	layers := make([]string, len(diffIDs))
	for i, id := range diffIDs {
		layers[len(diffIDs)-1-i] = strings.TrimPrefix(id, "sha256:")
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if rec, ok := s.idx.Snapshots[e.ID]; ok {
		return s.snapshotLocked(e.ID, rec), nil // a concurrent create pulled it
	}
	rec := &snapshotRecord{
		Source: e.Source, TeamID: e.TeamID, Image: e.Image, Digest: e.Digest, OnHost: e.OnHost, Runtime: e.Runtime,
		Config: ImageConfig{Env: slices.Clone(e.Config.Env), WorkingDir: e.Config.WorkingDir, User: e.Config.User},
		Layers: layers, Ref: e.Ref, CreatedAt: e.CreatedAt, LastUsed: s.now().UTC(),
	}
	if s.idx.Snapshots == nil {
		s.idx.Snapshots = map[string]*snapshotRecord{}
	}
	s.idx.Snapshots[e.ID] = rec
	if err := s.saveLocked(); err != nil {
		delete(s.idx.Snapshots, e.ID)
		return nil, fmt.Errorf("snapshot %s: %w", e.ID, err)
	}
	log.InfoContext(ctx, "snapshot pulled", "layers", len(layers), "bytes", s.idx.Layers[layers[0]].Size)
	return s.snapshotLocked(e.ID, rec), nil
}

// snapshotPullError says which replica took a snapshot whose pull failed.
func snapshotPullError(e Snapshot, err error) error {
	if errors.Is(err, sandbox.ErrNotFound) && sandbox.CodeOf(err) == "image_not_found" {
		return fmt.Errorf("%w: %w", sandbox.Errorf(sandbox.ErrNotFound, "snapshot_gone_from_registry",
			"snapshot %s was taken through replica %s, but its image %s is no longer in its registry", e.ID, e.Replica, e.Ref), err)
	}
	return fmt.Errorf("snapshot %s (taken through replica %s): %w", e.ID, e.Replica, err)
}

// ExpireAbandoned expires the Directory's snapshots that no replica's own
// GC will: GC expires only the snapshots its store holds, so one whose
// replica is gone for good, and which no live replica pulled, would stay
// in the Directory and its registry forever. Of the entries unused through
// every replica for the TTL that this store does not hold (those its own
// GC decides, with its sandboxes' layers), each that abandoned says so of
// (its replica is gone and no sandbox needs it: the caller's to judge) is
// forgotten in the Directory, then its pushed image deleted from its
// registry. The caller runs it once among the replicas (internal/daemon:
// the background lease's holder). It returns how many it expired; a
// failure leaves the others to be tried.
func (s *Store) ExpireAbandoned(ctx context.Context, abandoned func(ctx context.Context, e Snapshot) (bool, error)) (int, error) {
	ttl := s.ttl()
	if s.dirRefs == nil || ttl == 0 {
		return 0, nil
	}
	entries, err := s.dirRefs.ListSnapshots(ctx, "")
	if err != nil {
		return 0, fmt.Errorf("expire abandoned snapshots: read the snapshot directory: %w", err)
	}
	now := s.now()
	unused := func(e Snapshot) bool { return !now.Before(later(e.CreatedAt, e.LastUsed).Add(ttl)) }
	var (
		n    int
		errs []error
	)
	for _, e := range entries {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		if !unused(e) {
			continue
		}
		s.mu.Lock()
		_, held := s.idx.Snapshots[e.ID]
		s.mu.Unlock()
		if held {
			continue
		}
		ok, err := abandoned(ctx, e)
		if err != nil {
			errs = append(errs, fmt.Errorf("snapshot %s: %w", e.ID, err))
			continue
		}
		if !ok {
			continue
		}
		// Asked again right before: a use through another replica since
		// the list keeps it.
		cur, err := s.dirRefs.LookupSnapshot(ctx, e.ID)
		if errors.Is(err, sandbox.ErrNotFound) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("snapshot %s: read the snapshot directory: %w", e.ID, err))
			continue
		}
		if !unused(cur) {
			continue
		}
		if err := s.dirRefs.ForgetSnapshot(ctx, e.ID); err != nil {
			errs = append(errs, fmt.Errorf("snapshot %s: forget it in the snapshot directory: %w", e.ID, err))
			continue
		}
		n++
		s.log.InfoContext(ctx, "image store: snapshot of a gone replica expired", "snapshot", e.ID, "team", cur.TeamID,
			"replica", cur.Replica, "lastUsed", cur.LastUsed, "image", cur.Ref)
		if cur.Ref == "" {
			continue
		}
		// Forgotten first, as GC does: a failed delete leaves an image no
		// record names, not a record of an image that is gone.
		if err := s.UnpushSnapshot(ctx, cur.Ref); err != nil {
			s.log.WarnContext(ctx, "image store: delete an expired snapshot's image", "snapshot", e.ID, "image", cur.Ref, "err", err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return n, fmt.Errorf("expire abandoned snapshots: %w", err)
	}
	return n, nil
}
