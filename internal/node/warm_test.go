package node

import (
	"errors"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// TestPooledHiddenAndClaimed walks one pool sandbox from its creation to a
// claim: invisible to every API path while idle, its owner's after, with
// the owner's env, ports-free record and timeout, and never the pool's again.
func TestPooledHiddenAndClaimed(t *testing.T) {
	e := newEnv(t, nil)
	ctx := t.Context()
	idle, err := e.m.CreatePooled(ctx, "p1", sandbox.CreateRequest{Resources: sandbox.Resources{MemoryMB: 512}})
	if err != nil {
		t.Fatal(err)
	}
	if idle.Pool != "p1" || idle.TeamID != "" || !idle.ExpiresAt.IsZero() || idle.State != sandbox.Running {
		t.Fatalf("idle sandbox = %+v", idle)
	}
	// Warmed once its agent answered, before it is anyone's.
	if n := e.d.FakeAgent().Warmed(); n != 1 {
		t.Errorf("agent warmed %d times, want 1", n)
	}
	// No API path reaches an idle pool sandbox.
	if _, err := e.m.Get(ctx, idle.ID); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("Get idle = %v, want not found", err)
	}
	if _, err := e.m.Exec(ctx, idle.ID, sandbox.ExecRequest{Cmd: "true"}); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("Exec idle = %v, want not found", err)
	}
	if err := e.m.Delete(ctx, idle.ID); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("Delete idle = %v, want not found", err)
	}
	if sbs, _, _ := e.m.List(ctx, sandbox.ListOptions{}); len(sbs) != 0 {
		t.Errorf("List shows %d sandboxes, want none", len(sbs))
	}
	if p := e.m.Pooled(); len(p) != 1 || p[0].ID != idle.ID {
		t.Errorf("Pooled = %+v", p)
	}
	if active, _ := e.m.Load(); active != 1 {
		t.Errorf("active = %d, want 1 (an idle sandbox takes a slot of the host)", active)
	}

	// A request of another key is not served by it.
	_, err = e.m.Claim(ctx, idle.ID, sandbox.CreateRequest{Resources: sandbox.Resources{MemoryMB: 1024}, TeamID: "t1"})
	if !errors.Is(err, ErrNotClaimed) {
		t.Fatalf("Claim of another key = %v, want ErrNotClaimed", err)
	}

	e.clock.Advance(time.Hour)
	req := sandbox.CreateRequest{Resources: sandbox.Resources{MemoryMB: 512}, TeamID: "t1", Env: map[string]string{"SECRET_OF": "t1"},
		Timeout: 10 * time.Minute}
	key, err := e.m.WarmKey(req)
	if err != nil || key != KeyOf(idle) {
		t.Fatalf("WarmKey = %v, %v; the idle sandbox's is %v", key, err, KeyOf(idle))
	}
	sb, err := e.m.Claim(ctx, idle.ID, req)
	if err != nil {
		t.Fatal(err)
	}
	now := e.clock.Now()
	switch {
	case sb.ID != idle.ID || sb.Pool != "" || !sb.Warm || sb.TeamID != "t1":
		t.Errorf("claimed = %+v", sb)
	case sb.Env["SECRET_OF"] != "t1":
		t.Errorf("env = %v", sb.Env)
	case !sb.CreatedAt.Equal(now) || !sb.ExpiresAt.Equal(now.Add(10*time.Minute)):
		t.Errorf("created %s expires %s, want from the claim at %s", sb.CreatedAt, sb.ExpiresAt, now)
	}
	if got := e.get(t, sb.ID); got.TeamID != "t1" {
		t.Errorf("Get after claim = %+v", got)
	}
	if sbs, _, _ := e.m.List(ctx, sandbox.ListOptions{TeamID: "t1"}); len(sbs) != 1 {
		t.Errorf("team list = %d sandboxes, want 1", len(sbs))
	}
	// Claimed once, never again, and never the pool's to discard.
	if _, err := e.m.Claim(ctx, idle.ID, req); !errors.Is(err, ErrNotClaimed) {
		t.Errorf("second Claim = %v, want ErrNotClaimed", err)
	}
	if err := e.m.DiscardPooled(ctx, idle.ID); sandbox.CodeOf(err) != "pool_sandbox_claimed" {
		t.Errorf("DiscardPooled of a claimed sandbox = %v", err)
	}
	if len(e.m.Pooled()) != 0 {
		t.Errorf("Pooled after claim = %+v", e.m.Pooled())
	}

	// The claim is on disk: a restarted node sees the owner's sandbox.
	m2 := e.manager(t, nil)
	if got, err := m2.Get(ctx, sb.ID); err != nil || got.TeamID != "t1" || got.Pool != "" || !got.Warm {
		t.Errorf("after restart: %+v, %v", got, err)
	}
}

