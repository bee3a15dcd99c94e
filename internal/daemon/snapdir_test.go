package daemon

import (
	"archive/tar"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/imagetest"
	"github.com/paddock-dev/paddock/internal/node"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// pulledBase pushes a one-file image to a registry of the test's own and
// pulls it for team-a through images: a base to take snapshots of.
func pulledBase(t *testing.T, images *image.Store) (reg string, base *image.Image) {
	t.Helper()
	reg = imagetest.Registry(t)
	ref := reg + "/team/app:v1"
	imagetest.Push(t, ref, imagetest.Image(t, []string{"V=1"}, "/", imagetest.Layer(t, func(tw *tar.Writer) {
		imagetest.File(t, tw, "version", []byte("1\n"), 0o644)
	})))
	base, err := images.Pull(t.Context(), "team-a", ref, image.PullOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return reg, base
}

// takeSnapshot adds a snapshot of team's sandbox on base (pulled into
// images) holding one file, pushed to repo unless repo is "".
func takeSnapshot(t *testing.T, images *image.Store, team string, base *image.Image, repo, file string) *image.Snapshot {
	t.Helper()
	snap, _, err := addSnapshot(t, images, team, base, repo, file)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// addSnapshot is takeSnapshot's attempt: the snapshot (5 bytes) or the
// error, and the byte cap the store gave its copy.
func addSnapshot(t *testing.T, images *image.Store, team string, base *image.Image, repo, file string) (*image.Snapshot, int64, error) {
	t.Helper()
	spec := image.NewSnapshot{Source: "sb-" + team, TeamID: team, Image: base.Ref, Digest: base.Digest,
		Config: image.ImageConfig{Env: []string{"SNAP=" + file}, WorkingDir: "/"}, Lowers: base.Lowerdirs()}
	if repo != "" {
		spec.Push = &image.SnapshotPush{Repo: repo, Base: base.Ref + "@" + base.Digest}
	}
	var capped int64
	snap, err := images.AddSnapshot(t.Context(), spec, func(_ context.Context, dir string, maxBytes int64) (int64, error) {
		capped = maxBytes
		return 5, os.WriteFile(filepath.Join(dir, file), []byte("snap\n"), 0o644)
	})
	return snap, capped, err
}

// TestSnapshotsKnownToEveryReplica: two replicas share a store, each with
// its own image store. A snapshot replica a took and pushed is created
// from through b, which pulls it by digest; one a kept on its host only is
// snapshot_on_other_replica naming a; another team never sees either; one
// deleted through b is gone for a too, and its image from the registry.
func TestSnapshotsKnownToEveryReplica(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("unpacking image layers keeps owners: needs root")
	}
	ctx := t.Context()
	st := openStore(t, filepath.Join(t.TempDir(), "paddock.db"))
	imagesA, imagesB := openReplicaImages(t, st, "replica-a"), openReplicaImages(t, st, "replica-b")

	reg, base := pulledBase(t, imagesA)
	pushed := takeSnapshot(t, imagesA, "team-a", base, reg+"/snaps", "pushed")
	local := takeSnapshot(t, imagesA, "team-a", base, "", "local")
	if pushed.Ref == "" || local.Ref != "" {
		t.Fatalf("snapshot refs: pushed %q, local %q", pushed.Ref, local.Ref)
	}
	rec, err := st.GetSnapshotRef(ctx, pushed.ID)
	if err != nil || rec.Team != "team-a" || rec.Replica != "replica-a" || rec.Ref != pushed.Ref ||
		rec.Digest != pushed.Ref[strings.Index(pushed.Ref, "@")+1:] || rec.ImageDigest != base.Digest {
		t.Fatalf("the directory's record of the pushed snapshot: %+v, %v", rec, err)
	}

	// The server's view through b (its ownership check reads it): the
	// snapshot, of team a, taken through a.
	srvB := serverSnapshots{store: imagesB}
	got, err := srvB.GetSnapshot(ctx, pushed.ID)
	if err != nil || got.TeamID != "team-a" || got.Replica != "replica-a" || got.Ref != pushed.Ref || got.Source != "sb-team-a" {
		t.Fatalf("GetSnapshot through b: %+v, %v", got, err)
	}

	// Both replicas list the same: the team's two, whichever replica has
	// them; another team none; the host admin's list ("") both.
	srvA := serverSnapshots{store: imagesA}
	other := takeSnapshot(t, imagesB, "team-b", &image.Image{Ref: "host"}, "", "other")
	checkLists(t, map[string]serverSnapshots{"a": srvA, "b": srvB}, map[string][]string{
		"team-a": {pushed.ID, local.ID}, "team-b": {other.ID}, "team-c": {}, "": {pushed.ID, local.ID, other.ID}})

	mB, err := node.New(node.Config{DataDir: t.TempDir(), Driver: fake.NewDriver(t, fake.DriverConfig{}),
		MaxResources: sandbox.Resources{VCPUs: 2, MemoryMB: 4096, PIDs: 4096}, Logger: slog.New(slog.DiscardHandler),
		Records: newNodeRecords(st, "replica-b"), Images: imagesB})
	if err != nil {
		t.Fatal(err)
	}
	if err := mB.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mB.Close() })
	sb, err := mB.Create(ctx, sandbox.CreateRequest{TeamID: "team-a", Snapshot: pushed.ID})
	if err != nil {
		t.Fatalf("create through replica b from a snapshot pushed through a: %v", err)
	}
	if sb.Snapshot != pushed.ID || sb.Env["SNAP"] != "pushed" || sb.ImageDigest != base.Digest {
		t.Errorf("the sandbox: snapshot %q, env %v, image digest %s", sb.Snapshot, sb.Env, sb.ImageDigest)
	}
	held, err := imagesB.GetSnapshot(pushed.ID)
	if err != nil || held.TeamID != "team-a" || held.Ref != pushed.Ref || len(held.Layers) != 2 {
		t.Fatalf("replica b's store after the create: %+v, %v", held, err)
	}
	if !slices.Equal(sb.ImageLayers, held.Layers) {
		t.Errorf("the sandbox's layers %v, want the pulled snapshot's %v", sb.ImageLayers, held.Layers)
	}
	if b, err := os.ReadFile(filepath.Join(held.Layers[0], "pushed")); err != nil || string(b) != "snap\n" {
		t.Errorf("replica b's snapshot layer: %q, %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(held.Layers[1], "version")); err != nil || string(b) != "1\n" {
		t.Errorf("replica b's base layer: %q, %v", b, err)
	}

	// Pulled into b, it is still listed once, by both, and metered once:
	// either replica's sum is the directory's.
	checkLists(t, map[string]serverSnapshots{"a": srvA, "b": srvB}, map[string][]string{
		"team-a": {pushed.ID, local.ID}, "": {pushed.ID, local.ID, other.ID}})
	for name, images := range map[string]*image.Store{"a": imagesA, "b": imagesB} {
		got, err := sharedStorage{&Daemon{images: images}}.TeamStorage(ctx)
		if want := map[string]uint64{"team-a": uint64(pushed.Size + local.Size), "team-b": uint64(other.Size)}; err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("the snapshot storage through %s: %v, %v; want %v", name, got, err, want)
		}
		if got, err := (hostStorage{&Daemon{images: images}}).TeamStorage(ctx); err != nil || len(got) != 0 {
			t.Errorf("the host storage of %s without volumes: %v, %v; want none (snapshots are shared)", name, got, err)
		}
	}

	// Kept on a's host only: b says where it is.
	_, err = mB.Create(ctx, sandbox.CreateRequest{TeamID: "team-a", Snapshot: local.ID})
	if !errors.Is(err, sandbox.ErrNotFound) || sandbox.CodeOf(err) != "snapshot_on_other_replica" || !strings.Contains(err.Error(), "replica-a") {
		t.Errorf("create through b from a snapshot a kept on its host: %v, want snapshot_on_other_replica naming replica-a", err)
	}

	// Another team: either replica gives the server (whose ownership
	// check answers snapshot_not_found to any other team, as for a
	// snapshot on one replica: server's TestSnapshotsBelongToTeams) team
	// a as the owner of both.
	for _, srv := range []serverSnapshots{{store: imagesA}, srvB} {
		for _, id := range []string{pushed.ID, local.ID} {
			snap, err := srv.GetSnapshot(ctx, id)
			if err != nil || snap.TeamID != "team-a" {
				t.Errorf("GetSnapshot %s: %+v, %v; want team a's", id, snap, err)
			}
		}
	}

	// The snapshot registry is the operator's: a replica that has it as
	// its own pulls from it on loopback, which its pull guard refuses
	// any other registry.
	for _, tc := range []struct {
		repo, code string
	}{{"", "registry_address_forbidden"}, {reg + "/snaps", ""}} {
		guarded, err := image.OpenStore(filepath.Join(t.TempDir(), "images"), image.StoreOptions{
			Logger: slog.New(slog.DiscardHandler), SnapshotRegistry: tc.repo})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { guarded.Close() })
		if err := guarded.ShareRefs(ctx, imageDirectory{s: st, replica: "replica-c"}); err != nil {
			t.Fatal(err)
		}
		_, err = guarded.ResolveSnapshot(ctx, pushed.ID)
		if sandbox.CodeOf(err) != tc.code {
			t.Errorf("a guarded replica with snapshot registry %q resolving a pushed snapshot: %v, want code %q", tc.repo, err, tc.code)
		}
	}

	// Deleted through b while a holds it: gone from the directory, from
	// b's store and from the registry; a drops its copy when asked.
	if err := mB.Delete(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	if err := mB.DeleteSnapshot(ctx, pushed.ID); err != nil {
		t.Fatalf("delete through b: %v", err)
	}
	if _, err := st.GetSnapshotRef(ctx, pushed.ID); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("the directory after the delete: %v, want not found", err)
	}
	if _, err := imagesB.GetSnapshot(pushed.ID); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("b's store after the delete: %v", err)
	}
	if _, err := srvB.GetSnapshot(ctx, pushed.ID); sandbox.CodeOf(err) != "snapshot_not_found" {
		t.Errorf("GetSnapshot through b after the delete: %v, want snapshot_not_found", err)
	}
	if _, err := imagesA.ResolveSnapshot(ctx, pushed.ID); sandbox.CodeOf(err) != "snapshot_not_found" {
		t.Errorf("a resolving a snapshot deleted through b: %v, want snapshot_not_found", err)
	}
	if _, err := imagesA.GetSnapshot(pushed.ID); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("a still holds the deleted snapshot: %v", err)
	}
	// Listed by neither, though a held it until asked above.
	checkLists(t, map[string]serverSnapshots{"a": srvA, "b": srvB}, map[string][]string{"team-a": {local.ID}})
	// The one only a holds is deleted through b too.
	if err := mB.DeleteSnapshot(ctx, local.ID); err != nil {
		t.Errorf("delete through b of a snapshot only a holds: %v", err)
	}
	if _, err := st.GetSnapshotRef(ctx, local.ID); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("the directory after deleting a's local snapshot: %v", err)
	}
	if err := mB.DeleteSnapshot(ctx, local.ID); sandbox.CodeOf(err) != "snapshot_not_found" {
		t.Errorf("a second delete: %v, want snapshot_not_found", err)
	}
}

