package daemon

import (
	"archive/tar"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/imagetest"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// racingStore is a store in which another replica's record lands between
// a replica's quota check and its own record: imageRef and snapshotRef,
// when set, run once, right before the next PutImageRef or
// PutSnapshotRef goes through.
type racingStore struct {
	store.Store
	imageRef, snapshotRef func()
}

func (r *racingStore) PutImageRef(ctx context.Context, ref store.ImageRef) error {
	if f := r.imageRef; f != nil {
		r.imageRef = nil
		f()
	}
	return r.Store.PutImageRef(ctx, ref)
}

func (r *racingStore) PutSnapshotRef(ctx context.Context, ref store.SnapshotRef) error {
	if f := r.snapshotRef; f != nil {
		r.snapshotRef = nil
		f()
	}
	return r.Store.PutSnapshotRef(ctx, ref)
}

func wantQuota(t *testing.T, what string, err error, code string) {
	t.Helper()
	if !errors.Is(err, sandbox.ErrForbidden) || sandbox.CodeOf(err) != code {
		t.Fatalf("%s: %v, want 403 %s", what, err, code)
	}
}

// TestTeamImageQuotaAcrossReplicas: two replicas share a store, each
// with its own image store, and a team's image cap counts its refs in the
// image directory: at its cap through replica a, the team is refused a
// new ref through b (which keeps nothing of it), while moving a ref it
// has, another team and the published scope are not refused; a ref
// removed through a makes room through b. A ref of another replica landing
// between b's check and its record leaves the team at its cap: b's is
// undone.
func TestTeamImageQuotaAcrossReplicas(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("unpacking image layers keeps owners: needs root")
	}
	ctx := t.Context()
	reg := imagetest.Registry(t)
	refs := map[string]string{}
	for _, tag := range []string{"v1", "v2", "v3", "v4"} {
		refs[tag] = reg + "/team/app:" + tag
		imagetest.Push(t, refs[tag], imagetest.Image(t, []string{"V=" + tag}, "/", imagetest.Layer(t, func(tw *tar.Writer) {
			imagetest.File(t, tw, "version", []byte(tag+"\n"), 0o644)
		})))
	}
	pull := func(images *image.Store, team, tag string) error {
		_, err := images.Pull(ctx, team, refs[tag], image.PullOptions{}, nil)
		return err
	}
	count := func(st store.Store, scope string, want int) {
		t.Helper()
		if n, err := st.CountImageRefs(ctx, scope); err != nil || n != want {
			t.Fatalf("the directory's refs of %q: %d, %v; want %d", scope, n, err, want)
		}
	}
	caps := image.StoreOptions{TeamMaxImages: 2}

	t.Run("AtCapThroughA", func(t *testing.T) {
		st := openStore(t, filepath.Join(t.TempDir(), "paddock.db"))
		imagesA, imagesB := openReplicaImagesWith(t, st, "replica-a", caps), openReplicaImagesWith(t, st, "replica-b", caps)
		for _, tag := range []string{"v1", "v2"} {
			if err := pull(imagesA, "team-a", tag); err != nil {
				t.Fatal(err)
			}
		}
		wantQuota(t, "a third image through b", pull(imagesB, "team-a", "v3"), "image_quota_exceeded")
		if _, err := imagesB.Get("team-a", refs["v3"]); !errors.Is(err, sandbox.ErrNotFound) {
			t.Fatalf("b keeps the refused image: %v", err)
		}
		count(st, "team-a", 2)

		// Pulling a ref the team has, through b, moves nothing past the cap.
		if err := pull(imagesB, "team-a", "v1"); err != nil {
			t.Fatalf("b pulling a ref the team has: %v", err)
		}
		// Another team, and the published scope, have caps of their own
		// (none for the published one).
		for _, tag := range []string{"v1", "v2", "v3"} {
			if err := pull(imagesB, image.Published, tag); err != nil {
				t.Fatalf("publishing %s through b: %v", tag, err)
			}
		}
		if err := pull(imagesB, "team-b", "v3"); err != nil {
			t.Fatalf("another team through b: %v", err)
		}
		count(st, "team-a", 2)

		// Removed through a: room through b.
		if err := imagesA.Remove(ctx, "team-a", refs["v2"]); err != nil {
			t.Fatal(err)
		}
		if err := pull(imagesB, "team-a", "v3"); err != nil {
			t.Fatalf("b after a's removal made room: %v", err)
		}
		count(st, "team-a", 2)
	})

	t.Run("RaceSettles", func(t *testing.T) {
		st := openStore(t, filepath.Join(t.TempDir(), "paddock.db"))
		racing := &racingStore{Store: st}
		imagesA, imagesB := openReplicaImagesWith(t, st, "replica-a", caps), openReplicaImagesWith(t, racing, "replica-b", caps)
		if err := pull(imagesA, "team-a", "v1"); err != nil {
			t.Fatal(err)
		}
		// b checks (1 of 2), then c's ref lands before b's record.
		racing.imageRef = func() {
			if err := st.PutImageRef(ctx, store.ImageRef{Scope: "team-a", Ref: refs["v4"], Digest: "sha256:c4",
				Source: refs["v4"], Replica: "replica-c", UpdatedAt: time.Now()}); err != nil {
				t.Error(err)
			}
		}
		wantQuota(t, "b's pull raced past the cap", pull(imagesB, "team-a", "v2"), "image_quota_exceeded")
		if _, err := st.GetImageRef(ctx, "team-a", refs["v2"]); !errors.Is(err, sandbox.ErrNotFound) {
			t.Errorf("b's refused ref is in the directory: %v", err)
		}
		if _, err := imagesB.Get("team-a", refs["v2"]); !errors.Is(err, sandbox.ErrNotFound) {
			t.Errorf("b keeps its refused ref: %v", err)
		}
		count(st, "team-a", 2)
		// a's and c's stay.
		for _, tag := range []string{"v1", "v4"} {
			if _, err := st.GetImageRef(ctx, "team-a", refs[tag]); err != nil {
				t.Errorf("the directory's %s after the race: %v", tag, err)
			}
		}
	})
}

