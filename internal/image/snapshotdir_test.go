package image

import (
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// memDir is a Directory in memory: what internal/daemon's adapter over
// the store does, for the store's own tests.
type memDir struct {
	mu    sync.Mutex
	snaps map[string]Snapshot
	fail  error // returned by RecordSnapshot when set
}

func (d *memDir) Record(context.Context, Entry) error { return nil }
func (d *memDir) Lookup(_ context.Context, _, ref string) (Entry, error) {
	return Entry{}, sandbox.Errorf(sandbox.ErrNotFound, "image_ref_not_found", "%s", ref)
}
func (d *memDir) Forget(context.Context, string, string, string) error { return nil }
func (d *memDir) CountRefs(context.Context, string) (int, error)       { return 0, nil }

func (d *memDir) RecordSnapshot(_ context.Context, snap Snapshot) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fail != nil {
		return d.fail
	}
	snap.Replica = "replica-a"
	d.snaps[snap.ID] = snap
	return nil
}

func (d *memDir) LookupSnapshot(_ context.Context, id string) (Snapshot, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	snap, ok := d.snaps[id]
	if !ok {
		return Snapshot{}, sandbox.Errorf(sandbox.ErrNotFound, "snapshot_ref_not_found", "%s", id)
	}
	return snap, nil
}

func (d *memDir) TouchSnapshot(_ context.Context, id string, at time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if snap, ok := d.snaps[id]; ok && at.After(snap.LastUsed) {
		snap.LastUsed = at
		d.snaps[id] = snap
	}
	return nil
}

func (d *memDir) ForgetSnapshot(_ context.Context, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.snaps, id)
	return nil
}

