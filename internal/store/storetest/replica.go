package storetest

import (
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

var replicaCases = []struct {
	name string
	fn   func(t *testing.T, s store.Store)
}{
	{"Replicas", testReplicas},
	{"ImageRefs", testImageRefs},
	{"SnapshotRefs", testSnapshotRefs},
}

func testReplicas(t *testing.T, s store.Store) {
	_, err := s.GetReplica(ctx(t), "node-a")
	wantErr(t, err, sandbox.ErrNotFound, "replica_not_found")
	list, err := s.ListReplicas(ctx(t))
	must(t, err)
	equal(t, "an empty directory", len(list), 0)
	wantErr(t, s.PutReplica(ctx(t), store.Replica{URL: "http://x"}), sandbox.ErrInvalid, "invalid_record")

	// Times come back at the store's precision.
	a := store.Replica{Name: "node-a", URL: "http://10.0.0.1:8080", UpdatedAt: at(1500 * time.Microsecond)}
	must(t, s.PutReplica(ctx(t), a))
	must(t, s.PutReplica(ctx(t), store.Replica{Name: "node-b", URL: "http://10.0.0.2:8080", UpdatedAt: at(0)}))
	got, err := s.GetReplica(ctx(t), "node-a")
	must(t, err)
	a.UpdatedAt = store.Time(a.UpdatedAt)
	equal(t, "GetReplica", got, a)

	// A restart under the same name moves it: the record is replaced.
	a2 := store.Replica{Name: "node-a", URL: "http://10.0.0.9:8080", UpdatedAt: at(time.Minute)}
	must(t, s.PutReplica(ctx(t), a2))
	list, err = s.ListReplicas(ctx(t))
	must(t, err)
	a2.UpdatedAt = store.Time(a2.UpdatedAt)
	equal(t, "ListReplicas", list, []store.Replica{a2, {Name: "node-b", URL: "http://10.0.0.2:8080", UpdatedAt: store.Time(at(0))}})
}

// testImageRefs: the image directory keeps each scope's refs apart, and a
// delete names the image it removes, so a ref moved meanwhile stays.
func testImageRefs(t *testing.T, s store.Store) {
	_, err := s.GetImageRef(ctx(t), "team-a", "reg.example/app:v1")
	wantErr(t, err, sandbox.ErrNotFound, "image_ref_not_found")
	wantErr(t, s.PutImageRef(ctx(t), store.ImageRef{Scope: "team-a", Ref: "reg.example/app:v1"}), sandbox.ErrInvalid, "invalid_record")

	pulled := store.ImageRef{Scope: "team-a", Ref: "reg.example/app:v1", Digest: "sha256:aa", Source: "reg.example/app:v1",
		Platform: "linux/amd64", Insecure: true, Keychain: true, Replica: "node-a", UpdatedAt: at(1500 * time.Microsecond)}
	imported := store.ImageRef{Scope: "", Ref: "sha256:bb", Digest: "sha256:bb", Replica: "node-b", UpdatedAt: at(0)}
	// Another scope's ref of the same name, and a scope and ref that
	// concatenate alike, are other records.
	other := store.ImageRef{Scope: "team-b", Ref: "reg.example/app:v1", Digest: "sha256:cc", Source: "reg.example/app:v1", Replica: "node-a"}
	tricky := store.ImageRef{Scope: "team-ar", Ref: "eg.example/app:v1", Digest: "sha256:dd", Replica: "node-a"}
	for _, r := range []store.ImageRef{pulled, imported, other, tricky} {
		must(t, s.PutImageRef(ctx(t), r))
	}
	for _, want := range []store.ImageRef{pulled, imported, other, tricky} {
		got, err := s.GetImageRef(ctx(t), want.Scope, want.Ref)
		must(t, err)
		want.UpdatedAt = store.Time(want.UpdatedAt)
		equal(t, "GetImageRef "+want.Scope+" "+want.Ref, got, want)
	}
	_, err = s.GetImageRef(ctx(t), "team-c", "reg.example/app:v1")
	wantErr(t, err, sandbox.ErrNotFound, "image_ref_not_found")

	// A pull elsewhere moves the ref: the record is replaced.
	moved := pulled
	moved.Digest, moved.Replica, moved.Insecure, moved.Keychain, moved.UpdatedAt = "sha256:ee", "node-b", false, false, at(time.Minute)
	must(t, s.PutImageRef(ctx(t), moved))
	got, err := s.GetImageRef(ctx(t), "team-a", "reg.example/app:v1")
	must(t, err)
	moved.UpdatedAt = store.Time(moved.UpdatedAt)
	equal(t, "GetImageRef after a move", got, moved)

	// A delete of the image it named before the move leaves it.
	deleted, err := s.DeleteImageRef(ctx(t), "team-a", "reg.example/app:v1", "sha256:aa")
	must(t, err)
	equal(t, "deleted a moved ref", deleted, false)
	deleted, err = s.DeleteImageRef(ctx(t), "team-a", "reg.example/app:v1", "sha256:ee")
	must(t, err)
	equal(t, "deleted", deleted, true)
	_, err = s.GetImageRef(ctx(t), "team-a", "reg.example/app:v1")
	wantErr(t, err, sandbox.ErrNotFound, "image_ref_not_found")
	deleted, err = s.DeleteImageRef(ctx(t), "team-a", "reg.example/app:v1", "")
	must(t, err)
	equal(t, "deleted an unknown ref", deleted, false)
	deleted, err = s.DeleteImageRef(ctx(t), "", "sha256:bb", "")
	must(t, err)
	equal(t, "deleted whatever it named", deleted, true)
	// The other team's ref of that name is untouched.
	if _, err := s.GetImageRef(ctx(t), "team-b", "reg.example/app:v1"); err != nil {
		t.Fatalf("the other team's ref: %v", err)
	}
}

// testSnapshotRefs: the snapshot directory keeps each snapshot's record
// whole, a touch only moves its last use later, and a touch of a deleted
// snapshot does not bring it back.
func testSnapshotRefs(t *testing.T, s store.Store) {
	_, err := s.GetSnapshotRef(ctx(t), "snap-1")
	wantErr(t, err, sandbox.ErrNotFound, "snapshot_ref_not_found")
	wantErr(t, s.PutSnapshotRef(ctx(t), store.SnapshotRef{ID: "snap-1", Replica: "node-a"}), sandbox.ErrInvalid, "invalid_record")

	pushed := store.SnapshotRef{ID: "snap-1", Team: "team-a", Ref: "reg.example/snaps@sha256:aa", Digest: "sha256:aa",
		Replica: "node-a", Source: "sb-1", Image: "reg.example/app:v1", ImageDigest: "sha256:bb", OnHost: true,
		Runtime: "kubernetes", Env: []string{"A=1", "B=2"}, WorkingDir: "/work", User: "1000", Size: 4096,
		CreatedAt: at(1500 * time.Microsecond), LastUsed: at(time.Second)}
	local := store.SnapshotRef{ID: "snap-2", Team: "team-b", Replica: "node-b", Source: "sb-2", Image: "host", CreatedAt: at(0)}
	for _, r := range []store.SnapshotRef{pushed, local} {
		must(t, s.PutSnapshotRef(ctx(t), r))
	}
	for _, want := range []store.SnapshotRef{pushed, local} {
		got, err := s.GetSnapshotRef(ctx(t), want.ID)
		must(t, err)
		want.CreatedAt, want.LastUsed = store.Time(want.CreatedAt), store.Time(want.LastUsed)
		equal(t, "GetSnapshotRef "+want.ID, got, want)
	}

	// Touches: an earlier one is ignored, a later one moves it, one of a
	// record with no last use yet sets it.
	must(t, s.TouchSnapshotRef(ctx(t), "snap-1", at(0)))
	must(t, s.TouchSnapshotRef(ctx(t), "snap-2", at(time.Minute)))
	got, err := s.GetSnapshotRef(ctx(t), "snap-1")
	must(t, err)
	equal(t, "an earlier touch", got.LastUsed, store.Time(at(time.Second)))
	must(t, s.TouchSnapshotRef(ctx(t), "snap-1", at(time.Hour)))
	got, err = s.GetSnapshotRef(ctx(t), "snap-1")
	must(t, err)
	equal(t, "a later touch", got.LastUsed, store.Time(at(time.Hour)))
	equal(t, "a touch keeps the rest", got.Ref, pushed.Ref)
	got, err = s.GetSnapshotRef(ctx(t), "snap-2")
	must(t, err)
	equal(t, "a first touch", got.LastUsed, store.Time(at(time.Minute)))

	deleted, err := s.DeleteSnapshotRef(ctx(t), "snap-1")
	must(t, err)
	equal(t, "deleted", deleted, true)
	deleted, err = s.DeleteSnapshotRef(ctx(t), "snap-1")
	must(t, err)
	equal(t, "deleted again", deleted, false)
	must(t, s.TouchSnapshotRef(ctx(t), "snap-1", at(2*time.Hour)))
	_, err = s.GetSnapshotRef(ctx(t), "snap-1")
	wantErr(t, err, sandbox.ErrNotFound, "snapshot_ref_not_found")
	if _, err := s.GetSnapshotRef(ctx(t), "snap-2"); err != nil {
		t.Fatalf("the other snapshot: %v", err)
	}
}
