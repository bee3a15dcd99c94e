package control

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/admission"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// lastQueuedPosition is the place the activation's latest queued event
// gave, "" if none did.
func lastQueuedPosition(t *testing.T, st store.Store, id string) string {
	t.Helper()
	evs, err := st.ListEvents(context.Background(), store.EventFilter{ActivationID: id})
	if err != nil {
		t.Fatal(err)
	}
	pos := ""
	for _, e := range evs {
		if p, ok := e.Data["position"]; ok && e.Type == string(StateQueued) {
			pos = p
		}
	}
	return pos
}

// TestAdmissionQueue: over its team's limit an activation waits in state
// queued and its events say its place; past its deadline it fails with
// queue_timeout and a Retry-After; a full queue refuses it before it
// exists; a slot given back lets the first waiter go.
func TestAdmissionQueue(t *testing.T) {
	var adm *admission.Controller
	e := newEnv(t, func(c *Config) {
		a, err := admission.New(admission.Config{Store: c.Store, MaxQueue: 2, RetryAfter: 3 * time.Second, Logger: c.Logger})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		adm, c.Admission = a, a
	})
	ctx := context.Background()
	if _, err := adm.SetLimits(ctx, teamA.TeamID, &admission.TeamLimits{Limits: admission.Limits{Concurrent: 1}}); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, name := range []string{"one", "two", "three", "four", "five"} {
		ids = append(ids, e.create(t, appRequest(t, name)).ID)
	}
	first := activateReady(t, e.svc, ids[0])

	second, err := e.svc.Activate(ctx, teamA, ids[1])
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for lastQueuedPosition(t, e.store, second.ID) != "1" {
		if time.Now().After(deadline) {
			t.Fatal("no queued event with position 1")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// A short deadline: failed in the queue, with a Retry-After.
	third, err := e.svc.Activate(admission.WithDeadline(ctx, time.Now().Add(100*time.Millisecond)), teamA, ids[2])
	if err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(15 * time.Second)
	for {
		a, err := e.svc.GetActivation(ctx, teamA, third.ID)
		if err != nil {
			t.Fatal(err)
		}
		if stateOf(a).Terminal() {
			if stateOf(a) != StateFailed || !strings.HasPrefix(a.Error, "queue_timeout: ") {
				t.Fatalf("activation past its deadline: %s %q", a.State, a.Error)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("activation past its deadline is still %s", a.State)
		}
		time.Sleep(10 * time.Millisecond)
	}
	evs, err := e.store.ListEvents(ctx, store.EventFilter{ActivationID: third.ID})
	if err != nil {
		t.Fatal(err)
	}
	if last := evs[len(evs)-1]; last.Type != string(StateFailed) || last.Data["retryAfterMs"] != "3000" || last.Data["code"] != "queue_timeout" {
		t.Fatalf("failed event %+v", last)
	}

	// The queue holds two: the fourth waits, the fifth is refused and
	// leaves no activation behind.
	if _, err := e.svc.Activate(ctx, teamA, ids[3]); err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.Activate(ctx, teamA, ids[4])
	var ae *admission.Error
	if !errors.Is(err, sandbox.ErrExhausted) || sandbox.CodeOf(err) != "queue_full" || !errors.As(err, &ae) {
		t.Fatalf("activation on a full queue: %v", err)
	}
	if p, err := e.svc.GetProject(ctx, teamA, ids[4]); err != nil || p.Active != nil {
		t.Fatalf("the refused project is active: %+v, %v", p.Active, err)
	}

	// The first ends and its sandbox's slot comes back (as the daemon's
	// records tell admission): the second goes.
	e.deactivate(t, ids[0])
	adm.Released(teamA.TeamID, first.SandboxID)
	waitFor(t, e.svc, second.ID, StateReady)
	e.deactivate(t, ids[1])
	e.deactivate(t, ids[3])
}
