package image

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

func TestSnapshotLifecycle(t *testing.T) {
	ctx := context.Background()
	s, err := OpenStore(t.TempDir(), StoreOptions{SnapshotTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	fill := func(ctx context.Context, dir string, maxBytes int64) (int64, error) {
		return 4, os.WriteFile(filepath.Join(dir, "f"), []byte("data"), 0o644)
	}

	if _, err := s.AddSnapshot(ctx, NewSnapshot{Lowers: []string{"/elsewhere/x"}}, fill); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("lower outside the store: %v, want ErrInvalid", err)
	}
	failing := func(context.Context, string, int64) (int64, error) { return 0, errors.New("copy failed") }
	if _, err := s.AddSnapshot(ctx, NewSnapshot{Source: "sb-a", OnHost: true}, failing); err == nil {
		t.Error("a failed fill made a snapshot")
	}

	snap, err := s.AddSnapshot(ctx, NewSnapshot{Source: "sb-a", Image: "host", OnHost: true}, fill)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Size != 4 || len(snap.Layers) != 1 || !snap.ExpiresAt.Equal(now.Add(time.Hour)) {
		t.Errorf("snapshot = %+v", snap)
	}
	if !snap.OnHost {
		t.Errorf("a host-image sandbox's snapshot is not OnHost: %+v", snap)
	}
	// A reopened store knows it.
	s2, err := OpenStore(s.dir, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s2.GetSnapshot(snap.ID); err != nil || got.Source != "sb-a" {
		t.Errorf("reopened: %+v, %v", got, err)
	}

	if err := s.GC(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(snap.Layers[0], "f")); err != nil {
		t.Errorf("GC removed a live snapshot's layer: %v", err)
	}

	// Expired but stacked by a sandbox: kept.
	now = now.Add(2 * time.Hour)
	inUse := func(dir string) bool { return dir == snap.Layers[0] }
	if err := s.GC(ctx, inUse); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSnapshot(snap.ID); err != nil {
		t.Errorf("GC expired a snapshot in use: %v", err)
	}
	// Touched: the expiry moves.
	if err := s.TouchSnapshot(ctx, snap.ID); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetSnapshot(snap.ID); !got.ExpiresAt.Equal(now.Add(time.Hour)) {
		t.Errorf("expiry after touch = %v", got.ExpiresAt)
	}
	// Expired and unused: gone with its layer.
	now = now.Add(2 * time.Hour)
	if err := s.GC(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSnapshot(snap.ID); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("expired snapshot: %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(snap.Layers[0]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("expired snapshot's layer: %v", err)
	}
	if err := s.RemoveSnapshot(ctx, snap.ID); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("remove unknown: %v", err)
	}
}

// TestSnapshotTeamQuota: a team's snapshots are capped in number and in
// the bytes of their own layers; the copy is bounded by what is left, and
// other teams are not counted.
func TestSnapshotTeamQuota(t *testing.T) {
	ctx := context.Background()
	s, err := OpenStore(t.TempDir(), StoreOptions{TeamMaxSnapshots: 3, TeamMaxSnapshotBytes: 10})
	if err != nil {
		t.Fatal(err)
	}
	var gotMax int64
	fill := func(n int) func(context.Context, string, int64) (int64, error) {
		return func(ctx context.Context, dir string, maxBytes int64) (int64, error) {
			gotMax = maxBytes
			if int64(n) > maxBytes {
				return 0, sandbox.Errorf(sandbox.ErrTooLarge, "snapshot_too_large", "over %d", maxBytes)
			}
			return int64(n), os.WriteFile(filepath.Join(dir, "f"), make([]byte, n), 0o644)
		}
	}
	add := func(team string, n int) error {
		_, err := s.AddSnapshot(ctx, NewSnapshot{Source: "sb-a", TeamID: team, OnHost: true}, fill(n))
		return err
	}
	wantQuota := func(err error) {
		t.Helper()
		if !errors.Is(err, sandbox.ErrForbidden) || sandbox.CodeOf(err) != "snapshot_quota_exceeded" {
			t.Fatalf("got %v, want snapshot_quota_exceeded", err)
		}
	}
	if err := add("team-a", 6); err != nil {
		t.Fatal(err)
	}
	if gotMax != 10 {
		t.Errorf("the first copy was bounded at %d bytes, want the team's 10", gotMax)
	}
	wantQuota(add("team-a", 5)) // 6 + 5 > 10, and the copy was cut at 4
	if gotMax != 4 {
		t.Errorf("the copy was bounded at %d bytes, want the 4 left", gotMax)
	}
	if err := add("team-a", 4); err != nil {
		t.Fatal(err)
	}
	wantQuota(add("team-a", 0)) // 10 of 10 bytes
	if err := add("team-b", 1); err != nil {
		t.Fatal(err)
	}
	if err := add("team-b", 1); err != nil {
		t.Fatal(err)
	}
	if err := add("team-b", 1); err != nil {
		t.Fatal(err)
	}
	wantQuota(add("team-b", 1)) // 3 snapshots
	if n := len(s.Snapshots()); n != 5 {
		t.Errorf("%d snapshots, want 5: refused ones leave nothing", n)
	}
}
