package image

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/paddock-dev/paddock/internal/crashpoint"
	"github.com/paddock-dev/paddock/internal/fstree"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// DefaultSnapshotTTL is how long a snapshot lives after its last use when
// StoreOptions.SnapshotTTL is 0.
const DefaultSnapshotTTL = 7 * 24 * time.Hour

// Snapshot is a sandbox's writable layer frozen into a read-only layer of
// the store, stacked on the layers the sandbox itself stood on.
type Snapshot struct {
	ID     string // "snap-<random>"
	Source string // the sandbox it was taken of
	TeamID string // the source sandbox's team, which owns the snapshot
	// Image and Digest name what the source sandbox was created from (the
	// base image, or the base image of the snapshot it was created from).
	Image  string
	Digest string
	// OnHost means the layers stack on the driver's host image, which is
	// not in the store: the driver appends it below Layers.
	OnHost bool
	// Runtime ran the source sandbox; sandboxes created from the
	// snapshot without a runtime of their own run on it too.
	Runtime string
	// Config is the environment and working dir the source sandbox had,
	// which sandboxes created from the snapshot start with.
	Config ImageConfig
	// Layers are layer directories, topmost (the snapshot's own) first.
	Layers []string
	// Ref is the snapshot as a registry image (repo@digest) when it was
	// pushed (NewSnapshot.Push): what a runtime whose nodes pull images
	// runs. "" for a snapshot kept on this host only.
	Ref  string
	Size int64 // bytes of the snapshot's own layer
	// Replica is the replica that took it, in what a Directory returns
	// (and in LookupSnapshot's answer for a snapshot this store lacks);
	// "" in this store's own records.
	Replica   string
	CreatedAt time.Time
	LastUsed  time.Time
	ExpiresAt time.Time // zero: never
}

// NewSnapshot describes a snapshot to AddSnapshot.
type NewSnapshot struct {
	Source  string
	TeamID  string
	Image   string
	Digest  string
	OnHost  bool
	Runtime string
	Config  ImageConfig
	// Lowers are the source sandbox's layer dirs in the store, topmost first.
	Lowers []string
	// Push, when set, pushes the snapshot to a registry as an image once
	// its layer is filled and before it is recorded: a failed push fails
	// AddSnapshot with nothing recorded (unless Push.BestEffort).
	Push *SnapshotPush
}

// snapshotRecord is a snapshot as persisted in the index.
type snapshotRecord struct {
	Source    string      `json:"source"`
	TeamID    string      `json:"team_id,omitempty"`
	Image     string      `json:"image"`
	Digest    string      `json:"digest,omitempty"`
	OnHost    bool        `json:"on_host,omitempty"`
	Runtime   string      `json:"runtime,omitempty"`
	Config    ImageConfig `json:"config"`
	Layers    []string    `json:"layers"` // layer hex, topmost first
	Ref       string      `json:"ref,omitempty"`
	CreatedAt time.Time   `json:"created_at"`
	LastUsed  time.Time   `json:"last_used"`
}

func snapshotNotFound(id string) error {
	return sandbox.Errorf(sandbox.ErrNotFound, "snapshot_not_found", "snapshot %q not found", id)
}

// ttl is the configured snapshot lifetime; 0 means forever.
func (s *Store) ttl() time.Duration {
	switch {
	case s.opts.SnapshotTTL < 0:
		return 0
	case s.opts.SnapshotTTL == 0:
		return DefaultSnapshotTTL
	}
	return s.opts.SnapshotTTL
}

