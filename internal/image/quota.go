package image

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Per-team caps on what a team keeps in the store, so that one team cannot
// fill the host's disk with images or snapshots: refs are counted per team
// scope (the published scope, the host admin's, has none), snapshots and
// their own layers' bytes per owning team. Layers an image shares with
// others count for nobody: they are stored once.
//
// With a Directory (internal/daemon always gives one, on a single host
// too) the caps count the team's records there, so every replica sharing
// it refuses alike: counted in each replica's own index, a team going
// through N replicas would keep N times its cap. A replica's own store
// holds no more of a team's than the Directory has (what it pulls is
// there already), so the caps bound each host's disk too. The local
// index is not used as a shortcut even on one host: the Directory may
// hold records of replicas that shared it before, which count. A new
// record is checked before it is written and again once it is (settle*),
// since another replica may have added one meanwhile.
const (
	DefaultTeamMaxImages        = 100
	DefaultTeamMaxSnapshots     = 100
	DefaultTeamMaxSnapshotBytes = 50 << 30
)

// settleTimeout bounds the undo of a record past a cap: it runs whatever
// became of the caller's ctx, which may be what failed.
const settleTimeout = 30 * time.Second

// teamCap is a StoreOptions cap after defaults: 0 → def, negative → none.
func teamCap[T int | int64](v, def T) T {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// imageCap is the most refs scope may hold; 0: no cap.
func (s *Store) imageCap(scope string) int {
	if scope == Published {
		return 0
	}
	return teamCap(s.opts.TeamMaxImages, DefaultTeamMaxImages)
}

func errImageQuota(n int, ref string) error {
	return sandbox.Errorf(sandbox.ErrForbidden, "image_quota_exceeded",
		"the team has %d images, the most this server allows a team: remove one before adding %s", n, ref)
}

// checkImageQuota refuses a new ref in a team's scope that already holds
// the most it may; moving an existing ref is always allowed. With a
// Directory the scope's refs there count; without, this store's.
func (s *Store) checkImageQuota(ctx context.Context, scope, ref string) error {
	max := s.imageCap(scope)
	if max == 0 {
		return nil
	}
	if s.dirRefs == nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.checkImageQuotaLocked(scope, ref)
	}
	_, err := s.dirRefs.Lookup(ctx, scope, ref)
	if err == nil {
		return nil
	}
	if !errors.Is(err, sandbox.ErrNotFound) {
		return fmt.Errorf("image %s: read the image directory: %w", ref, err)
	}
	n, err := s.dirRefs.CountRefs(ctx, scope)
	if err != nil {
		return fmt.Errorf("image %s: count the team's images in the image directory: %w", ref, err)
	}
	if n >= max {
		return errImageQuota(n, ref)
	}
	return nil
}

// checkImageQuotaLocked is checkImageQuota in this store's index, for a
// store without a Directory. Callers hold s.mu.
func (s *Store) checkImageQuotaLocked(scope, ref string) error {
	max := s.imageCap(scope)
	refs := s.idx.Scopes[scope]
	if max == 0 || len(refs) < max {
		return nil
	}
	if _, ok := refs[ref]; ok {
		return nil
	}
	return errImageQuota(len(refs), ref)
}

