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
