package daemon

import (
	"archive/tar"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/imagetest"
	"github.com/paddock-dev/paddock/internal/lease"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// TestSnapshotsOfGoneReplicasExpire: replica a took snapshots and is gone
// for good (its liveness lease never renewed); replica b, holding the
// background lease, expires those unused through every replica for the
// TTL: records and pushed images. It leaves a recent one, one a sandbox
// of a live replica was created from, one of a live replica (that
// replica's own GC's), one of a replica gone for a minute only (it may be
// restarting), and one b holds itself (its own GC's); a sandbox record
// left on the gone replica keeps nothing.
func TestSnapshotsOfGoneReplicasExpire(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("unpacking image layers keeps owners: needs root")
	}
	ctx := t.Context()
	st := openStore(t, filepath.Join(t.TempDir(), "paddock.db"))
	imagesA, imagesB, imagesC := openReplicaImages(t, st, "replica-a"), openReplicaImages(t, st, "replica-b"), openReplicaImages(t, st, "replica-c")
	reg := imagetest.Registry(t)
	ref := reg + "/team/app:v1"
	imagetest.Push(t, ref, imagetest.Image(t, nil, "/", imagetest.Layer(t, func(tw *tar.Writer) {
		imagetest.File(t, tw, "version", []byte("1\n"), 0o644)
	})))
	base, err := imagesA.Pull(ctx, "team-a", ref, image.PullOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	baseC, err := imagesC.Pull(ctx, "team-a", ref, image.PullOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pushed := takeSnapshot(t, imagesA, "team-a", base, reg+"/snaps", "pushed")
	local := takeSnapshot(t, imagesA, "team-a", base, "", "local")
	recent := takeSnapshot(t, imagesA, "team-a", base, "", "recent")
	needed := takeSnapshot(t, imagesA, "team-a", base, reg+"/snaps", "needed")
	pulled := takeSnapshot(t, imagesA, "team-a", base, reg+"/snaps", "pulled")
	ofLive := takeSnapshot(t, imagesC, "team-a", baseC, "", "live")
	ofRestarting := takeSnapshot(t, imagesA, "team-a", base, "", "restarting")
	if _, err := imagesB.ResolveSnapshot(ctx, pulled.ID); err != nil {
		t.Fatal(err)
	}
	// Replica c is alive; d's lease lapsed a minute ago (it may be
	// restarting); a never held its lease (gone since ever).
	if _, err := st.AcquireLease(ctx, lease.ReplicaLease("replica-c"), "replica-c", time.Minute, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AcquireLease(ctx, lease.ReplicaLease("replica-d"), "replica-d", time.Minute, time.Now().Add(-2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	// A sandbox of b was created from needed; one left on a from pushed.
	for _, r := range []store.SandboxRecord{
		{Node: "replica-b", Sandbox: sandbox.Sandbox{ID: "sb-b", TeamID: "team-a", State: sandbox.Stopped, Snapshot: needed.ID}},
		{Node: "replica-a", Sandbox: sandbox.Sandbox{ID: "sb-a", TeamID: "team-a", State: sandbox.Running, Snapshot: pushed.ID}},
	} {
		if err := st.PutSandbox(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	// Unused for eight days (the TTL is seven), but recent.
	old := time.Now().Add(-8 * 24 * time.Hour)
	for _, snap := range []*image.Snapshot{pushed, local, needed, pulled, ofLive, ofRestarting} {
		r, err := st.GetSnapshotRef(ctx, snap.ID)
		if err != nil {
			t.Fatal(err)
		}
		r.CreatedAt, r.LastUsed = old, old
		if snap == ofRestarting {
			r.Replica = "replica-d"
		}
		if err := st.PutSnapshotRef(ctx, r); err != nil {
			t.Fatal(err)
		}
	}

	// Metered until they expire, though their replica is gone.
	meteredB := sharedStorage{&Daemon{images: imagesB}}
	before, err := meteredB.TeamStorage(ctx)
	if err != nil {
		t.Fatal(err)
	}

	sweepAbandonedSnapshots(ctx, imagesB, st, "replica-b", abandonGrace, slog.New(slog.DiscardHandler))
	for _, tc := range []struct {
		what string
		snap *image.Snapshot
		kept bool
	}{
		{"a gone replica's pushed snapshot", pushed, false},
		{"a gone replica's unpushed snapshot", local, false},
		{"a recent one", recent, true},
		{"one a live replica's sandbox was created from", needed, true},
		{"one this replica holds", pulled, true},
		{"one of a live replica", ofLive, true},
		{"one of a replica gone for a minute", ofRestarting, true},
	} {
		_, err := st.GetSnapshotRef(ctx, tc.snap.ID)
		if tc.kept && err != nil {
			t.Errorf("%s: %v, want kept", tc.what, err)
		}
		if !tc.kept && !errors.Is(err, sandbox.ErrNotFound) {
			t.Errorf("%s: %v, want expired", tc.what, err)
		}
		if tc.snap.Ref == "" {
			continue
		}
		_, err = remote.Head(mustDigest(t, tc.snap.Ref))
		if tc.kept && err != nil {
			t.Errorf("%s: its image: %v, want kept", tc.what, err)
		}
		if !tc.kept && err == nil {
			t.Errorf("%s: its image %s is still in the registry", tc.what, tc.snap.Ref)
		}
	}
	after, err := meteredB.TeamStorage(ctx)
	if want := before["team-a"] - uint64(pushed.Size+local.Size); err != nil || after["team-a"] != want {
		t.Errorf("team a's snapshot storage after the expiry: %v, %v; want %d (%d before)", after["team-a"], err, want, before["team-a"])
	}
	// Every replica's list agrees.
	checkLists(t, map[string]serverSnapshots{"b": {store: imagesB}, "c": {store: imagesC}}, map[string][]string{
		"team-a": {recent.ID, needed.ID, pulled.ID, ofLive.ID, ofRestarting.ID}})
}

func mustDigest(t *testing.T, ref string) name.Digest {
	t.Helper()
	d, err := name.NewDigest(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestSnapshotExpiryNeedsTheBackgroundLease: a replica that does not hold
// the background lease leaves a gone replica's expired snapshot alone; it
// expires it once it holds the lease.
func TestSnapshotExpiryNeedsTheBackgroundLease(t *testing.T) {
	ctx := t.Context()
	st := openStore(t, filepath.Join(t.TempDir(), "paddock.db"))
	old := time.Now().Add(-8 * 24 * time.Hour)
	if err := st.PutSnapshotRef(ctx, store.SnapshotRef{ID: "snap-gone", Team: "team-a", Replica: "replica-a",
		Size: 5, CreatedAt: old, LastUsed: old}); err != nil {
		t.Fatal(err)
	}
	bg, err := lease.New(lease.Config{Store: st, Name: backgroundLease, Holder: "replica-b"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bg.Close() })
	d := &Daemon{cfg: Config{NodeName: "replica-b"}, log: slog.New(slog.DiscardHandler), store: st,
		images: openReplicaImages(t, st, "replica-b"), background: bg}

	d.expireAbandonedSnapshots(ctx)
	if _, err := st.GetSnapshotRef(ctx, "snap-gone"); err != nil {
		t.Fatalf("expired without the background lease: %v", err)
	}
	if err := bg.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	d.expireAbandonedSnapshots(ctx)
	if _, err := st.GetSnapshotRef(ctx, "snap-gone"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("with the background lease: %v, want expired", err)
	}
}