// TestTeamSnapshotQuotaAcrossReplicas: two replicas share a store, and a
// team's snapshot caps count its snapshots in the snapshot directory: at
// its count cap through replica a, the team is refused one more through b
// (which keeps nothing of it); a snapshot pulled into b is counted once,
// and pulling it is not refused at the cap; the byte cap counts the
// directory's sizes and bounds b's copy by what a's left. A snapshot of
// another replica landing between b's check and its record leaves the
// team at its cap: b's is undone.
func TestTeamSnapshotQuotaAcrossReplicas(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("unpacking image layers keeps owners: needs root")
	}
	ctx := t.Context()
	host := &image.Image{Ref: "host"}
	teamSnaps := func(st store.Store, team string) []string {
		t.Helper()
		list, _, err := st.ListSnapshotRefs(ctx, team, store.Page{Limit: store.MaxPageLimit})
		if err != nil {
			t.Fatal(err)
		}
		ids := []string{}
		for _, r := range list {
			ids = append(ids, r.ID)
		}
		return ids
	}
	held := func(images *image.Store, team string) int {
		n := 0
		for _, snap := range images.Snapshots() {
			if snap.TeamID == team {
				n++
			}
		}
		return n
	}

	t.Run("CountCap", func(t *testing.T) {
		st := openStore(t, filepath.Join(t.TempDir(), "paddock.db"))
		caps := image.StoreOptions{TeamMaxSnapshots: 2}
		imagesA, imagesB := openReplicaImagesWith(t, st, "replica-a", caps), openReplicaImagesWith(t, st, "replica-b", caps)

		reg, base := pulledBase(t, imagesA)
		pushed := takeSnapshot(t, imagesA, "team-a", base, reg+"/snaps", "pushed")
		local := takeSnapshot(t, imagesA, "team-a", host, "", "local")

		_, _, err := addSnapshot(t, imagesB, "team-a", host, "", "third")
		wantQuota(t, "a third snapshot through b", err, "snapshot_quota_exceeded")
		if n := held(imagesB, "team-a"); n != 0 {
			t.Fatalf("b keeps %d snapshots of the team after the refusal", n)
		}
		if got, want := teamSnaps(st, "team-a"), []string{pushed.ID, local.ID}; !slices.Equal(got, want) {
			t.Fatalf("the directory's snapshots of the team: %v, want %v", got, want)
		}

		// At its cap, the team's pushed snapshot is still pulled into b
		// (it is counted already), and counted once: still refused a
		// third through either replica.
		if snap, err := imagesB.ResolveSnapshot(ctx, pushed.ID); err != nil || len(snap.Layers) != 2 {
			t.Fatalf("b pulling the team's snapshot at its cap: %+v, %v", snap, err)
		}
		for name, images := range map[string]*image.Store{"a": imagesA, "b": imagesB} {
			_, _, err := addSnapshot(t, images, "team-a", host, "", "third")
			wantQuota(t, "a third snapshot through "+name+" after the pull", err, "snapshot_quota_exceeded")
		}
		// Another team is not counted against it.
		takeSnapshot(t, imagesB, "team-b", host, "", "other")

		// Deleted through a: room through b.
		if err := imagesA.RemoveSnapshot(ctx, local.ID); err != nil {
			t.Fatal(err)
		}
		third := takeSnapshot(t, imagesB, "team-a", host, "", "third")
		if got, want := teamSnaps(st, "team-a"), []string{pushed.ID, third.ID}; !slices.Equal(got, want) {
			t.Fatalf("the directory's snapshots of the team: %v, want %v", got, want)
		}
	})

	t.Run("ByteCap", func(t *testing.T) {
		st := openStore(t, filepath.Join(t.TempDir(), "paddock.db"))
		caps := image.StoreOptions{TeamMaxSnapshotBytes: 8}
		imagesA, imagesB := openReplicaImagesWith(t, st, "replica-a", caps), openReplicaImagesWith(t, st, "replica-b", caps)
		if _, capped, err := addSnapshot(t, imagesA, "team-a", host, "", "first"); err != nil || capped != 8 {
			t.Fatalf("the first snapshot: copy capped at %d, %v; want 8, nil", capped, err)
		}
		// b's copy is bounded by what a's left (3 of 8); the 5 bytes are
		// refused once recorded.
		_, capped, err := addSnapshot(t, imagesB, "team-a", host, "", "second")
		wantQuota(t, "5 bytes more through b", err, "snapshot_quota_exceeded")
		if capped != 3 {
			t.Errorf("b's copy was capped at %d bytes, want the 3 the team has left", capped)
		}
		if n := held(imagesB, "team-a"); n != 0 || len(teamSnaps(st, "team-a")) != 1 {
			t.Fatalf("after the refusal: b holds %d, the directory %v", n, teamSnaps(st, "team-a"))
		}
	})

	t.Run("RaceSettles", func(t *testing.T) {
		st := openStore(t, filepath.Join(t.TempDir(), "paddock.db"))
		racing := &racingStore{Store: st}
		caps := image.StoreOptions{TeamMaxSnapshots: 2}
		imagesA, imagesB := openReplicaImagesWith(t, st, "replica-a", caps), openReplicaImagesWith(t, racing, "replica-b", caps)
		first := takeSnapshot(t, imagesA, "team-a", host, "", "first")
		// b checks (1 of 2), then c's snapshot lands before b's record.
		racing.snapshotRef = func() {
			now := time.Now()
			if err := st.PutSnapshotRef(ctx, store.SnapshotRef{ID: "snap-c", Team: "team-a", Replica: "replica-c",
				Image: "host", OnHost: true, Size: 5, CreatedAt: now, LastUsed: now}); err != nil {
				t.Error(err)
			}
		}
		_, _, err := addSnapshot(t, imagesB, "team-a", host, "", "raced")
		wantQuota(t, "b's snapshot raced past the cap", err, "snapshot_quota_exceeded")
		if n := held(imagesB, "team-a"); n != 0 {
			t.Errorf("b keeps %d snapshots of the team after the race", n)
		}
		if got, want := teamSnaps(st, "team-a"), []string{first.ID, "snap-c"}; !slices.Equal(got, want) {
			t.Errorf("the directory's snapshots after the race: %v, want a's and c's %v", got, want)
		}
	})
}
