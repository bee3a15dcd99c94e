package daemon

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/node"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// TestNodeRecordsMove: a record moves from one node to another once, and
// only from the node that has it.
func TestNodeRecordsMove(t *testing.T) {
	st := openStore(t, filepath.Join(t.TempDir(), "paddock.db"))
	ctx := t.Context()
	if err := st.PutSandbox(ctx, store.SandboxRecord{Node: "node-a", Sandbox: sandbox.Sandbox{ID: "sb-moved", State: sandbox.Running, Image: "host"}}); err != nil {
		t.Fatal(err)
	}
	b := newNodeRecords(st, "node-b")
	if got, err := b.LoadNode(ctx, "node-a"); err != nil || len(got) != 1 || got[0].ID != "sb-moved" {
		t.Fatalf("LoadNode(node-a) = %+v, %v", got, err)
	}
	if sb, err := b.Move(ctx, "sb-moved", "node-a", ""); err != nil || sb.ID != "sb-moved" {
		t.Fatalf("Move = %+v, %v", sb, err)
	}
	if rec, err := st.GetSandbox(ctx, "sb-moved"); err != nil || rec.Node != "node-b" || rec.Sandbox.State != sandbox.Running {
		t.Errorf("after the move: %+v, %v; want node-b's, running", rec, err)
	}
	if _, err := b.Move(ctx, "sb-moved", "node-a", ""); !errors.Is(err, sandbox.ErrConflict) {
		t.Errorf("Move from a node that no longer has it = %v, want ErrConflict", err)
	}
	if _, err := b.Move(ctx, "sb-none", "node-a", ""); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("Move of no record = %v, want ErrNotFound", err)
	}
	if _, err := b.Move(ctx, "sb-moved", "", "node-a"); err != nil {
		t.Errorf("Move back: %v", err)
	}
	if rec, _ := st.GetSandbox(ctx, "sb-moved"); rec.Node != "node-a" {
		t.Errorf("moved back to %q", rec.Node)
	}
}

// startTakeoverReplica starts a daemon named name on st over drv, with
// short leases and a fast sweep.
func startTakeoverReplica(t *testing.T, st store.Store, name string, drv runtime.Driver) *Daemon {
	t.Helper()
	return startReplicaOn(t, st, name, drv, 600*time.Millisecond)
}

// TestTakeover: two replicas share a store and a "cluster"; one goes
// away, leaving a running sandbox. Once its lease has lapsed a grace ago,
// the other takes the sandbox over: running there, its record that
// replica's, a sandbox.adopted event for it.
func TestTakeover(t *testing.T) {
	st := openStore(t, filepath.Join(t.TempDir(), "paddock.db"))
	ctx := t.Context()
	da := fake.NewDriver(t, fake.DriverConfig{})
	db := fake.NewAdopter(fake.NewDriver(t, fake.DriverConfig{Agent: da.FakeAgent()}), da)
	a := startTakeoverReplica(t, st, "node-a", da)
	b := startTakeoverReplica(t, st, "node-b", db)
	sb, err := a.node.Create(ctx, sandbox.CreateRequest{TeamID: "team-a"})
	if err != nil {
		t.Fatal(err)
	}
	closed := time.Now()
	if err := a.Close(); err != nil { // its replica lease is left to lapse
		t.Fatal(err)
	}

	var took time.Duration
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if got, err := b.node.Get(ctx, sb.ID); err == nil {
			took = time.Since(closed)
			if got.State != sandbox.Running {
				t.Fatalf("taken over as %s (%s), want running", got.State, got.Error)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the gone replica's sandbox was never taken over")
		}
	}
	// Not before the lease lapsed (TTL after its last renewal) and the
	// grace (one TTL) passed.
	if took < 600*time.Millisecond {
		t.Errorf("taken over %v after the replica went: before its lease lapsed", took)
	}
	if rec, err := st.GetSandbox(ctx, sb.ID); err != nil || rec.Node != "node-b" {
		t.Errorf("the record: %+v, %v; want node-b's", rec, err)
	}
	if !db.Called("adopt", sb.ID) {
		t.Error("the driver was not asked to adopt it")
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		evs, err := st.ListEvents(ctx, store.EventFilter{TeamID: "team-a"})
		if err != nil {
			t.Fatal(err)
		}
		if n := countType(evs, string(node.EventAdopted)); n == 1 {
			break
		} else if n > 1 || time.Now().After(deadline) {
			t.Fatalf("%d %s events, want 1: %+v", n, node.EventAdopted, evs)
		}
	}
}
