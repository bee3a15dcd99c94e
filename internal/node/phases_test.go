package node

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// phaseRecorder is an Observer keeping the create phases it hears.
type phaseRecorder struct {
	mu     sync.Mutex
	phases map[string]time.Duration
}

func (r *phaseRecorder) SandboxEvent(context.Context, Event) {}

func (r *phaseRecorder) CreatePhase(phase string, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.phases == nil {
		r.phases = map[string]time.Duration{}
	}
	r.phases[phase] = d
}

func (r *phaseRecorder) get() map[string]time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]time.Duration{}
	for k, v := range r.phases {
		out[k] = v
	}
	return out
}

// The driver's step timings reach the Observer through the create's
// context, beside the node's own.
func TestCreatePhases(t *testing.T) {
	rec := &phaseRecorder{}
	e := newEnv(t, func(c *Config) { c.Observer = rec })
	e.d.SetCreateHook(func(ctx context.Context, id string) error {
		p := sandbox.PhasesFrom(ctx)
		p.Start = 7 * time.Millisecond
		time.Sleep(2 * time.Millisecond) // so that Total is measurably above zero
		return nil
	})
	if _, err := e.m.Create(t.Context(), sandbox.CreateRequest{}); err != nil {
		t.Fatal(err)
	}
	got := rec.get()
	if got["start"] != 7*time.Millisecond {
		t.Errorf("start = %v, want the driver's 7ms (all: %v)", got["start"], got)
	}
	if got["total"] < 2*time.Millisecond {
		t.Errorf("total = %v, want at least the driver's 2ms", got["total"])
	}
}

// A create that fails reports no phases.
func TestCreatePhasesNotOnFailure(t *testing.T) {
	rec := &phaseRecorder{}
	e := newEnv(t, func(c *Config) { c.Observer = rec })
	e.d.SetCreateErr(errors.New("boom"))
	if _, err := e.m.Create(t.Context(), sandbox.CreateRequest{}); err == nil {
		t.Fatal("create succeeded")
	}
	if got := rec.get(); len(got) != 0 {
		t.Errorf("phases reported for a failed create: %v", got)
	}
}
