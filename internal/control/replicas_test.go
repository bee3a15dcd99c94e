package control

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/lease"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/mongo/mongotest"
)

// replica starts another Service on e's store, as another replica on
// another host: sandboxes and a data dir of its own.
func (e *env) replica(t *testing.T, name string, mod func(*Config)) *env {
	t.Helper()
	cfg := e.cfg
	cfg.Replica, cfg.Sweep = name, nil
	cfg.Sandboxes = newFakeSandboxes(t)
	cfg.DataDir = t.TempDir()
	if mod != nil {
		mod(&cfg)
	}
	r := &env{store: e.store, fs: cfg.Sandboxes.(*fakeSandboxes), dir: cfg.DataDir, cfg: cfg}
	r.svc = r.start(t)
	return r
}

// TestReplicaLeavesOthersActivations: a replica starting on a shared
// store re-adopts only its own activations. Before activations recorded
// their replica, it took every live one for its own: it could not find
// another replica's sandbox, and ended that replica's ready app.
func TestReplicaLeavesOthersActivations(t *testing.T) {
	a := newEnv(t, func(c *Config) { c.Replica = "replica-a" })
	v := a.create(t, appRequest(t, "app"))
	act := activateReady(t, a.svc, v.ID)
	if act.Replica != "replica-a" {
		t.Fatalf("activation's replica = %q, want replica-a", act.Replica)
	}
	a.replica(t, "replica-b", nil)
	got, err := a.store.GetActivation(context.Background(), act.ID)
	if err != nil {
		t.Fatal(err)
	}
	if stateOf(got) != StateReady || !slices.Contains(a.fs.live(), act.SandboxID) {
		t.Fatalf("replica-a's activation after replica-b started: %s (%s), sandboxes %v", got.State, got.EndReason, a.fs.live())
	}
}

