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