// checkLists checks what each replica's server view lists for each team
// ("" every team's), oldest first, each with its expiry.
func checkLists(t *testing.T, replicas map[string]serverSnapshots, want map[string][]string) {
	t.Helper()
	for name, srv := range replicas {
		for team, ids := range want {
			snaps, err := srv.ListSnapshots(t.Context(), team)
			if err != nil {
				t.Fatalf("list %q through %s: %v", team, name, err)
			}
			got := []string{}
			for i, snap := range snaps {
				got = append(got, snap.ID)
				if i > 0 && snap.CreatedAt.Before(snaps[i-1].CreatedAt) {
					t.Errorf("list %q through %s: %s before the older %s", team, name, snaps[i-1].ID, snap.ID)
				}
				if team != "" && snap.TeamID != team {
					t.Errorf("list %q through %s: %s of team %q", team, name, snap.ID, snap.TeamID)
				}
				if snap.ExpiresAt.IsZero() {
					t.Errorf("list %q through %s: %s without an expiry", team, name, snap.ID)
				}
			}
			// Snapshots taken within a millisecond are ordered by their
			// random ids: compare the sets.
			slices.Sort(got)
			ids = slices.Sorted(slices.Values(ids))
			if !slices.Equal(got, ids) {
				t.Errorf("list %q through %s: %v, want %v", team, name, got, ids)
			}
		}
	}
}

