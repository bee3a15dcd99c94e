package node

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// fakeHistory records what the node hands to History.
type fakeHistory struct {
	mu       sync.Mutex // guards the fields below
	started  []startedCommand
	finished map[string][]agent.Command
	used     []Usage
	calls    []string // "started <command>", "finished <sandbox>", in order

	// gate, if set, holds every Started until it is closed.
	gate chan struct{}
}

// startedCommand is one call of History.Started.
type startedCommand struct {
	sb  sandbox.Sandbox
	cmd agent.Command
}

func (h *fakeHistory) Started(_ context.Context, sb sandbox.Sandbox, cmd agent.Command) error {
	if h.gate != nil {
		<-h.gate
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.started = append(h.started, startedCommand{sb: sb, cmd: cmd})
	h.calls = append(h.calls, "started "+cmd.ID)
	return nil
}

func (h *fakeHistory) Finished(_ context.Context, sb sandbox.Sandbox, cmds []agent.Command) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.finished[sb.ID] = cmds
	h.calls = append(h.calls, "finished "+sb.ID)
	return nil
}

func (h *fakeHistory) Used(_ context.Context, u Usage) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.used = append(h.used, u)
	return nil
}

// newHistoryEnv is a manager whose sandboxes' agent lists cmds and whose
// cgroups report CPU time, with a history kept for the test.
func newHistoryEnv(t *testing.T, cmds []agent.Command) (*env, *fakeHistory) {
	t.Helper()
	a := fake.StartAgent(t, fake.AgentConfig{})
	for _, c := range cmds {
		a.AddCommand(c)
	}
	h := &fakeHistory{finished: map[string][]agent.Command{}}
	e := &env{d: fake.NewDriver(t, fake.DriverConfig{Agent: a}), clock: fake.NewClock(epoch), dir: t.TempDir()}
	e.d.SetStats(runtime.Stats{PIDs: 3, MemoryBytes: 1 << 20, CPUUsage: 1500 * time.Millisecond})
	e.m = e.manager(t, func(c *Config) { c.History = h })
	return e, h
}

func TestHistoryOnEveryStopPath(t *testing.T) {
	exit0 := 0
	cmds := []agent.Command{
		{ID: "c1", Cmd: "true", Status: agent.StatusExited, ExitCode: &exit0},
		{ID: "c2", Cmd: "sleep", Status: agent.StatusRunning},
	}
	tests := []struct {
		name string
		stop func(t *testing.T, e *env, id string)
	}{
		{"stop", func(t *testing.T, e *env, id string) {
			if _, err := e.m.Stop(t.Context(), id); err != nil {
				t.Fatal(err)
			}
		}},
		{"timeout", func(t *testing.T, e *env, id string) {
			e.m.checkTimeouts(t.Context())
			if got := e.get(t, id); got.State != sandbox.Stopped {
				t.Fatalf("after the deadline the sandbox is %s", got.State)
			}
		}},
		{"delete", func(t *testing.T, e *env, id string) {
			if err := e.m.Delete(t.Context(), id); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, h := newHistoryEnv(t, cmds)
			sb, err := e.m.Create(t.Context(), sandbox.CreateRequest{Resources: sandbox.Resources{MemoryMB: 512}, TeamID: "team-a", ProjectID: "prj-1", Timeout: 30 * time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			if sb.ProjectID != "prj-1" {
				t.Errorf("ProjectID = %q, want prj-1", sb.ProjectID)
			}
			e.clock.Advance(30 * time.Minute)
			tt.stop(t, e, sb.ID)

			h.mu.Lock()
			if got := h.finished[sb.ID]; len(got) != 2 || got[0].ID != "c1" || got[1].Status != agent.StatusRunning {
				t.Errorf("Finished got %+v, want the agent's list", got)
			}
			if len(h.used) != 1 {
				h.mu.Unlock()
				t.Fatalf("Used called %d times, want 1", len(h.used))
			}
			u := h.used[0]
			if u.SandboxID != sb.ID || u.TeamID != "team-a" || u.ProjectID != "prj-1" || !u.Start.Equal(sb.StartedAt) {
				t.Errorf("usage = %+v", u)
			}
			if u.End.Sub(u.Start) != 30*time.Minute || u.MemoryMBHours != 256 || u.CPUSeconds != 1.5 {
				t.Errorf("usage figures = %s, %v MB·h, %v s CPU; want 30m, 256, 1.5", u.End.Sub(u.Start), u.MemoryMBHours, u.CPUSeconds)
			}

			h.mu.Unlock()

			// Stopping or deleting what is already stopped records nothing more.
			_, _ = e.m.Stop(t.Context(), sb.ID)
			_ = e.m.Delete(t.Context(), sb.ID)
			h.mu.Lock()
			defer h.mu.Unlock()
			if len(h.used) != 1 {
				t.Errorf("a second stop recorded usage again: %d records", len(h.used))
			}
		})
	}
}

func TestHistoryAgentGone(t *testing.T) {
	// The agent answers pings but not /v1/commands: the stop goes ahead,
	// usage is still recorded, command history is not.
	h := &fakeHistory{finished: map[string][]agent.Command{}}
	e := newEnv(t, func(c *Config) { c.History = h })
	e.d.FakeAgent().Refuse("GET /v1/commands")
	sb := e.create(t)
	e.clock.Advance(time.Hour)
	if _, err := e.m.Stop(t.Context(), sb.ID); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.finished[sb.ID]; ok {
		t.Error("Finished called though the agent's list could not be read")
	}
	if len(h.used) != 1 || h.used[0].MemoryMBHours != float64(sb.Resources.MemoryMB) {
		t.Errorf("usage = %+v, want one record of %d MB·h", h.used, sb.Resources.MemoryMB)
	}
}

// A sandbox lost while paddock was down (here: its agent hangs) gets its
// last usage from its counters, when the driver can still read them, up
// to the StoppedAt reconcile records.
func TestHistoryLostAtRestart(t *testing.T) {
	e, h := newHistoryEnv(t, nil)
	sb, err := e.m.Create(t.Context(), sandbox.CreateRequest{Resources: sandbox.Resources{MemoryMB: 256}, TeamID: "team-a"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.m.Close(); err != nil {
		t.Fatal(err)
	}
	e.d.SetDeadAgent(sb.ID)
	e.d.SetStats(runtime.Stats{CPUUsage: 4 * time.Second, MemoryPeak: 9 << 20})
	e.clock.Advance(time.Minute)
	e.m = e.manager(t, func(c *Config) { c.History = h })
	if got := e.get(t, sb.ID); got.State != sandbox.Failed {
		t.Fatalf("state %s, want failed", got.State)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.used) != 1 {
		t.Fatalf("Used called %d times, want 1", len(h.used))
	}
	if u := h.used[0]; !u.CountersOK || u.CPUSeconds != 4 || u.MemoryPeakBytes != 9<<20 || u.MemoryMB != 256 ||
		u.End.Sub(u.Start) != time.Minute {
		t.Fatalf("usage = %+v", u)
	}
}
