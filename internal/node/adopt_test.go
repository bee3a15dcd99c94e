package node

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// sharedRecords is the records of several nodes in one place, as the
// control plane's database keeps them.
type sharedRecords struct {
	mu   sync.Mutex // guards recs
	recs map[string]sharedRecord
}

type sharedRecord struct {
	node string
	sb   sandbox.Sandbox
}

func (s *sharedRecords) node(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.recs[id].node
}

// nodeView is one node's SharedRecords over s.
type nodeView struct {
	s    *sharedRecords
	name string
}

var _ SharedRecords = nodeView{}

func (v nodeView) Save(_ context.Context, sb sandbox.Sandbox) error {
	v.s.mu.Lock()
	defer v.s.mu.Unlock()
	v.s.recs[sb.ID] = sharedRecord{node: v.name, sb: clone(sb)}
	return nil
}

func (v nodeView) Remove(_ context.Context, id string) error {
	v.s.mu.Lock()
	defer v.s.mu.Unlock()
	delete(v.s.recs, id)
	return nil
}

func (v nodeView) LoadAll(ctx context.Context) ([]sandbox.Sandbox, error) {
	return v.LoadNode(ctx, v.name)
}

func (v nodeView) LoadNode(_ context.Context, node string) ([]sandbox.Sandbox, error) {
	v.s.mu.Lock()
	defer v.s.mu.Unlock()
	var out []sandbox.Sandbox
	for _, r := range v.s.recs {
		if r.node == node {
			out = append(out, clone(r.sb))
		}
	}
	return out, nil
}

func (v nodeView) Move(_ context.Context, id, from, to string) (sandbox.Sandbox, error) {
	if from == "" {
		from = v.name
	}
	if to == "" {
		to = v.name
	}
	v.s.mu.Lock()
	defer v.s.mu.Unlock()
	r, ok := v.s.recs[id]
	switch {
	case !ok:
		return sandbox.Sandbox{}, sandbox.ErrNotFound
	case r.node != from:
		return sandbox.Sandbox{}, sandbox.ErrConflict
	}
	r.node = to
	v.s.recs[id] = r
	return clone(r.sb), nil
}

// replicas are nodes sharing records and a clock, each with a driver of
// its own over one agent: "a" a plain one, the others Adopters of a's.
type replicas struct {
	recs  *sharedRecords
	clock *fake.Clock
	a     *fake.Driver
	agent *fake.Agent
}

func newReplicas(t *testing.T) *replicas {
	t.Helper()
	a := fake.NewDriver(t, fake.DriverConfig{})
	return &replicas{recs: &sharedRecords{recs: map[string]sharedRecord{}}, clock: fake.NewClock(epoch), a: a, agent: a.FakeAgent()}
}