// TestShareRefsRecordsEarlierSnapshots: a store that took snapshots before
// it had a directory records them in it at its first ShareRefs, once.
func TestShareRefsRecordsEarlierSnapshots(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("unpacking image layers keeps owners: needs root")
	}
	ctx := t.Context()
	st := openStore(t, filepath.Join(t.TempDir(), "paddock.db"))
	ref := imagetest.Registry(t) + "/team/old:v1"
	imagetest.Push(t, ref, imagetest.Image(t, nil, "/", imagetest.Layer(t, func(tw *tar.Writer) {
		imagetest.File(t, tw, "old", []byte("old\n"), 0o644)
	})))
	dir := filepath.Join(t.TempDir(), "images")
	open := func() *image.Store {
		s, err := image.OpenStore(dir, image.StoreOptions{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	old := open()
	snap := takeSnapshot(t, old, "team-a", &image.Image{Ref: "host"}, "", "early")
	old.Close()

	reopened := open()
	t.Cleanup(func() { reopened.Close() })
	if err := reopened.ShareRefs(ctx, imageDirectory{s: st, replica: "replica-a"}); err != nil {
		t.Fatal(err)
	}
	got, err := st.GetSnapshotRef(ctx, snap.ID)
	if err != nil || got.Team != "team-a" || got.Replica != "replica-a" || got.Env[0] != "SNAP=early" {
		t.Fatalf("the directory after ShareRefs: %+v, %v", got, err)
	}
	if _, err := st.DeleteSnapshotRef(ctx, snap.ID); err != nil {
		t.Fatal(err)
	}
	if err := reopened.ShareRefs(ctx, imageDirectory{s: st, replica: "replica-a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetSnapshotRef(ctx, snap.ID); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("a second ShareRefs recorded the snapshot again: %v", err)
	}
}