// AddSnapshot makes a new layer by calling fill with a fresh empty
// directory and a byte cap (the store's MaxLayerBytes), then records a
// snapshot whose layers are that one over spec.Lowers. The directory is in
// the store's tmp/ until fill succeeds, so a failed or crashed fill leaves
// nothing the index knows.
func (s *Store) AddSnapshot(ctx context.Context, spec NewSnapshot, fill func(ctx context.Context, dir string, maxBytes int64) (int64, error)) (*Snapshot, error) {
	var lowers []string
	for _, l := range spec.Lowers {
		if filepath.Dir(l) != filepath.Join(s.dir, "layers") {
			return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_layer", "snapshot: layer %s is not in the image store", l)
		}
		lowers = append(lowers, filepath.Base(l))
	}
	// The team's room bounds the copy itself, so an over-quota sandbox
	// is not copied in full only to be thrown away.
	n, used, err := s.snapshotUsage(ctx, spec.TeamID, "")
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	room, err := s.snapshotRoom(n, used)
	if err != nil {
		return nil, err
	}
	maxBytes := s.opts.MaxLayerBytes
	if room >= 0 {
		maxBytes = min(maxBytes, room)
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	id := "snap-" + hex.EncodeToString(b[:])
	// A random layer name, distinct from every diff ID: the content was
	// not hashed, and two snapshots never share their layer.
	layerHex := "snap" + hex.EncodeToString(b[:])
	tmp, err := os.MkdirTemp(filepath.Join(s.dir, "tmp"), "snap-")
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	defer fstree.Remove(tmp) // no-op once renamed
	// The layer's root is the sandbox's /.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	size, err := fill(ctx, tmp, maxBytes)
	if err != nil {
		_, maxBytes := s.snapshotCaps()
		return nil, quotaErr(err, room, s.opts.MaxLayerBytes, used, maxBytes)
	}
	crashpoint.Hit("image/snapshot/copied")
	var ref string
	if spec.Push != nil {
		ref, err = s.pushSnapshot(ctx, id, tmp, spec)
		switch {
		case err != nil && spec.Push.BestEffort && ctx.Err() == nil:
			s.log.WarnContext(ctx, "image store: snapshot kept on this host only: its push failed", "snapshot", id, "repo", spec.Push.Repo, "err", err)
			ref = ""
		case err != nil:
			return nil, fmt.Errorf("snapshot: %w", err)
		}
	}
	recorded := false
	// Runs after the unlock below: no registry call holds s.mu. A crash
	// before it leaves the image in the registry, tagged with an id no
	// record has.
	defer func() {
		if ref != "" && !recorded {
			if err := s.UnpushSnapshot(context.WithoutCancel(ctx), ref); err != nil {
				s.log.WarnContext(ctx, "image store: delete the image of a snapshot not recorded", "snapshot", id, "image", ref, "err", err)
			}
		}
	}()

	snap, err := s.installSnapshot(ctx, id, layerHex, tmp, size, lowers, ref, spec)
	if err != nil {
		return nil, err
	}
	// Known to the other replicas before anyone is told of it: a
	// snapshot the directory lacks was deleted through another replica.
	if err := s.recordSnapshot(ctx, snap); err != nil {
		s.dropSnapshot(ctx, id)
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	// Others of the team may have been taken through other replicas
	// during the copy: checked again with this one recorded.
	if err := s.settleSnapshot(ctx, snap); err != nil {
		s.dropSnapshot(ctx, id)
		return nil, err
	}
	recorded = true
	s.log.InfoContext(ctx, "image store: snapshot added", "snapshot", id, "sandbox", spec.Source, "bytes", size)
	return snap, nil
}

// installSnapshot moves a filled snapshot layer (tmp) into the store and
// records the snapshot, within the team's quota, under s.mu.
func (s *Store) installSnapshot(ctx context.Context, id, layerHex, tmp string, size int64, lowers []string, ref string, spec NewSnapshot) (*Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Others of the team may have been added during the copy: checked
	// here in this store's index, or, with a Directory, there once this
	// one is recorded (AddSnapshot's settleSnapshot).
	if s.dirRefs == nil {
		n, used := s.snapshotUsageLocked(spec.TeamID)
		if err := s.snapshotFits(n, used, size); err != nil {
			return nil, err
		}
	}
	for _, h := range lowers {
		if _, ok := s.idx.Layers[h]; !ok {
			return nil, sandbox.Errorf(sandbox.ErrNotFound, "layer_not_found", "snapshot: layer %s is gone from the store", h)
		}
	}
	if err := os.Rename(tmp, s.layerDir(layerHex)); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	crashpoint.Hit("image/snapshot/installed")
	now := s.now().UTC()
	rec := &snapshotRecord{
		Source: spec.Source, TeamID: spec.TeamID, Image: spec.Image, Digest: spec.Digest, OnHost: spec.OnHost, Runtime: spec.Runtime,
		Config: spec.Config, Layers: append([]string{layerHex}, lowers...), Ref: ref,
		CreatedAt: now, LastUsed: now,
	}
	if s.idx.Snapshots == nil {
		s.idx.Snapshots = map[string]*snapshotRecord{}
	}
	s.idx.Layers[layerHex] = layerRecord{Size: size}
	s.idx.Snapshots[id] = rec
	if err := s.saveLocked(); err != nil {
		delete(s.idx.Snapshots, id)
		delete(s.idx.Layers, layerHex)
		fstree.Remove(s.layerDir(layerHex))
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	return s.snapshotLocked(id, rec), nil
}

// dropSnapshot forgets a snapshot just installed that could not be
// recorded in the directory, with its own layer, which nothing stacks yet.
func (s *Store) dropSnapshot(ctx context.Context, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.idx.Snapshots[id]
	if !ok {
		return
	}
	delete(s.idx.Snapshots, id)
	if err := s.saveLocked(); err != nil {
		s.log.WarnContext(ctx, "image store: forget a snapshot not recorded", "snapshot", id, "err", err)
		return
	}
	if h := rec.Layers[0]; s.pinned[h] == 0 {
		delete(s.idx.Layers, h)
		fstree.Remove(s.layerDir(h))
	}
}

func (s *Store) snapshotLocked(id string, rec *snapshotRecord) *Snapshot {
	snap := &Snapshot{
		ID: id, Source: rec.Source, TeamID: rec.TeamID, Image: rec.Image, Digest: rec.Digest, OnHost: rec.OnHost, Runtime: rec.Runtime,
		Config: rec.Config, Ref: rec.Ref, CreatedAt: rec.CreatedAt, LastUsed: rec.LastUsed,
	}
	snap.Config.Env = slices.Clone(rec.Config.Env)
	for _, h := range rec.Layers {
		snap.Layers = append(snap.Layers, s.layerDir(h))
	}
	if len(rec.Layers) > 0 {
		snap.Size = s.idx.Layers[rec.Layers[0]].Size
	}
	if ttl := s.ttl(); ttl > 0 {
		snap.ExpiresAt = rec.LastUsed.Add(ttl)
	}
	return snap
}

// GetSnapshot returns one snapshot.
func (s *Store) GetSnapshot(id string) (*Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.idx.Snapshots[id]
	if !ok {
		return nil, snapshotNotFound(id)
	}
	return s.snapshotLocked(id, rec), nil
}

// Snapshots returns every snapshot, oldest first.
func (s *Store) Snapshots() []*Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Snapshot, 0, len(s.idx.Snapshots))
	for id, rec := range s.idx.Snapshots {
		out = append(out, s.snapshotLocked(id, rec))
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// TouchSnapshot records that a sandbox starts from the snapshot now, which
// pushes its expiry back, here and in the Directory: its expiry counts
// from its last use through any replica.
func (s *Store) TouchSnapshot(ctx context.Context, id string) error {
	now := s.now().UTC()
	if err := s.touchLocal(id, now); err != nil {
		return err
	}
	if s.dirRefs == nil {
		return nil
	}
	if err := s.dirRefs.TouchSnapshot(ctx, id, now); err != nil {
		return fmt.Errorf("snapshot %s: record its use for the other replicas: %w", id, err)
	}
	return nil
}

func (s *Store) touchLocal(id string, at time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.idx.Snapshots[id]
	if !ok {
		return snapshotNotFound(id)
	}
	if at.After(rec.LastUsed) {
		rec.LastUsed = at
	}
	return s.saveLocked()
}

// RemoveSnapshot forgets a snapshot, here and in the Directory, whichever
// replica took it: the others drop their copies when next asked for it
// (ResolveSnapshot) or at their next GC. Its layer stays on disk until
// GC, which keeps it while a sandbox still stacks it; a pushed image stays
// in its registry (UnpushSnapshot deletes it). Not found only if neither
// has it.
func (s *Store) RemoveSnapshot(ctx context.Context, id string) error {
	local, err := s.removeLocalSnapshot(id)
	if err != nil {
		return err
	}
	if s.dirRefs == nil {
		if !local {
			return snapshotNotFound(id)
		}
		return nil
	}
	if !local {
		_, err := s.dirRefs.LookupSnapshot(ctx, id)
		if errors.Is(err, sandbox.ErrNotFound) {
			return snapshotNotFound(id)
		}
		if err != nil {
			return fmt.Errorf("remove snapshot %s: read the snapshot directory: %w", id, err)
		}
	}
	if err := s.dirRefs.ForgetSnapshot(ctx, id); err != nil {
		return fmt.Errorf("remove snapshot %s from the other replicas' directory (removed here; try again): %w", id, err)
	}
	return nil
}

// removeLocalSnapshot forgets a snapshot of this store, and says if it had it.
func (s *Store) removeLocalSnapshot(id string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.idx.Snapshots[id]; !ok {
		return false, nil
	}
	delete(s.idx.Snapshots, id)
	return true, s.saveLocked()
}

// expiry is what the Directory says of a snapshot past its TTL here.
type expiry struct {
	gone     bool      // deleted through another replica: drop it here only
	lastUsed time.Time // used through another replica since: keep it
	expired  bool      // unused everywhere for the TTL: forgotten there, drop and unpush
}

// snapshotExpiries asks the Directory about each snapshot of this store
// past its TTL here (one store read each, none for the others): another
// replica may have used it since, or deleted it. It takes s.mu only to
// list them: no store call holds it. Nil without a Directory.
func (s *Store) snapshotExpiries(ctx context.Context, inUse func(string) bool) map[string]expiry {
	ttl := s.ttl()
	if s.dirRefs == nil || ttl == 0 {
		return nil
	}
	now := s.now()
	var ids []string
	s.mu.Lock()
	for id, rec := range s.idx.Snapshots {
		if !now.Before(rec.LastUsed.Add(ttl)) && (len(rec.Layers) == 0 || !inUse(s.layerDir(rec.Layers[0]))) {
			ids = append(ids, id)
		}
	}
	s.mu.Unlock()
	out := map[string]expiry{}
	for _, id := range ids {
		e, err := s.dirRefs.LookupSnapshot(ctx, id)
		switch {
		case errors.Is(err, sandbox.ErrNotFound):
			out[id] = expiry{gone: true}
		case err != nil:
			// Kept until a GC that can ask.
			s.log.WarnContext(ctx, "image store: snapshot expiry: read the snapshot directory", "snapshot", id, "err", err)
		case now.Before(e.LastUsed.Add(ttl)):
			out[id] = expiry{lastUsed: e.LastUsed}
		default:
			if err := s.dirRefs.ForgetSnapshot(ctx, id); err != nil {
				s.log.WarnContext(ctx, "image store: snapshot expiry: forget it in the snapshot directory", "snapshot", id, "err", err)
				continue
			}
			out[id] = expiry{expired: true}
		}
	}
	return out
}

// expireSnapshotsLocked drops snapshots unused for longer than the TTL,
// unless a sandbox still stacks their own layer, and returns the pushed
// images of those it dropped, for the caller to delete once it has
// released s.mu. With a Directory only those exp (snapshotExpiries) says
// are: its last use through any replica is what counts. Callers hold s.mu.
func (s *Store) expireSnapshotsLocked(ctx context.Context, inUse func(string) bool, exp map[string]expiry) (pushed []string) {
	ttl := s.ttl()
	if ttl == 0 {
		return nil
	}
	now := s.now()
	for id, rec := range s.idx.Snapshots {
		if now.Before(rec.LastUsed.Add(ttl)) || (len(rec.Layers) > 0 && inUse(s.layerDir(rec.Layers[0]))) {
			continue
		}
		if s.dirRefs != nil {
			e, ok := exp[id]
			switch {
			case !ok:
				continue // not asked, or no answer: the next GC asks
			case e.gone:
				s.log.InfoContext(ctx, "image store: snapshot deleted through another replica, dropped here", "snapshot", id)
				delete(s.idx.Snapshots, id)
				continue
			case !e.expired:
				rec.LastUsed = e.lastUsed
				continue
			}
		}
		s.log.InfoContext(ctx, "image store: snapshot expired", "snapshot", id, "lastUsed", rec.LastUsed)
		delete(s.idx.Snapshots, id)
		if rec.Ref != "" {
			pushed = append(pushed, rec.Ref)
		}
	}
	return pushed
}

// snapshotLayersLocked adds the layers of every snapshot to keep.
func (s *Store) snapshotLayersLocked(keep map[string]bool) {
	for _, rec := range s.idx.Snapshots {
		for _, h := range rec.Layers {
			keep[strings.TrimPrefix(h, "sha256:")] = true
		}
	}
}
