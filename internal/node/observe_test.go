package node

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// fakeObserver records what the node reports.
type fakeObserver struct {
	mu     sync.Mutex // guards the fields below
	events []Event
	phases []string
	took   map[string]time.Duration // by phase, the last report
}

func (o *fakeObserver) SandboxEvent(_ context.Context, e Event) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.events = append(o.events, e)
}

func (o *fakeObserver) CreatePhase(phase string, d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.phases = append(o.phases, phase)
	if o.took == nil {
		o.took = map[string]time.Duration{}
	}
	o.took[phase] = d
}

// tookOf is how long phase took in the last create reported.
func (o *fakeObserver) tookOf(phase string) time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.took[phase]
}

func (o *fakeObserver) types() []EventType {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []EventType
	for _, e := range o.events {
		out = append(out, e.Type)
	}
	return out
}

// TestObserver: each fact of a sandbox's life is reported once, in order,
// a stop with its reason and usage, and a create with its phases.
func TestObserver(t *testing.T) {
	for _, tc := range []struct {
		name   string
		act    func(t *testing.T, e *env, id string)
		want   []EventType
		reason string
	}{
		{"stop then delete", func(t *testing.T, e *env, id string) {
			if _, err := e.m.Stop(t.Context(), id); err != nil {
				t.Fatal(err)
			}
			if err := e.m.Delete(t.Context(), id); err != nil {
				t.Fatal(err)
			}
		}, []EventType{EventCreated, EventStarted, EventStopped, EventDeleted}, "requested"},
		{"delete running", func(t *testing.T, e *env, id string) {
			if err := e.m.Delete(t.Context(), id); err != nil {
				t.Fatal(err)
			}
		}, []EventType{EventCreated, EventStarted, EventStopped, EventDeleted}, "deleted"},
		{"labels", func(t *testing.T, e *env, id string) {
			if _, err := e.m.SetLabels(t.Context(), id, map[string]string{"env": "prod"}); err != nil {
				t.Fatal(err)
			}
		}, []EventType{EventCreated, EventStarted, EventLabelsChanged}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obs := &fakeObserver{}
			e := newEnv(t, func(c *Config) { c.Observer = obs; c.History = &fakeHistory{finished: map[string][]agent.Command{}} })
			sb := e.create(t)
			e.clock.Advance(time.Minute)
			tc.act(t, e, sb.ID)
			if got := obs.types(); !slices.Equal(got, tc.want) {
				t.Fatalf("events = %v, want %v", got, tc.want)
			}
			for _, ev := range obs.events {
				if ev.Sandbox.ID != sb.ID {
					t.Errorf("%s names %s", ev.Type, ev.Sandbox.ID)
				}
				if ev.Type == EventStopped {
					if ev.Reason != tc.reason || ev.Usage == nil || ev.Usage.End.Sub(ev.Usage.Start) != time.Minute {
						t.Errorf("stopped: reason %q usage %+v, want %q and a minute's run", ev.Reason, ev.Usage, tc.reason)
					}
				}
			}
			if !slices.Contains(obs.phases, "network") || !slices.Contains(obs.phases, "total") {
				t.Errorf("phases = %v, want network and total", obs.phases)
			}
		})
	}
}

// TestLabels: labels are kept, filtered on, replaced, and checked.
func TestLabels(t *testing.T) {
	e := newEnv(t, nil)
	prod, err := e.m.Create(t.Context(), sandbox.CreateRequest{Labels: map[string]string{"env": "prod"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Create(t.Context(), sandbox.CreateRequest{Labels: map[string]string{"env": "dev"}}); err != nil {
		t.Fatal(err)
	}
	list := func(labels map[string]string) []string {
		t.Helper()
		sbs, _, err := e.m.List(t.Context(), sandbox.ListOptions{Labels: labels})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, sb := range sbs {
			ids = append(ids, sb.ID)
		}
		return ids
	}
	if got := list(map[string]string{"env": "prod"}); !slices.Equal(got, []string{prod.ID}) {
		t.Errorf("env=prod: %v", got)
	}
	if got := list(nil); len(got) != 2 {
		t.Errorf("no filter: %v", got)
	}
	if _, err := e.m.SetLabels(t.Context(), prod.ID, map[string]string{"env": "staging"}); err != nil {
		t.Fatal(err)
	}
	if got := list(map[string]string{"env": "prod"}); len(got) != 0 {
		t.Errorf("env=prod after the change: %v", got)
	}
	_, err = e.m.SetLabels(t.Context(), prod.ID, map[string]string{"bad key": "x"})
	wantErr(t, err, sandbox.ErrInvalid, "invalid_labels")
	_, err = e.m.Create(t.Context(), sandbox.CreateRequest{Labels: map[string]string{"-x": "y"}})
	wantErr(t, err, sandbox.ErrInvalid, "invalid_labels")
}