// TestSweepEndsGoneReplicasActivations: the replica holding the sweep
// fails what a gone replica was bringing up (replica_lost), ends a gone
// replica's ready activation once OrphanGrace has passed, and leaves live
// replicas' activations and those still within the grace alone; without
// the sweep's lease it does nothing.
func TestSweepEndsGoneReplicasActivations(t *testing.T) {
	var sweeping atomic.Bool
	e := newEnv(t, func(c *Config) {
		c.Replica = "replica-b"
		c.OrphanGrace = time.Hour
		c.Sweep = func() (context.Context, bool) { return context.Background(), sweeping.Load() }
	})
	ctx := context.Background()
	now := time.Now()
	leaseAt := func(replica string, at time.Time) {
		t.Helper()
		if _, err := e.store.AcquireLease(ctx, lease.ReplicaLease(replica), replica, lease.DefaultTTL, at); err != nil {
			t.Fatal(err)
		}
	}
	leaseAt("replica-dead", now.Add(-time.Minute)) // expired 45 s ago
	leaseAt("replica-old", now.Add(-2*time.Hour))  // expired past the grace
	leaseAt("replica-live", now)                   // renewed just now
	acts := map[string]store.Activation{}
	for _, tc := range []struct{ name, replica, state, sandbox string }{
		{"coming-up", "replica-dead", string(StateProvisioning), ""},
		{"live-replica", "replica-live", string(StateInstalling), ""},
		{"ready-in-grace", "replica-dead", string(StateReady), "sb-elsewhere-1"},
		{"ready-past-grace", "replica-old", string(StateReady), "sb-elsewhere-2"},
		{"never-leased", "replica-ghost", string(StateQueued), ""},
	} {
		v := e.create(t, appRequest(t, tc.name))
		a := store.Activation{ID: "act-" + randomHex(8), ProjectID: v.ID, TeamID: teamA.TeamID, State: tc.state,
			SandboxID: tc.sandbox, Replica: tc.replica, CreatedAt: now}
		if err := e.store.CreateActivation(ctx, a); err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.updateProject(ctx, v.ID, func(p *store.Project) bool { p.ActiveActivation = a.ID; return true }); err != nil {
			t.Fatal(err)
		}
		acts[tc.name] = a
	}
	get := func(name string) store.Activation {
		t.Helper()
		a, err := e.store.GetActivation(ctx, acts[name].ID)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}

	// Not the sweep's holder: several checks pass, nothing moves.
	time.Sleep(10 * e.cfg.IdleCheckInterval)
	for name := range acts {
		if a := get(name); a.State != acts[name].State {
			t.Fatalf("%s moved to %s without the sweep's lease", name, a.State)
		}
	}

	sweeping.Store(true)
	deadline := time.Now().Add(10 * time.Second)
	for stateOf(get("coming-up")) != StateFailed || stateOf(get("ready-past-grace")) != StateStopped ||
		stateOf(get("never-leased")) != StateFailed {
		if time.Now().After(deadline) {
			t.Fatalf("not swept: coming-up %s, ready-past-grace %s, never-leased %s",
				get("coming-up").State, get("ready-past-grace").State, get("never-leased").State)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, name := range []string{"coming-up", "ready-past-grace", "never-leased"} {
		a := get(name)
		if a.EndReason != ReasonReplicaLost || a.EndedAt.IsZero() {
			t.Errorf("%s ended with reason %q at %v, want %q", name, a.EndReason, a.EndedAt, ReasonReplicaLost)
		}
		pr, err := e.store.GetProject(ctx, "", a.ProjectID)
		if err != nil || pr.ActiveActivation != "" {
			t.Errorf("%s's project still holds %q (%v)", name, pr.ActiveActivation, err)
		}
	}
	if a := get("coming-up"); a.Error == "" {
		t.Error("the failed activation says nothing of why")
	}
	evs, err := e.store.ListEvents(ctx, store.EventFilter{ActivationID: acts["coming-up"].ID})
	if err != nil || len(evs) == 0 || evs[len(evs)-1].Type != string(StateFailed) || evs[len(evs)-1].Data["reason"] != ReasonReplicaLost {
		t.Errorf("events of the failed activation: %+v (%v)", evs, err)
	}
	for _, name := range []string{"live-replica", "ready-in-grace"} {
		if a := get(name); a.State != acts[name].State {
			t.Errorf("%s moved to %s (%s), want it left alone", name, a.State, a.EndReason)
		}
	}
}

func TestMain(m *testing.M) { mongotest.Main(m) }

// TestIdleTeardownOnce: an idle project is torn down exactly once with
// two replicas on one store (SQLite, FerretDB): by the replica that
// drives it, whose sandbox it is; the other, which checks limits as
// often, never acts on it.
func TestIdleTeardownOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(t *testing.T) store.Store // nil: newEnv's SQLite
	}{
		{"SQLite", nil},
		{"FerretDB", func(t *testing.T) store.Store { return mongotest.Open(t, mongotest.URI(t), mongotest.NewDB()) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newEnv(t, func(c *Config) {
				c.Replica = "replica-a"
				if tc.open != nil {
					c.Store = tc.open(t)
				}
			})
			st := a.cfg.Store
			// replica-a is alive: its liveness lease (the daemon keeps it) is fresh.
			if _, err := st.AcquireLease(context.Background(), lease.ReplicaLease("replica-a"), "replica-a", time.Hour, time.Now()); err != nil {
				t.Fatal(err)
			}
			req := appRequest(t, "idle")
			req.IdleTimeout = time.Second
			v, err := a.svc.CreateProject(context.Background(), teamA, req)
			if err != nil {
				t.Fatal(err)
			}
			act := activateReady(t, a.svc, v.ID)
			// replica-b (re)starts while the app runs, and holds the sweep.
			b := a.replica(t, "replica-b", func(c *Config) {
				c.Sweep = func() (context.Context, bool) { return context.Background(), true }
			})
			deadline := time.Now().Add(15 * time.Second)
			var got store.Activation
			for {
				if got, err = st.GetActivation(context.Background(), act.ID); err != nil {
					t.Fatal(err)
				}
				if stateOf(got).Terminal() {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("activation still %s", got.State)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if got.State != string(StateStopped) || got.EndReason != ReasonIdle {
				t.Fatalf("activation ended %s (%s), want stopped by %s", got.State, got.EndReason, ReasonIdle)
			}
			// The final event follows the record; then a second teardown
			// would show within a few checks.
			var evs []store.Event
			for stopped := false; !stopped; {
				if evs, err = st.ListEvents(context.Background(), store.EventFilter{ActivationID: act.ID}); err != nil {
					t.Fatal(err)
				}
				stopped = len(evs) > 0 && evs[len(evs)-1].Type == string(StateStopped)
				if time.Now().After(deadline) {
					t.Fatalf("no stopped event: %+v", evs)
				}
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(10 * a.cfg.IdleCheckInterval)
			if evs, err = st.ListEvents(context.Background(), store.EventFilter{ActivationID: act.ID}); err != nil {
				t.Fatal(err)
			}
			count := map[string]int{}
			for _, e := range evs {
				switch {
				case e.Type == string(StateDeactivating) && e.Data["reason"] != "":
					count["teardown "+e.Data["reason"]]++
				case e.Type == string(StateDeactivating):
					count["save: "+e.Message]++
				default:
					count[e.Type]++
				}
			}
			if count["teardown "+ReasonIdle] != 1 || count["save: state saved"] != 1 || count[string(StateStopped)] != 1 || len(count) != 8 {
				t.Fatalf("events %v, want one teardown, one save and one stop", count)
			}
			if n := len(a.fs.live()); n != 0 {
				t.Fatalf("replica-a kept %d sandboxes", n)
			}
			if n := b.fs.createCount(); n != 0 {
				t.Fatalf("replica-b made %d sandboxes", n)
			}
		})
	}
}

// peeredSandboxes is a replica's sandboxes whose node knows its peer's, as
// node.Config.Peers makes it: the peer's are elsewhere, not missing.
type peeredSandboxes struct {
	*fakeSandboxes
	peer *fakeSandboxes
}

func (p peeredSandboxes) Get(ctx context.Context, id string) (sandbox.Sandbox, error) {
	sb, err := p.fakeSandboxes.Get(ctx, id)
	if errors.Is(err, sandbox.ErrNotFound) {
		if psb, perr := p.peer.Get(ctx, id); perr == nil {
			return sb, &sandbox.ElsewhereError{ID: id, TeamID: psb.TeamID, Replica: "replica-a", URL: "http://replica-a"}
		}
	}
	return sb, err
}

// TestAppTargetElsewhere: the app of a project another replica drives is
// there, so the app proxy forwards its requests there; another team's
// project stays not found, an inactive one not active.
func TestAppTargetElsewhere(t *testing.T) {
	a := newEnv(t, func(c *Config) { c.Replica = "replica-a" })
	v := a.create(t, appRequest(t, "app"))
	act := activateReady(t, a.svc, v.ID)

	cfg := a.cfg
	cfg.Replica, cfg.Sweep, cfg.DataDir = "replica-b", nil, t.TempDir()
	cfg.Sandboxes = peeredSandboxes{fakeSandboxes: newFakeSandboxes(t), peer: a.fs}
	b := &env{store: a.store, dir: cfg.DataDir, cfg: cfg}
	b.svc = b.start(t)

	_, err := b.svc.AppTarget(t.Context(), teamA, v.ID)
	var ee *sandbox.ElsewhereError
	if !errors.As(err, &ee) || ee.ID != act.SandboxID || ee.URL != "http://replica-a" {
		t.Fatalf("replica-b's AppTarget of replica-a's app: %v, want an ElsewhereError for %s", err, act.SandboxID)
	}
	if _, err := b.svc.AppTarget(t.Context(), teamB, v.ID); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("another team's AppTarget through replica-b: %v, want not found", err)
	}
	a.deactivate(t, v.ID)
	if _, err := b.svc.AppTarget(t.Context(), teamA, v.ID); sandbox.CodeOf(err) != "project_not_active" {
		t.Fatalf("replica-b's AppTarget once deactivated: %v, want project_not_active", err)
	}
}
