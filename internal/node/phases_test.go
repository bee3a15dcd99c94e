package node

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// The driver's step timings reach Config.OnCreate through the create's
// context, beside the node's own.
func TestCreatePhases(t *testing.T) {
	got := make(chan sandbox.Phases, 1)
	e := newEnv(t, func(c *Config) { c.OnCreate = func(p sandbox.Phases) { got <- p } })
	e.d.SetCreateHook(func(ctx context.Context, id string) error {
		p := sandbox.PhasesFrom(ctx)
		p.Start = 7 * time.Millisecond
		time.Sleep(2 * time.Millisecond) // so that Total is measurably above zero
		return nil
	})
	if _, err := e.m.Create(t.Context(), sandbox.CreateRequest{}); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		if p.Start != 7*time.Millisecond {
			t.Errorf("Start = %v, want the driver's 7ms", p.Start)
		}
		if p.Total < 2*time.Millisecond {
			t.Errorf("Total = %v, want at least the driver's 2ms", p.Total)
		}
	default:
		t.Fatal("OnCreate not called")
	}
}

// A create that fails reports no phases.
func TestCreatePhasesNotOnFailure(t *testing.T) {
	called := false
	e := newEnv(t, func(c *Config) { c.OnCreate = func(sandbox.Phases) { called = true } })
	e.d.SetCreateErr(errors.New("boom"))
	if _, err := e.m.Create(t.Context(), sandbox.CreateRequest{}); err == nil {
		t.Fatal("create succeeded")
	}
	if called {
		t.Error("OnCreate called for a failed create")
	}
}