// settleImageRef checks a team's image cap again once a ref new to its
// scope is in the Directory: s.mu serialises only this replica's pulls,
// and another replica's new ref may have landed between the check and
// the record. Counting every ref of the scope, this one included, means
// that of two racing pulls the one that counts last sees both: the team
// never ends past its cap (both may be refused, and the caller retries).
// A ref refused here leaves the Directory (if it still names this image)
// and this store, whatever the reason: unchecked, it could hold the team
// past its cap.
func (s *Store) settleImageRef(ctx context.Context, e Entry, max int) error {
	n, err := s.dirRefs.CountRefs(ctx, e.Scope)
	if err == nil {
		if n <= max {
			return nil
		}
		err = errImageQuota(n-1, e.Ref)
	} else {
		err = fmt.Errorf("image %s: count the team's images in the image directory: %w", e.Ref, err)
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	if ferr := s.dirRefs.Forget(dctx, e.Scope, e.Ref, e.Digest); ferr != nil {
		s.log.ErrorContext(ctx, "image store: remove a ref past the team's quota from the image directory",
			"image", e.Ref, "team", e.Scope, "err", ferr)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if refs := s.idx.Scopes[e.Scope]; refs[e.Ref] == e.Digest {
		delete(refs, e.Ref)
		if len(refs) == 0 {
			delete(s.idx.Scopes, e.Scope)
		}
		s.dropUnreferencedLocked(e.Digest)
		if serr := s.saveLocked(); serr != nil {
			s.log.WarnContext(ctx, "image store: drop a ref past the team's quota", "image", e.Ref, "team", e.Scope, "err", serr)
		}
	}
	return err
}

// snapshotCaps are the most snapshots, and bytes of their own layers, a
// team may keep; 0: no cap.
func (s *Store) snapshotCaps() (maxN int, maxBytes int64) {
	return teamCap(s.opts.TeamMaxSnapshots, DefaultTeamMaxSnapshots),
		teamCap(s.opts.TeamMaxSnapshotBytes, DefaultTeamMaxSnapshotBytes)
}

// snapshotUsage counts a team's snapshots and the bytes of their own
// layers, leaving out the snapshot skip (the caller's own, just
// recorded). With a Directory its entries count, each once whichever
// replicas hold it, at the size the replica that took it measured;
// without, this store's index.
func (s *Store) snapshotUsage(ctx context.Context, team, skip string) (n int, bytes int64, err error) {
	if s.dirRefs == nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		n, bytes = s.snapshotUsageLocked(team)
		return n, bytes, nil
	}
	entries, err := s.dirRefs.ListSnapshots(ctx, team)
	if err != nil {
		return 0, 0, fmt.Errorf("count the team's snapshots in the snapshot directory: %w", err)
	}
	for _, e := range entries {
		if e.TeamID != team || e.ID == skip {
			continue
		}
		n++
		bytes += e.Size
	}
	return n, bytes, nil
}

// snapshotUsageLocked counts a team's snapshots and the bytes of their
// own layers in this store's index. Callers hold s.mu.
func (s *Store) snapshotUsageLocked(team string) (n int, bytes int64) {
	for _, rec := range s.idx.Snapshots {
		if rec.TeamID != team {
			continue
		}
		n++
		if len(rec.Layers) > 0 {
			bytes += s.idx.Layers[rec.Layers[0]].Size
		}
	}
	return n, bytes
}

// snapshotRoom returns how many more bytes of snapshot layers a team
// using n snapshots and used bytes may store (-1: no byte cap), or the
// error that refuses one more snapshot.
func (s *Store) snapshotRoom(n int, used int64) (int64, error) {
	maxN, maxBytes := s.snapshotCaps()
	if maxN > 0 && n >= maxN {
		return 0, sandbox.Errorf(sandbox.ErrForbidden, "snapshot_quota_exceeded",
			"the team has %d snapshots, the most this server allows a team: delete one first", n)
	}
	if maxBytes == 0 {
		return -1, nil
	}
	if used >= maxBytes {
		return 0, errSnapshotBytes(used, maxBytes)
	}
	return maxBytes - used, nil
}

// snapshotFits refuses a snapshot of size bytes that a team using n
// snapshots and used bytes has no room for.
func (s *Store) snapshotFits(n int, used, size int64) error {
	room, err := s.snapshotRoom(n, used)
	if err != nil {
		return err
	}
	if room >= 0 && size > room {
		_, maxBytes := s.snapshotCaps()
		return errSnapshotBytes(used, maxBytes)
	}
	return nil
}

func errSnapshotBytes(used, max int64) error {
	return sandbox.Errorf(sandbox.ErrForbidden, "snapshot_quota_exceeded",
		"the team's snapshots hold %d MiB of the %d MiB this server allows a team: delete some first", used>>20, max>>20)
}

// settleSnapshot checks a team's snapshot caps again once snap is in the
// Directory, counting every other snapshot of the team there, whenever
// taken: as settleImageRef, of two racing snapshots both may be refused,
// never both kept past a cap. One refused here leaves the Directory,
// whatever the reason; the caller drops it here.
func (s *Store) settleSnapshot(ctx context.Context, snap *Snapshot) error {
	if s.dirRefs == nil {
		return nil
	}
	n, used, err := s.snapshotUsage(ctx, snap.TeamID, snap.ID)
	if err == nil {
		if err = s.snapshotFits(n, used, snap.Size); err == nil {
			return nil
		}
	} else {
		err = fmt.Errorf("snapshot: %w", err)
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	if ferr := s.dirRefs.ForgetSnapshot(dctx, snap.ID); ferr != nil {
		s.log.ErrorContext(ctx, "image store: remove a snapshot past the team's quota from the snapshot directory",
			"snapshot", snap.ID, "team", snap.TeamID, "err", ferr)
	}
	return err
}

// quotaErr turns a fill's ErrTooLarge into the team's quota error when the
// cap it hit was the team's room rather than the store's layer cap.
func quotaErr(err error, room, layerCap, used, max int64) error {
	if room >= 0 && room < layerCap && errors.Is(err, sandbox.ErrTooLarge) {
		return errSnapshotBytes(used, max)
	}
	return err
}
