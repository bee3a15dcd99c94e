package node

import (
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// TestLiveness: a sandbox whose driver no longer runs it is stopped, with
// the reason kept and a "sandbox.stopped" event saying "exited"; one gone
// from the driver's list is stopped only on its second miss; the others
// keep running.
func TestLiveness(t *testing.T) {
	obs := &fakeObserver{}
	e := newEnv(t, func(c *Config) { c.Observer = obs })
	dead, gone, alive := e.create(t), e.create(t), e.create(t)
	e.d.SetSandbox(dead.ID, false)
	e.d.Forget(gone.ID)

	absent := map[string]bool{}
	e.m.checkLiveness(t.Context(), absent)
	got := e.get(t, dead.ID)
	if got.State != sandbox.Stopped || got.Error != "exited: its agent is not running" || got.StoppedAt.IsZero() {
		t.Errorf("dead sandbox: state %s, error %q, stopped at %v", got.State, got.Error, got.StoppedAt)
	}
	if !e.d.Called("stop", dead.ID) {
		t.Error("the driver was not asked to stop the dead sandbox (its cgroups, mounts)")
	}
	if got := e.get(t, gone.ID); got.State != sandbox.Running {
		t.Errorf("missing from one list: %s, want still running", got.State)
	}
	e.m.checkLiveness(t.Context(), absent)
	if got := e.get(t, gone.ID); got.State != sandbox.Stopped || got.Error != "exited: the runtime no longer has it" {
		t.Errorf("missing from two lists: state %s, error %q", got.State, got.Error)
	}
	if got := e.get(t, alive.ID); got.State != sandbox.Running {
		t.Errorf("running sandbox: %s", got.State)
	}
	if len(absent) != 0 {
		t.Errorf("misses kept for sandboxes no longer running: %v", absent)
	}
	var stopped int
	obs.mu.Lock()
	for _, ev := range obs.events {
		if ev.Type == EventStopped {
			stopped++
			if ev.Reason != "exited" {
				t.Errorf("stop event of %s: reason %q, want exited", ev.Sandbox.ID, ev.Reason)
			}
		}
	}
	obs.mu.Unlock()
	if stopped != 2 {
		t.Errorf("%d stop events, want 2", stopped)
	}
}

// TestLivenessLoop checks the production path: the loop's own ticker stops
// a dead sandbox with no test calling checkLiveness.
func TestLivenessLoop(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.LivenessInterval = 20 * time.Millisecond })
	sb := e.create(t)
	e.d.SetSandbox(sb.ID, false)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if e.get(t, sb.ID).State == sandbox.Stopped {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("dead sandbox still %s", e.get(t, sb.ID).State)
}

// costlyList is a driver whose List the node must not poll (as gVisor's,
// which runs runsc per sandbox): only the runtime.Driver methods, not
// fake.Driver's ListIsCheap.
type costlyList struct{ runtime.Driver }

// TestLivenessPingsFirst: for such a driver the node pings the agents and
// lists only when one does not answer, so a sandbox whose agent answers
// stays running whatever the list would say, and one whose agent is gone
// is stopped once its driver's list agrees.
func TestLivenessPingsFirst(t *testing.T) {
	e := &env{d: fake.NewDriver(t, fake.DriverConfig{}), clock: fake.NewClock(epoch), dir: t.TempDir()}
	e.m = e.manager(t, func(c *Config) { c.Driver = costlyList{e.d} })
	answering := e.create(t)
	other := fake.StartAgent(t, fake.AgentConfig{})
	e.d.SetAgentSocket(other.Socket())
	silent := e.create(t)
	e.d.SetAgentSocket(e.d.FakeAgent().Socket())
	other.Refuse("GET /v1/ping")
	// The list has both as not running: only the silent one is asked about.
	e.d.SetSandbox(answering.ID, false)
	e.d.SetSandbox(silent.ID, false)

	e.m.checkLiveness(t.Context(), map[string]bool{})
	if got := e.get(t, answering.ID); got.State != sandbox.Running {
		t.Errorf("a sandbox whose agent answers: %s (%q), want running", got.State, got.Error)
	}
	if got := e.get(t, silent.ID); got.State != sandbox.Stopped || got.Error != "exited: its agent is not running" {
		t.Errorf("a sandbox whose agent is gone: state %s, error %q", got.State, got.Error)
	}
}