func (d *memDir) ListSnapshots(_ context.Context, team string) ([]Snapshot, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := []Snapshot{}
	for _, snap := range d.snaps {
		if team == "" || snap.TeamID == team {
			out = append(out, snap)
		}
	}
	slices.SortFunc(out, func(a, b Snapshot) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

func (d *memDir) ids() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Collect(maps.Keys(d.snaps))
}

// TestSnapshotExpiryAcrossReplicas: with a directory a snapshot expires
// once unused through every replica for the TTL: a use through another
// replica keeps it here; one deleted through another replica is dropped
// here only; one the directory could not be told of is not taken.
func TestSnapshotExpiryAcrossReplicas(t *testing.T) {
	ctx := t.Context()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s, dir := newDirStore(t, func() time.Time { return now })
	used, err := s.AddSnapshot(ctx, NewSnapshot{Source: "sb-a", TeamID: "team-a", Image: "host", OnHost: true}, fillSnapshot)
	if err != nil {
		t.Fatal(err)
	}
	deleted, err := s.AddSnapshot(ctx, NewSnapshot{Source: "sb-a", TeamID: "team-a", Image: "host", OnHost: true}, fillSnapshot)
	if err != nil {
		t.Fatal(err)
	}
	if got := dir.ids(); len(got) != 2 {
		t.Fatalf("the directory holds %v, want both snapshots", got)
	}

	// Two hours on: used through another replica ten minutes ago, and
	// deleted through another replica.
	now = now.Add(2 * time.Hour)
	if err := dir.TouchSnapshot(ctx, used.ID, now.Add(-10*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := dir.ForgetSnapshot(ctx, deleted.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.GC(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetSnapshot(used.ID); err != nil || !got.ExpiresAt.Equal(now.Add(50*time.Minute)) {
		t.Errorf("a snapshot used through another replica: %+v, %v; want kept, expiring 50m on", got, err)
	}
	if _, err := s.GetSnapshot(deleted.ID); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("a snapshot deleted through another replica is still here: %v", err)
	}
	if _, err := os.Stat(deleted.Layers[0]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("its layer: %v, want gone", err)
	}

	// An hour more, unused everywhere: expired here and in the directory.
	now = now.Add(time.Hour)
	if err := s.GC(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSnapshot(used.ID); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("an expired snapshot: %v", err)
	}
	if got := dir.ids(); len(got) != 0 {
		t.Errorf("the directory after expiry holds %v", got)
	}

	// A snapshot the directory could not be told of is not taken.
	dir.fail = errors.New("store down")
	if _, err := s.AddSnapshot(ctx, NewSnapshot{Source: "sb-a", TeamID: "team-a", Image: "host", OnHost: true}, fillSnapshot); err == nil {
		t.Fatal("a snapshot the directory refused was taken")
	}
	if got := s.Snapshots(); len(got) != 0 {
		t.Errorf("the store holds %d snapshots after a refused one", len(got))
	}
	entries, err := os.ReadDir(filepath.Join(s.dir, "layers"))
	if err != nil || len(entries) != 0 {
		t.Errorf("layers left: %v, %v", entries, err)
	}
}

// TestListSnapshotsFromDirectory: with a directory the list is its
// entries: another replica's snapshot too (no layers, its replica named),
// not a local one deleted through another replica; a team's only; each
// expiring from its last use through any replica.
func TestListSnapshotsFromDirectory(t *testing.T) {
	ctx := t.Context()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s, dir := newDirStore(t, func() time.Time { return now })
	mine, err := s.AddSnapshot(ctx, NewSnapshot{Source: "sb-a", TeamID: "team-a", Image: "host", OnHost: true}, fillSnapshot)
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Minute)
	gone, err := s.AddSnapshot(ctx, NewSnapshot{Source: "sb-a", TeamID: "team-a", Image: "host", OnHost: true}, fillSnapshot)
	if err != nil {
		t.Fatal(err)
	}
	if err := dir.ForgetSnapshot(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	theirs := Snapshot{ID: "snap-theirs", TeamID: "team-a", Source: "sb-x", Image: "host", Replica: "replica-b", Size: 9,
		CreatedAt: now.Add(time.Minute), LastUsed: now.Add(time.Minute)}
	dir.snaps[theirs.ID] = theirs
	dir.snaps["snap-b"] = Snapshot{ID: "snap-b", TeamID: "team-b", Replica: "replica-b", CreatedAt: now, LastUsed: now}
	if err := dir.TouchSnapshot(ctx, mine.ID, now.Add(30*time.Minute)); err != nil {
		t.Fatal(err)
	}

	got, err := s.ListSnapshots(ctx, "team-a")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != mine.ID || got[1].ID != theirs.ID {
		t.Fatalf("team a's list: %+v, want %s then %s", got, mine.ID, theirs.ID)
	}
	if len(got[0].Layers) != 1 || !got[0].ExpiresAt.Equal(now.Add(90*time.Minute)) {
		t.Errorf("this store's snapshot: layers %v, expires %v; want its layer, an hour past its use through another replica", got[0].Layers, got[0].ExpiresAt)
	}
	if got[1].Replica != "replica-b" || len(got[1].Layers) != 0 || got[1].Size != 9 || !got[1].ExpiresAt.Equal(theirs.LastUsed.Add(time.Hour)) {
		t.Errorf("another replica's snapshot: %+v", got[1])
	}
	if all, err := s.ListSnapshots(ctx, ""); err != nil || len(all) != 3 {
		t.Errorf("every team's list: %d snapshots, %v; want 3", len(all), err)
	}

	// Without a directory: this store's, of the team.
	s.dirRefs = nil
	if got, err := s.ListSnapshots(ctx, "team-a"); err != nil || len(got) != 2 {
		t.Errorf("without a directory: %d snapshots, %v; want this store's 2", len(got), err)
	}
	if got, err := s.ListSnapshots(ctx, "team-b"); err != nil || len(got) != 0 {
		t.Errorf("without a directory, team b: %d snapshots, %v", len(got), err)
	}
}

// newDirStore is a store on clock whose snapshots expire after an hour,
// sharing its refs with an in-memory directory.
func newDirStore(t *testing.T, clock func() time.Time) (*Store, *memDir) {
	t.Helper()
	s, err := OpenStore(t.TempDir(), StoreOptions{SnapshotTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	s.now = clock
	dir := &memDir{snaps: map[string]Snapshot{}}
	if err := s.ShareRefs(t.Context(), dir); err != nil {
		t.Fatal(err)
	}
	return s, dir
}

// fillSnapshot writes a snapshot of one 4-byte file.
func fillSnapshot(ctx context.Context, d string, maxBytes int64) (int64, error) {
	return 4, os.WriteFile(filepath.Join(d, "f"), []byte("data"), 0o644)
}
