package auth_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/store"
)

// listBarrier holds every ListTokens call until n callers have listed, so
// n Bootstraps all see the store before any of them writes: the race of
// replicas that start together on an empty store, made certain.
type listBarrier struct {
	store.Store
	wg *sync.WaitGroup
}

func (l listBarrier) ListTokens(ctx context.Context, teamID string) ([]store.Token, error) {
	ts, err := l.Store.ListTokens(ctx, teamID)
	l.wg.Done()
	l.wg.Wait()
	return ts, err
}

// TestBootstrapRace: of replicas bootstrapping one empty store at once,
// exactly one makes the admin token, and the store holds one.
func TestBootstrapRace(t *testing.T) {
	const replicas = 4
	clk := fake.NewClock(time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC))
	st := newStore(t)
	var barrier sync.WaitGroup
	barrier.Add(replicas)
	var (
		mu      sync.Mutex
		created int
		wg      sync.WaitGroup
	)
	for range replicas {
		a := newAuth(t, listBarrier{Store: st, wg: &barrier}, clk, nil)
		wg.Go(func() {
			secret, ok, err := a.Bootstrap(t.Context())
			if err != nil {
				t.Errorf("Bootstrap: %v", err)
				return
			}
			if ok != (secret != "") {
				t.Errorf("Bootstrap = %q, created %v", secret, ok)
			}
			if ok {
				mu.Lock()
				created++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if created != 1 {
		t.Errorf("%d replicas made an admin token, want 1", created)
	}
	ts, err := st.ListTokens(t.Context(), auth.BootstrapTeamID)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 1 {
		t.Errorf("the store holds %d admin tokens, want 1", len(ts))
	}
}
