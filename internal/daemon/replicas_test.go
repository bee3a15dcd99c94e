package daemon

import (
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/paddock-dev/paddock/internal/control"
	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/lease"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/mongo/mongotest"
)

// startLeaseReplica starts a daemon named name on st with short leases.
func startLeaseReplica(t *testing.T, st store.Store, name string) *Daemon {
	t.Helper()
	return startReplicaOn(t, st, name, fake.NewDriver(t, fake.DriverConfig{}), 900*time.Millisecond)
}

// startReplicaOn starts a daemon named name on st and drv, with leases of
// ttl (renewed six times per ttl) and a fast sweep.
func startReplicaOn(t *testing.T, st store.Store, name string, drv runtime.Driver, ttl time.Duration) *Daemon {
	t.Helper()
	cfg := Config{DataDir: newDataDir(t), NoNetwork: true, NodeName: name,
		LeaseTTL: ttl, LeaseRenew: ttl / 6, OrphanGrace: time.Hour}
	d, err := Start(t.Context(), cfg, WithDriver(drv), WithStore(st),
		WithControlConfig(func(c *control.Config) { c.IdleCheckInterval = 50 * time.Millisecond }))
	if err != nil {
		t.Fatalf("Start %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close %s: %v", name, err)
		}
	})
	return d
}

// TestReplicasShareBackgroundWork: two daemons on one FerretDB. Exactly one
// holds the background lease; it fails, once, the activation a killed
// replica left coming up (replica_lost) and leaves the live replica's
// alone; when it stops, the other takes the lease over within a renewal.
func TestReplicasShareBackgroundWork(t *testing.T) {
	// The stores first: FerretDB (the test binary's, started once) keeps
	// a listener and a connection pool per database for its lifetime.
	uri, db := mongotest.URI(t), mongotest.NewDB()
	sa, sb := mongotest.Open(t, uri, db), mongotest.Open(t, uri, db)
	noGoroutinesLeftButFerretDB(t)
	a := startLeaseReplica(t, sa, "node-a")
	b := startLeaseReplica(t, sb, "node-b")
	ctx := t.Context()

	if a.leader() == b.leader() {
		t.Fatalf("background lease held by a: %v, by b: %v; want exactly one", a.leader(), b.leader())
	}
	leader, other := a, b
	if b.leader() {
		leader, other = b, a
	}

	// What a replica killed mid-activation leaves: an activation coming
	// up, and its liveness lease, no longer renewed, lapsing.
	if _, err := sa.AcquireLease(ctx, lease.ReplicaLease("node-dead"), "node-dead", 900*time.Millisecond, time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	var acts []store.Activation
	for i, replica := range []string{"node-dead", other.cfg.NodeName} {
		p := store.Project{ID: "prj-00000000000000a" + string(rune('0'+i)), TeamID: "team-a", Name: "p" + replica, Spec: []byte(`{}`)}
		act := store.Activation{ID: "act-00000000000000a" + string(rune('0'+i)), ProjectID: p.ID, TeamID: p.TeamID,
			State: string(control.StateInstalling), Replica: replica}
		p.ActiveActivation = act.ID
		if err := sa.CreateProject(ctx, p); err != nil {
			t.Fatal(err)
		}
		if err := sa.CreateActivation(ctx, act); err != nil {
			t.Fatal(err)
		}
		acts = append(acts, act)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, err := sb.GetActivation(ctx, acts[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.State == string(control.StateFailed) {
			if got.EndReason != control.ReasonReplicaLost {
				t.Fatalf("failed with reason %q (%s), want %q", got.EndReason, got.Error, control.ReasonReplicaLost)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dead replica's activation is still %s", got.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // a second sweep, by either replica, would show now
	evs, err := sa.ListEvents(ctx, store.EventFilter{ActivationID: acts[0].ID})
	if err != nil {
		t.Fatal(err)
	}
	if n := countType(evs, string(control.StateFailed)); n != 1 {
		t.Fatalf("%d failed events, want 1: %+v", n, evs)
	}
	if got, err := sa.GetActivation(ctx, acts[1].ID); err != nil || got.State != string(control.StateInstalling) {
		t.Fatalf("the live replica's activation: %+v, %v; want it left installing", got, err)
	}

	// The holder stops (its lease released): the other takes over.
	if err := leader.Close(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); !other.leader(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the remaining replica never took the background lease over")
		}
	}
}

// noGoroutinesLeftButFerretDB is noGoroutinesLeft but for the FerretDB
// server's goroutines serving the stores' connections, which the stores
// (closed after this check) own.
func noGoroutinesLeftButFerretDB(t *testing.T) {
	t.Helper()
	opts := []goleak.Option{goleak.IgnoreCurrent()}
	for _, f := range []string{
		"github.com/FerretDB/FerretDB/internal/clientconn.(*conn).run",
		"github.com/FerretDB/FerretDB/internal/clientconn.(*conn).run.func2",
		"github.com/FerretDB/FerretDB/internal/util/ctxutil.WithDelay.func1",
	} {
		opts = append(opts, goleak.IgnoreAnyFunction(f))
	}
	t.Cleanup(func() { goleak.VerifyNone(t, opts...) })
}

func countType(evs []store.Event, typ string) int {
	n := 0
	for _, e := range evs {
		if e.Type == typ {
			n++
		}
	}
	return n
}
