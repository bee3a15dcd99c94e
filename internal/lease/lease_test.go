package lease_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/lease"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/sqlite"
)

const (
	ttl   = 15 * time.Second
	renew = 5 * time.Second
)

// flaky is a store whose calls fail while down is set: a replica cut off
// from the database.
type flaky struct {
	lease.Store
	down atomic.Bool
}

var errDown = errors.New("store unreachable")

func (f *flaky) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration, now time.Time) (store.Lease, error) {
	if f.down.Load() {
		return store.Lease{}, errDown
	}
	return f.Store.AcquireLease(ctx, name, holder, ttl, now)
}

func (f *flaky) RenewLease(ctx context.Context, l store.Lease, ttl time.Duration, now time.Time) (store.Lease, error) {
	if f.down.Load() {
		return store.Lease{}, errDown
	}
	return f.Store.RenewLease(ctx, l, ttl, now)
}

func openStore(t *testing.T) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(filepath.Join(t.TempDir(), "paddock.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func keeper(t *testing.T, st lease.Store, clock *fake.Clock, holder string) *lease.Keeper {
	t.Helper()
	k, err := lease.New(lease.Config{Store: st, Name: "background", Holder: holder, TTL: ttl, Renew: renew,
		Now: clock.Now, After: clock.After})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

// waitHeld waits (in real time: the keeper's goroutine runs on its own)
// until k's hold is want.
func waitHeld(t *testing.T, k *lease.Keeper, want bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		ch := k.Changed()
		if _, ok := k.Held(); ok == want {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("lease held = %v, want %v", !want, want)
		}
	}
}

// step waits until every keeper's goroutine sleeps on the clock, then
// moves it on by d.
func step(t *testing.T, clock *fake.Clock, sleepers int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for clock.Timers() < sleepers {
		if time.Now().After(deadline) {
			t.Fatalf("%d keepers asleep, want %d", clock.Timers(), sleepers)
		}
		time.Sleep(time.Millisecond)
	}
	clock.Advance(d)
}

func TestOneHolder(t *testing.T) {
	st := openStore(t)
	clock := fake.NewClock(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC))
	a, b := keeper(t, st, clock, "replica-a"), keeper(t, st, clock, "replica-b")
	if err := a.Acquire(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctxA, _ := a.Held()
	a.Start()
	b.Start()
	// Renewals keep a's hold across many TTLs; b never gets it.
	for range 10 {
		step(t, clock, 2, renew)
	}
	step(t, clock, 2, 0)
	if _, ok := b.Held(); ok {
		t.Fatal("both replicas hold the lease")
	}
	if l, _ := a.Lease(); l.Token != 1 {
		t.Fatalf("a's token = %d after renewals, want 1", l.Token)
	}
	if ctxA.Err() != nil {
		t.Fatal("the holder's context ended while it renewed")
	}
	// A clean stop releases the lease: b takes it at its next try, not a TTL later.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if ctxA.Err() == nil {
		t.Fatal("the holder's context outlived Close")
	}
	step(t, clock, 1, renew)
	waitHeld(t, b, true)
	if l, _ := b.Lease(); l.Token != 2 {
		t.Fatalf("b's token = %d, want 2", l.Token)
	}
}

// TestCutOff: a holder that cannot reach the store stops its work TTL-Renew
// after its last renewal; the other replica takes over once the lease
// expires, a Renew later; the first, back, finds it lost.
func TestCutOff(t *testing.T) {
	st := openStore(t)
	clock := fake.NewClock(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC))
	fa := &flaky{Store: st}
	a, b := keeper(t, fa, clock, "replica-a"), keeper(t, st, clock, "replica-b")
	if err := a.Acquire(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctxA, _ := a.Held()
	a.Start()
	step(t, clock, 1, 0) // a's first renewal, at t0
	b.Start()
	fa.down.Store(true)
	start := clock.Now()
	for clock.Now().Sub(start) < ttl-renew {
		step(t, clock, 2, time.Second)
		if clock.Now().Sub(start) < ttl-renew {
			if ctxA.Err() != nil {
				t.Fatalf("a stopped %s after its last renewal, before TTL-Renew", clock.Now().Sub(start))
			}
		}
	}
	waitHeld(t, a, false)
	if ctxA.Err() == nil {
		t.Fatal("a's work goes on after it gave the lease up")
	}
	if _, ok := b.Held(); ok {
		t.Fatal("b took the lease before it expired")
	}
	for clock.Now().Sub(start) < ttl {
		step(t, clock, 2, time.Second)
	}
	waitHeld(t, b, true)
	fa.down.Store(false)
	step(t, clock, 2, renew)
	step(t, clock, 2, 0)
	if _, ok := a.Held(); ok {
		t.Fatal("a holds the lease again while b does")
	}
}

// TestTakenOver: a holder whose lease was taken (it stalled past the TTL)
// learns so at its next renewal.
func TestTakenOver(t *testing.T) {
	st := openStore(t)
	clock := fake.NewClock(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC))
	a := keeper(t, st, clock, "replica-a")
	if err := a.Acquire(t.Context()); err != nil {
		t.Fatal(err)
	}
	a.Start()
	step(t, clock, 1, 0)
	// Another replica, whose clock runs a TTL ahead, takes it.
	if _, err := st.AcquireLease(t.Context(), "background", "replica-b", ttl, clock.Now().Add(ttl)); err != nil {
		t.Fatal(err)
	}
	step(t, clock, 1, renew)
	waitHeld(t, a, false)
}

func TestConfig(t *testing.T) {
	st := openStore(t)
	for _, tc := range []struct {
		name string
		cfg  lease.Config
		ok   bool
	}{
		{"defaults", lease.Config{Store: st, Name: "x", Holder: "h"}, true},
		{"short ttl, its own renew", lease.Config{Store: st, Name: "x", Holder: "h", TTL: 3 * time.Second}, true},
		{"no store", lease.Config{Name: "x", Holder: "h"}, false},
		{"no holder", lease.Config{Store: st, Name: "x"}, false},
		{"renew too slow", lease.Config{Store: st, Name: "x", Holder: "h", TTL: 10 * time.Second, Renew: 5 * time.Second}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := lease.New(tc.cfg)
			if (err == nil) != tc.ok {
				t.Fatalf("New: %v", err)
			}
		})
	}
}

// TestKeepOnClose: a liveness lease stays until it expires after Close.
func TestKeepOnClose(t *testing.T) {
	st := openStore(t)
	clock := fake.NewClock(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC))
	k, err := lease.New(lease.Config{Store: st, Name: lease.ReplicaLease("replica-a"), Holder: "replica-a",
		Now: clock.Now, After: clock.After, KeepOnClose: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Acquire(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	l, err := st.GetLease(t.Context(), lease.ReplicaLease("replica-a"))
	if err != nil {
		t.Fatal(err)
	}
	if !l.Live(clock.Now()) || l.Live(clock.Now().Add(lease.DefaultTTL)) {
		t.Fatalf("lease after Close = %+v, want it live until its TTL", l)
	}
	// The same replica, restarted, takes it back at once.
	k2, err := lease.New(lease.Config{Store: st, Name: lease.ReplicaLease("replica-a"), Holder: "replica-a", Now: clock.Now, After: clock.After})
	if err != nil {
		t.Fatal(err)
	}
	defer k2.Close()
	if err := k2.Acquire(t.Context()); err != nil {
		t.Fatalf("restart under the same name: %v", err)
	}
}