// node starts a manager named name over drv.
func (r *replicas) node(t *testing.T, name string, drv runtime.Driver, obs Observer) *Manager {
	t.Helper()
	m, err := New(Config{DataDir: t.TempDir(), Driver: drv, Now: r.clock.Now, Records: nodeView{s: r.recs, name: name},
		MaxResources: sandbox.Resources{VCPUs: 4, MemoryMB: 8192, PIDs: 4096}, Logger: discardLogger(), Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// adopter is a driver of another replica that can take a's sandboxes.
func (r *replicas) adopter(t *testing.T) *fake.Adopter {
	return fake.NewAdopter(fake.NewDriver(t, fake.DriverConfig{Agent: r.agent}), r.a)
}

// TestAdopt: a replica takes over what a gone one left, as a restart
// re-adopts its own: a running sandbox runs here (its agent reached, its
// deadline enforced), one past its deadline stops, one whose sandbox is
// gone fails saying why, an ended one is a record here, an idle pool
// sandbox is destroyed. A second Adopt takes nothing twice.
func TestAdopt(t *testing.T) {
	r := newReplicas(t)
	ma := r.node(t, "a", r.a, nil)
	create := func(timeout time.Duration) sandbox.Sandbox {
		t.Helper()
		sb, err := ma.Create(t.Context(), sandbox.CreateRequest{TeamID: "team-1", Timeout: timeout})
		if err != nil {
			t.Fatal(err)
		}
		return sb
	}
	running := create(time.Hour)
	expiring := create(time.Minute)
	gone := create(time.Hour)
	stopped := create(time.Hour)
	if _, err := ma.Stop(t.Context(), stopped.ID); err != nil {
		t.Fatal(err)
	}
	pooled, err := ma.CreatePooled(t.Context(), "p", sandbox.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// Replica a goes away; its sandboxes stay, but one's Pod is gone.
	if err := ma.Close(); err != nil {
		t.Fatal(err)
	}
	r.a.Forget(gone.ID)
	r.clock.Advance(2 * time.Minute)

	obs := &fakeObserver{}
	db := r.adopter(t)
	mb := r.node(t, "b", db, obs)
	got, err := mb.Adopt(t.Context(), "a")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, sb := range got {
		ids = append(ids, sb.ID)
	}
	want := []string{running.ID, expiring.ID, gone.ID, stopped.ID}
	if slices.Sort(ids); !slices.Equal(ids, slices.Sorted(slices.Values(want))) {
		t.Errorf("adopted %v, want %v", ids, want)
	}
	mb.checkTimeouts(t.Context()) // the timeout loop's next turn, now

	for _, tc := range []struct {
		name    string
		id      string
		state   sandbox.State
		errPart string
	}{
		{"running runs here", running.ID, sandbox.Running, ""},
		{"past its deadline is stopped", expiring.ID, sandbox.Stopped, ""},
		{"gone is failed, saying why", gone.ID, sandbox.Failed, "lost with replica a: the driver has no trace of it"},
		{"stopped stays stopped", stopped.ID, sandbox.Stopped, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sb, err := mb.Get(t.Context(), tc.id)
			if err != nil {
				t.Fatal(err)
			}
			if sb.State != tc.state || !strings.HasPrefix(sb.Error, tc.errPart) || (tc.errPart == "") != (sb.Error == "") {
				t.Errorf("state %s, error %q; want %s, %q", sb.State, sb.Error, tc.state, tc.errPart)
			}
			if n := r.recs.node(tc.id); n != "b" {
				t.Errorf("its record is node %q's, want b's", n)
			}
			if _, known := r.a.Running(tc.id); known {
				t.Error("the gone replica's driver still has it")
			}
		})
	}

	// The running one is this node's: its agent answers here, a stop
	// goes through this node's driver.
	c, err := mb.Agent(t.Context(), running.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Ping(t.Context()); err != nil {
		t.Errorf("the adopted sandbox's agent: %v", err)
	}
	if _, err := mb.Stop(t.Context(), running.ID); err != nil || !db.Called("stop", running.ID) {
		t.Errorf("Stop of the adopted sandbox: %v, through this driver: %v", err, db.Called("stop", running.ID))
	}

	// The pool sandbox is gone, record and all.
	if _, err := mb.Get(t.Context(), pooled.ID); err == nil || r.recs.node(pooled.ID) != "" || !db.Called("destroy", pooled.ID) {
		t.Errorf("pool sandbox: Get err %v, record on %q, destroyed %v; want gone", err, r.recs.node(pooled.ID), db.Called("destroy", pooled.ID))
	}

	// An event for each live sandbox taken over.
	var adopted []string
	for _, e := range obs.events {
		if e.Type == EventAdopted {
			adopted = append(adopted, e.Sandbox.ID)
			if e.Reason != "replica a is gone" {
				t.Errorf("event reason %q", e.Reason)
			}
		}
	}
	if slices.Sort(adopted); !slices.Equal(adopted, slices.Sorted(slices.Values([]string{running.ID, expiring.ID, gone.ID}))) {
		t.Errorf("adopted events for %v", adopted)
	}

	// Again: nothing left to take.
	calls := db.Count("adopt")
	if again, err := mb.Adopt(t.Context(), "a"); err != nil || len(again) != 0 || db.Count("adopt") != calls {
		t.Errorf("second Adopt = %v, %v (%d driver calls more); want nothing", again, err, db.Count("adopt")-calls)
	}
}

// TestAdoptLeavesLocalSandboxes: a node whose driver cannot reach another
// host's sandboxes (runc, gVisor) leaves the gone replica's records alone.
func TestAdoptLeavesLocalSandboxes(t *testing.T) {
	r := newReplicas(t)
	ma := r.node(t, "a", r.a, nil)
	sb, err := ma.Create(t.Context(), sandbox.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ma.Close()
	mb := r.node(t, "b", fake.NewDriver(t, fake.DriverConfig{Agent: r.agent}), nil)
	if got, err := mb.Adopt(t.Context(), "a"); err != nil || len(got) != 0 {
		t.Errorf("Adopt = %v, %v; want nothing", got, err)
	}
	if n := r.recs.node(sb.ID); n != "a" {
		t.Errorf("the record is node %q's, want a's still", n)
	}
	if running, _ := r.a.Running(sb.ID); !running {
		t.Error("the sandbox was stopped")
	}
}

// TestAdoptDriverFails: a driver that cannot be asked (the API server
// down) leaves the record with the gone replica, for the next Adopt.
func TestAdoptDriverFails(t *testing.T) {
	r := newReplicas(t)
	ma := r.node(t, "a", r.a, nil)
	sb, err := ma.Create(t.Context(), sandbox.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ma.Close()
	db := r.adopter(t)
	mb := r.node(t, "b", db, nil)
	db.SetAdoptErr(sandbox.Errorf(sandbox.ErrUnavailable, "down", "the API server is down"))
	if got, err := mb.Adopt(t.Context(), "a"); err == nil || len(got) != 0 {
		t.Errorf("Adopt with the driver failing = %v, %v; want an error", got, err)
	}
	if n := r.recs.node(sb.ID); n != "a" {
		t.Errorf("the record is node %q's, want a's again", n)
	}
	if _, err := mb.Get(t.Context(), sb.ID); err == nil {
		t.Error("the node has the sandbox it could not adopt")
	}
	db.SetAdoptErr(nil)
	if got, err := mb.Adopt(t.Context(), "a"); err != nil || len(got) != 1 || got[0].State != sandbox.Running {
		t.Errorf("Adopt again = %+v, %v; want it running", got, err)
	}
}

// TestAdoptRace: two replicas adopting at once take each sandbox once.
func TestAdoptRace(t *testing.T) {
	r := newReplicas(t)
	ma := r.node(t, "a", r.a, nil)
	want := map[string]bool{}
	for range 8 {
		sb, err := ma.Create(t.Context(), sandbox.CreateRequest{})
		if err != nil {
			t.Fatal(err)
		}
		want[sb.ID] = true
	}
	ma.Close()
	nodes := []*Manager{r.node(t, "b", r.adopter(t), nil), r.node(t, "c", r.adopter(t), nil)}
	got := make([][]sandbox.Sandbox, len(nodes))
	var wg sync.WaitGroup
	for i, m := range nodes {
		wg.Go(func() {
			var err error
			if got[i], err = m.Adopt(t.Context(), "a"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	seen := map[string]int{}
	for i, sbs := range got {
		for _, sb := range sbs {
			seen[sb.ID]++
			if sb.State != sandbox.Running {
				t.Errorf("%s on node %d: %s %q", sb.ID, i, sb.State, sb.Error)
			}
		}
	}
	for id := range want {
		if seen[id] != 1 {
			t.Errorf("%s taken %d times, want once", id, seen[id])
		}
	}
}