func TestCreatePooledRefusesOwnersAndCleansUp(t *testing.T) {
	e := newEnv(t, nil)
	for name, req := range map[string]sandbox.CreateRequest{
		"team":    {TeamID: "t1"},
		"env":     {Env: map[string]string{"A": "b"}},
		"project": {ProjectID: "p"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := e.m.CreatePooled(t.Context(), "p1", req); !errors.Is(err, sandbox.ErrInvalid) {
				t.Errorf("CreatePooled = %v, want invalid", err)
			}
		})
	}
	e.d.SetCreateErr(errors.New("boom"))
	if _, err := e.m.CreatePooled(t.Context(), "p1", sandbox.CreateRequest{}); err == nil {
		t.Fatal("CreatePooled with a failing driver succeeded")
	}
	if p := e.m.Pooled(); len(p) != 0 {
		t.Errorf("a failed pool create left records: %+v", p)
	}
}

func TestDiscardPooled(t *testing.T) {
	e := newEnv(t, nil)
	idle, err := e.m.CreatePooled(t.Context(), "p1", sandbox.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.m.DiscardPooled(t.Context(), idle.ID); err != nil {
		t.Fatal(err)
	}
	if len(e.m.Pooled()) != 0 {
		t.Error("discarded sandbox still pooled")
	}
	if active, _ := e.m.Load(); active != 0 {
		t.Errorf("active = %d after discard", active)
	}
}

// TestClaimDeadAgent: an idle sandbox whose agent stopped answering is not
// handed out.
func TestClaimDeadAgent(t *testing.T) {
	e := newEnv(t, nil)
	idle, err := e.m.CreatePooled(t.Context(), "p1", sandbox.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	e.d.FakeAgent().SetPing("not json")
	if _, err := e.m.Claim(t.Context(), idle.ID, sandbox.CreateRequest{TeamID: "t1"}); !errors.Is(err, ErrNotClaimed) {
		t.Fatalf("Claim with a dead agent = %v, want ErrNotClaimed", err)
	}
	if p := e.m.Pooled(); len(p) != 1 || p[0].TeamID != "" {
		t.Errorf("the sandbox changed hands: %+v", p)
	}
}

// TestClaimOnce: claimers racing for one idle sandbox; exactly one gets it.
func TestClaimOnce(t *testing.T) {
	e := newEnv(t, nil)
	idle, err := e.m.CreatePooled(t.Context(), "p1", sandbox.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	const claimers = 8
	errs := make(chan error, claimers)
	teams := make(chan string, claimers)
	for i := range claimers {
		go func() {
			team := string(rune('a' + i))
			sb, err := e.m.Claim(t.Context(), idle.ID, sandbox.CreateRequest{TeamID: team})
			if err == nil {
				teams <- sb.TeamID
			}
			errs <- err
		}()
	}
	won := 0
	for range claimers {
		err := <-errs
		switch {
		case err == nil:
			won++
		case !errors.Is(err, ErrNotClaimed):
			t.Errorf("a losing claim: %v, want ErrNotClaimed", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d claims succeeded, want 1", won)
	}
	if got := e.get(t, idle.ID); got.TeamID != <-teams {
		t.Errorf("the record's owner %q is not the winner's", got.TeamID)
	}
}
