package image

import (
	"errors"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Per-team caps on what a team keeps in the store, so that one team cannot
// fill the host's disk with images or snapshots: refs are counted per team
// scope (the published scope, the host admin's, has none), snapshots and
// their own layers' bytes per owning team. Layers an image shares with
// others count for nobody: they are stored once.
const (
	DefaultTeamMaxImages        = 100
	DefaultTeamMaxSnapshots     = 100
	DefaultTeamMaxSnapshotBytes = 50 << 30
)

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

// checkImageQuotaLocked refuses a new ref in a team's scope that already
// holds the most it may; moving an existing ref is always allowed.
// Callers hold s.mu.
func (s *Store) checkImageQuotaLocked(scope, ref string) error {
	max := teamCap(s.opts.TeamMaxImages, DefaultTeamMaxImages)
	refs := s.idx.Scopes[scope]
	if scope == Published || max == 0 || len(refs) < max {
		return nil
	}
	if _, ok := refs[ref]; ok {
		return nil
	}
	return sandbox.Errorf(sandbox.ErrForbidden, "image_quota_exceeded",
		"the team has %d images, the most this server allows a team: remove one before adding %s", len(refs), ref)
}

// snapshotUsageLocked counts a team's snapshots and the bytes of their
// own layers. Callers hold s.mu.
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

// snapshotRoomLocked returns how many more bytes of snapshot layers the team
// may store (-1: no byte cap), or the error that refuses one more snapshot.
// Callers hold s.mu.
func (s *Store) snapshotRoomLocked(team string) (int64, error) {
	maxN := teamCap(s.opts.TeamMaxSnapshots, DefaultTeamMaxSnapshots)
	maxBytes := teamCap(s.opts.TeamMaxSnapshotBytes, DefaultTeamMaxSnapshotBytes)
	n, used := s.snapshotUsageLocked(team)
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

func errSnapshotBytes(used, max int64) error {
	return sandbox.Errorf(sandbox.ErrForbidden, "snapshot_quota_exceeded",
		"the team's snapshots hold %d MiB of the %d MiB this server allows a team: delete some first", used>>20, max>>20)
}

// quotaErr turns a fill's ErrTooLarge into the team's quota error when the
// cap it hit was the team's room rather than the store's layer cap.
func quotaErr(err error, room, layerCap, used, max int64) error {
	if room >= 0 && room < layerCap && errors.Is(err, sandbox.ErrTooLarge) {
		return errSnapshotBytes(used, max)
	}
	return err
}
