package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

var leaseCases = []struct {
	name string
	fn   func(t *testing.T, s store.Store)
}{
	{"Leases", testLeases},
	{"LeaseRace", testLeaseRace},
}

func testLeases(t *testing.T, s store.Store) {
	const ttl = 15 * time.Second
	t0 := at(0)
	_, err := s.GetLease(ctx(t), "gc")
	wantErr(t, err, sandbox.ErrNotFound, "lease_not_found")

	// The first acquire makes the lease, with token 1.
	a, err := s.AcquireLease(ctx(t), "gc", "replica-a", ttl, t0)
	must(t, err)
	want := store.Lease{Name: "gc", Holder: "replica-a", Token: 1, ExpiresAt: store.Time(t0.Add(ttl)), Version: 1}
	equal(t, "AcquireLease", a, want)
	got, err := s.GetLease(ctx(t), "gc")
	must(t, err)
	equal(t, "GetLease", got, want)
	if !got.Live(t0) || got.Live(t0.Add(ttl)) {
		t.Fatalf("Live: %+v at %v and at expiry", got, t0)
	}

	// Live and another's: refused.
	_, err = s.AcquireLease(ctx(t), "gc", "replica-b", ttl, t0.Add(ttl-time.Second))
	wantErr(t, err, sandbox.ErrConflict, "lease_held")
	// Other names are other leases.
	o, err := s.AcquireLease(ctx(t), "webhooks", "replica-b", ttl, t0)
	must(t, err)
	equal(t, "another lease's holder", o.Holder, "replica-b")

	// A renewal moves the expiry, keeps the token.
	r, err := s.RenewLease(ctx(t), a, ttl, t0.Add(5*time.Second))
	must(t, err)
	want.ExpiresAt, want.Version = store.Time(t0.Add(5*time.Second+ttl)), 2
	equal(t, "RenewLease", r, want)
	// Renewing with the record as first acquired still works (the token names the holding).
	r, err = s.RenewLease(ctx(t), a, ttl, t0.Add(6*time.Second))
	must(t, err)
	equal(t, "token after renewals", r.Token, int64(1))

	// Expired: another replica takes it, with a larger token; the old
	// holder's renewal and release then fail or do nothing.
	late := r.ExpiresAt
	b, err := s.AcquireLease(ctx(t), "gc", "replica-b", ttl, late)
	must(t, err)
	if b.Holder != "replica-b" || b.Token != 2 || !b.ExpiresAt.Equal(store.Time(late.Add(ttl))) {
		t.Fatalf("takeover = %+v", b)
	}
	_, err = s.RenewLease(ctx(t), r, ttl, late)
	wantErr(t, err, sandbox.ErrConflict, "lease_lost")
	must(t, s.ReleaseLease(ctx(t), r))
	got, err = s.GetLease(ctx(t), "gc")
	must(t, err)
	equal(t, "after a lost holder's release", got, b)

	// The holder acquiring again (a restart under the same name) gets a new token.
	b2, err := s.AcquireLease(ctx(t), "gc", "replica-b", ttl, late.Add(time.Second))
	must(t, err)
	equal(t, "token of a re-acquire", b2.Token, int64(3))
	_, err = s.RenewLease(ctx(t), b, ttl, late.Add(time.Second))
	wantErr(t, err, sandbox.ErrConflict, "lease_lost")

	// Released: free at once for anyone, the token still growing.
	must(t, s.ReleaseLease(ctx(t), b2))
	got, err = s.GetLease(ctx(t), "gc")
	must(t, err)
	if got.Holder != "" || got.Live(late) || got.Token != 3 {
		t.Fatalf("released lease = %+v", got)
	}
	_, err = s.RenewLease(ctx(t), b2, ttl, late.Add(time.Second))
	wantErr(t, err, sandbox.ErrConflict, "lease_lost")
	c, err := s.AcquireLease(ctx(t), "gc", "replica-a", ttl, late.Add(time.Second))
	must(t, err)
	equal(t, "token after release", c.Token, int64(4))

	// Unknown leases: renewing is lost, releasing is nothing.
	_, err = s.RenewLease(ctx(t), store.Lease{Name: "nope", Holder: "replica-a", Token: 1}, ttl, t0)
	wantErr(t, err, sandbox.ErrConflict, "lease_lost")
	must(t, s.ReleaseLease(ctx(t), store.Lease{Name: "nope", Holder: "replica-a", Token: 1}))

	for _, tc := range []struct {
		name, lease, holder string
		ttl                 time.Duration
	}{
		{"no name", "", "replica-a", ttl},
		{"no holder", "gc", "", ttl},
		{"no ttl", "gc", "replica-a", 0},
	} {
		_, err := s.AcquireLease(ctx(t), tc.lease, tc.holder, tc.ttl, t0)
		if err == nil {
			t.Fatalf("%s: acquired", tc.name)
		}
		wantErr(t, err, sandbox.ErrInvalid, "invalid_record")
	}
}

// testLeaseRace: replicas asking for one free lease at once; exactly one
// gets it, whatever the store's atomicity (FerretDB's updates are a read
// and a write).
func testLeaseRace(t *testing.T, s store.Store) {
	const n = 8
	for round, now := range []time.Time{at(0), at(time.Minute)} { // a new lease, then an expired one
		var wg sync.WaitGroup
		won := make(chan store.Lease, n)
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() {
				l, err := s.AcquireLease(ctx(t), "race", fmt.Sprintf("replica-%d", i), 10*time.Second, now)
				if err != nil {
					errs <- err
					return
				}
				won <- l
			})
		}
		wg.Wait()
		close(won)
		close(errs)
		if len(won) != 1 {
			t.Fatalf("round %d: %d acquires won, want 1", round, len(won))
		}
		for err := range errs {
			wantErr(t, err, sandbox.ErrConflict, "lease_held")
		}
		w := <-won
		got, err := s.GetLease(ctx(t), "race")
		must(t, err)
		equal(t, "the stored lease", got, w)
	}
}
