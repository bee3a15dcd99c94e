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
	{"ImageRefsCount", testImageRefsCount},
	{"SnapshotRefs", testSnapshotRefs},
	{"SnapshotRefsList", testSnapshotRefsList},
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

// testImageRefsCount: a scope's count is its refs, whichever replica
// recorded them, a ref replaced counts once, another scope's never (the
// published scope "" is a scope of its own, not every scope), and a
// deleted ref no more.
func testImageRefsCount(t *testing.T, s store.Store) {
	count := func(scope string, want int) {
		t.Helper()
		n, err := s.CountImageRefs(ctx(t), scope)
		must(t, err)
		equal(t, "CountImageRefs("+scope+")", n, want)
	}
	count("team-a", 0)
	count("", 0)
	for _, r := range []store.ImageRef{
		{Scope: "team-a", Ref: "reg.example/app:v1", Digest: "sha256:aa", Replica: "node-a"},
		{Scope: "team-a", Ref: "reg.example/app:v2", Digest: "sha256:bb", Replica: "node-b"},
		{Scope: "team-a", Ref: "reg.example/app:v1", Digest: "sha256:cc", Replica: "node-b"}, // moved
		{Scope: "team-b", Ref: "reg.example/app:v1", Digest: "sha256:aa", Replica: "node-a"},
		{Scope: "team-ab", Ref: "reg.example/app:v1", Digest: "sha256:aa", Replica: "node-a"},
		{Scope: "", Ref: "reg.example/base:v1", Digest: "sha256:dd", Replica: "node-a"},
	} {
		must(t, s.PutImageRef(ctx(t), r))
	}
	count("team-a", 2)
	count("team-b", 1)
	count("", 1)
	count("team-c", 0)
	deleted, err := s.DeleteImageRef(ctx(t), "team-a", "reg.example/app:v1", "")
	must(t, err)
	equal(t, "deleted", deleted, true)
	count("team-a", 1)
}

// testSnapshotRefs: the snapshot directory keeps each snapshot's record
// whole, a touch only moves its last use later, and a touch of a deleted
// snapshot does not bring it back.
func testSnapshotRefs(t *testing.T, s store.Store) {
	_, err := s.GetSnapshotRef(ctx(t), "snap-1")
	wantErr(t, err, sandbox.ErrNotFound, "snapshot_ref_not_found")
	wantErr(t, s.PutSnapshotRef(ctx(t), store.SnapshotRef{ID: "snap-1", Replica: "node-a"}), sandbox.ErrInvalid, "invalid_record")
	wantErr(t, s.PutSnapshotRef(ctx(t), store.SnapshotRef{ID: "snap-1", Team: "team-a", Replica: "node-a"}), sandbox.ErrInvalid, "invalid_record")

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

// testSnapshotRefsList: a team's snapshots come back oldest first (ties
// by id), in pages, whichever replica recorded them; another team's
// never; "" lists every team's. A replaced record keeps its place by its
// creation time, and a touch does not move it.
func testSnapshotRefsList(t *testing.T, s store.Store) {
	list := func(team string, page store.Page) ([]string, string) {
		t.Helper()
		refs, next, err := s.ListSnapshotRefs(ctx(t), team, page)
		must(t, err)
		if refs == nil {
			t.Fatalf("ListSnapshotRefs(%q) = nil, want an empty list", team)
		}
		ids := []string{}
		for _, r := range refs {
			ids = append(ids, r.ID)
		}
		return ids, next
	}
	ids, next := list("team-a", store.Page{})
	equal(t, "an empty directory", ids, []string{})
	equal(t, "an empty directory's cursor", next, "")

	for _, r := range []store.SnapshotRef{
		{ID: "snap-3", Team: "team-a", Replica: "node-b", CreatedAt: at(2 * time.Second)},
		{ID: "snap-1", Team: "team-a", Replica: "node-a", CreatedAt: at(time.Second), Ref: "reg.example/s@sha256:aa", Size: 7},
		{ID: "snap-2", Team: "team-a", Replica: "node-a", CreatedAt: at(time.Second)},
		{ID: "snap-9", Team: "team-b", Replica: "node-a", CreatedAt: at(0)},
		{ID: "snap-4", Team: "team-a", Replica: "node-c", CreatedAt: at(3 * time.Second)},
	} {
		must(t, s.PutSnapshotRef(ctx(t), r))
	}
	must(t, s.TouchSnapshotRef(ctx(t), "snap-1", at(time.Hour)))
	ids, next = list("team-a", store.Page{})
	equal(t, "team a's snapshots", ids, []string{"snap-1", "snap-2", "snap-3", "snap-4"})
	equal(t, "one page's cursor", next, "")
	ids, _ = list("team-b", store.Page{})
	equal(t, "team b's snapshots", ids, []string{"snap-9"})
	ids, _ = list("team-c", store.Page{})
	equal(t, "a team without snapshots", ids, []string{})
	ids, _ = list("", store.Page{})
	equal(t, "every team's snapshots", ids, []string{"snap-9", "snap-1", "snap-2", "snap-3", "snap-4"})

	// The records come back whole, last use included.
	refs, _, err := s.ListSnapshotRefs(ctx(t), "team-a", store.Page{Limit: 1})
	must(t, err)
	equal(t, "the listed record", refs, []store.SnapshotRef{{ID: "snap-1", Team: "team-a", Replica: "node-a",
		CreatedAt: store.Time(at(time.Second)), LastUsed: store.Time(at(time.Hour)), Ref: "reg.example/s@sha256:aa", Size: 7}})

	// Pages: a record added between two pages is not skipped or repeated.
	var all []string
	var pages int
	for cursor := ""; ; pages++ {
		ids, next := list("team-a", store.Page{Cursor: cursor, Limit: 2})
		all = append(all, ids...)
		if pages == 0 {
			must(t, s.PutSnapshotRef(ctx(t), store.SnapshotRef{ID: "snap-5", Team: "team-a", Replica: "node-a", CreatedAt: at(time.Minute)}))
		}
		if next == "" {
			break
		}
		cursor = next
	}
	equal(t, "team a in pages of 2", all, []string{"snap-1", "snap-2", "snap-3", "snap-4", "snap-5"})

	// Replaced with a later creation time (a snapshot recorded again), it
	// moves; deleted, it is gone from the list.
	must(t, s.PutSnapshotRef(ctx(t), store.SnapshotRef{ID: "snap-1", Team: "team-a", Replica: "node-a", CreatedAt: at(time.Hour)}))
	_, err = s.DeleteSnapshotRef(ctx(t), "snap-3")
	must(t, err)
	ids, _ = list("team-a", store.Page{})
	equal(t, "team a after a replace and a delete", ids, []string{"snap-2", "snap-4", "snap-5", "snap-1"})

	_, _, err = s.ListSnapshotRefs(ctx(t), "team-a", store.Page{Cursor: "bogus"})
	wantErr(t, err, sandbox.ErrInvalid, "invalid_cursor")
}
