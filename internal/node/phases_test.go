package node

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// The driver's step timings reach the Observer through the create's
// context, beside the node's own.
func TestCreatePhases(t *testing.T) {
	rec := &fakeObserver{}
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
	if got := rec.tookOf("start"); got != 7*time.Millisecond {
		t.Errorf("start = %v, want the driver's 7ms", got)
	}
	if got := rec.tookOf("total"); got < 2*time.Millisecond {
		t.Errorf("total = %v, want at least the driver's 2ms", got)
	}
}

// A create that fails reports no phases.
func TestCreatePhasesNotOnFailure(t *testing.T) {
	rec := &fakeObserver{}
	e := newEnv(t, func(c *Config) { c.Observer = rec })
	e.d.SetCreateErr(errors.New("boom"))
	if _, err := e.m.Create(t.Context(), sandbox.CreateRequest{}); err == nil {
		t.Fatal("create succeeded")
	}
	if len(rec.phases) != 0 {
		t.Errorf("phases reported for a failed create: %v", rec.phases)
	}
}
