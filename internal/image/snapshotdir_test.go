package image

import (
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
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
	s, err := OpenStore(t.TempDir(), StoreOptions{SnapshotTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	dir := &memDir{snaps: map[string]Snapshot{}}
	if err := s.ShareRefs(ctx, dir); err != nil {
		t.Fatal(err)
	}
	fill := func(ctx context.Context, d string, maxBytes int64) (int64, error) {
		return 4, os.WriteFile(filepath.Join(d, "f"), []byte("data"), 0o644)
	}
	used, err := s.AddSnapshot(ctx, NewSnapshot{Source: "sb-a", TeamID: "team-a", Image: "host", OnHost: true}, fill)
	if err != nil {
		t.Fatal(err)
	}
	deleted, err := s.AddSnapshot(ctx, NewSnapshot{Source: "sb-a", TeamID: "team-a", Image: "host", OnHost: true}, fill)
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
	if _, err := s.AddSnapshot(ctx, NewSnapshot{Source: "sb-a", TeamID: "team-a", Image: "host", OnHost: true}, fill); err == nil {
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
