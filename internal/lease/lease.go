// Package lease keeps a named lease in the store (store.Leases) for work
// that must run once among the paddock replicas sharing it: a Keeper's
// goroutine acquires the lease when it is free, renews it while it holds
// it, and tells the work it gates when it lost it, by cancelling the
// context Held returned.
//
// Timing: a lease lives TTL past each renewal, and the Keeper renews it
// every Renew. A holder that cannot renew (the store is unreachable, the
// process stalls) gives the lease up TTL-Renew after its last good
// renewal, a full Renew before the store lets anyone else take it, so two
// replicas never both believe they hold it while their clocks agree to
// within Renew. A holder killed outright is replaced TTL after its last
// renewal at most (15 s by default).
package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// Defaults of Config.
const (
	DefaultTTL   = 15 * time.Second
	DefaultRenew = 5 * time.Second
)

// Store is the part of store.Store a Keeper uses.
type Store interface {
	AcquireLease(ctx context.Context, name, holder string, ttl time.Duration, now time.Time) (store.Lease, error)
	RenewLease(ctx context.Context, l store.Lease, ttl time.Duration, now time.Time) (store.Lease, error)
	ReleaseLease(ctx context.Context, l store.Lease) error
}

var _ Store = store.Store(nil)

// Config configures a Keeper.
type Config struct {
	Store Store  // required
	Name  string // the lease, required
	// Holder names this replica, unique among those sharing Store (the
	// daemon's node name): a restart under the same name takes its lease
	// back at once.
	Holder string
	// TTL is how long the lease outlives its last renewal (DefaultTTL if
	// 0); Renew how often it is renewed, or its acquisition tried
	// (DefaultRenew if 0). Renew must be below TTL/2: a holder gives the
	// lease up TTL-Renew after its last renewal, and must get a renewal
	// in before.
	TTL   time.Duration
	Renew time.Duration
	// Now and After are the clock (default time.Now and time.After);
	// tests pass a fake.Clock's.
	Now    func() time.Time
	After  func(time.Duration) <-chan time.Time
	Logger *slog.Logger // default: discarded
	// KeepOnClose leaves the lease to expire at Close instead of releasing
	// it: a replica's liveness lease, so that a restart within the TTL
	// takes it back unseen, and the others count the replica gone from
	// its expiry.
	KeepOnClose bool
}

// Validate reports a config a Keeper cannot run with.
func (c *Config) Validate() error {
	switch {
	case c.Store == nil:
		return errors.New("lease: Config.Store is required")
	case c.Name == "" || c.Holder == "":
		return errors.New("lease: Config.Name and Config.Holder are required")
	case c.TTL < 0 || c.Renew < 0:
		return errors.New("lease: TTL and Renew must not be negative")
	}
	ttl, renew := c.TTL, c.Renew
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if renew == 0 {
		renew = min(DefaultRenew, ttl/3)
	}
	if 2*renew >= ttl {
		return fmt.Errorf("lease: Renew (%s) must be below half the TTL (%s)", renew, ttl)
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.Renew == 0 {
		c.Renew = min(DefaultRenew, c.TTL/3)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.After == nil {
		c.After = time.After
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Keeper keeps one lease. Start runs its goroutine, Close stops it and
// releases the lease.
type Keeper struct {
	cfg Config
	log *slog.Logger

	mu sync.Mutex // guards the fields below
	// held is the lease as last written while this Keeper holds it; ok
	// false otherwise.
	held  store.Lease
	ok    bool
	until time.Time // when this holder gives the lease up without a renewal
	hctx  context.Context
	hstop context.CancelFunc
	// changed is closed (and replaced) whenever the lease is won or lost.
	changed chan struct{}

	cancel context.CancelFunc
	done   chan struct{}
}

// New returns a Keeper that holds nothing yet.
func New(cfg Config) (*Keeper, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	return &Keeper{cfg: cfg, log: cfg.Logger.With("component", "lease", "lease", cfg.Name, "holder", cfg.Holder),
		changed: make(chan struct{})}, nil
}

// Acquire tries once to acquire the lease, now: the store's conflict
// (ErrConflict "lease_held") if another holder's is live. The daemon
// takes its replica's own lease so before it starts, which refuses a
// second live replica under one name.
func (k *Keeper) Acquire(ctx context.Context) error {
	if _, ok := k.Held(); ok {
		return nil
	}
	return k.acquire(ctx)
}

// Start runs the goroutine that acquires and renews the lease, until
// Close.
func (k *Keeper) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	k.cancel, k.done = cancel, make(chan struct{})
	go k.run(ctx) // owned: Close cancels and waits
}

// Close stops the Keeper: the work it gates is told (Held's context
// ends), and a lease it holds is released so another replica takes it at
// once (if the store cannot be reached, it expires a TTL later). Safe to
// call twice, and without Start.
func (k *Keeper) Close() error {
	if k.cancel != nil {
		k.cancel()
		<-k.done
		k.cancel = nil
	}
	k.mu.Lock()
	l, ok := k.held, k.ok
	k.mu.Unlock()
	if !ok {
		return nil
	}
	k.lose("closing")
	if k.cfg.KeepOnClose {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), k.cfg.Renew)
	defer cancel()
	if err := k.cfg.Store.ReleaseLease(ctx, l); err != nil {
		// Not Close's failure: the lease expires a TTL later anyway.
		k.log.Warn("release lease", "err", err)
	}
	return nil
}

// Held returns a context that lives while this replica holds the lease,
// and true; or false if it does not hold it now. Work the lease gates
// runs under that context, so it stops when the lease is lost.
func (k *Keeper) Held() (context.Context, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.ok {
		return nil, false
	}
	return k.hctx, true
}

// Lease is the lease as this replica holds it (its Token fences its
// writes); ok false if it does not.
func (k *Keeper) Lease() (store.Lease, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.held, k.ok
}

// Changed is closed the next time the lease is won or lost.
func (k *Keeper) Changed() <-chan struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.changed
}

func (k *Keeper) run(ctx context.Context) {
	defer close(k.done)
	for {
		k.tick(ctx)
		wait := k.cfg.Renew
		k.mu.Lock()
		if k.ok {
			// Wake at the give-up time if that comes before the next renewal.
			wait = min(wait, k.until.Sub(k.cfg.Now()))
		}
		k.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-k.cfg.After(max(wait, 0)):
		}
	}
}

// tick renews the lease if held, else tries to acquire it; and gives it
// up once its give-up time has passed without a renewal.
func (k *Keeper) tick(ctx context.Context) {
	k.mu.Lock()
	l, ok, until := k.held, k.ok, k.until
	k.mu.Unlock()
	if !ok {
		if err := k.acquire(ctx); err != nil && !errors.Is(err, sandbox.ErrConflict) && ctx.Err() == nil {
			k.log.Warn("acquire lease", "err", err)
		}
		return
	}
	now := k.cfg.Now()
	if !now.Before(until) {
		k.lose("not renewed in time")
		return
	}
	// The call may not outlast the give-up time: a renewal that lands
	// after it would extend a lease the work has already stopped under.
	cctx, cancel := context.WithTimeout(ctx, until.Sub(now))
	nl, err := k.cfg.Store.RenewLease(cctx, l, k.cfg.TTL, now)
	cancel()
	switch {
	case err == nil:
		k.mu.Lock()
		if k.ok {
			k.held, k.until = nl, now.Add(k.cfg.TTL-k.cfg.Renew)
		}
		k.mu.Unlock()
	case errors.Is(err, sandbox.ErrConflict):
		k.lose("taken by another replica")
	case ctx.Err() != nil:
	default:
		k.log.Warn("renew lease", "err", err)
		if !k.cfg.Now().Before(until) {
			k.lose("not renewed in time")
		}
	}
}

func (k *Keeper) acquire(ctx context.Context) error {
	now := k.cfg.Now()
	cctx, cancel := context.WithTimeout(ctx, k.cfg.Renew)
	defer cancel()
	l, err := k.cfg.Store.AcquireLease(cctx, k.cfg.Name, k.cfg.Holder, k.cfg.TTL, now)
	if err != nil {
		return err
	}
	k.mu.Lock()
	k.held, k.ok, k.until = l, true, now.Add(k.cfg.TTL-k.cfg.Renew)
	k.hctx, k.hstop = context.WithCancel(context.Background())
	close(k.changed)
	k.changed = make(chan struct{})
	k.mu.Unlock()
	k.log.Info("lease acquired", "token", l.Token)
	return nil
}

// lose ends this replica's hold: the gated work's context is cancelled.
func (k *Keeper) lose(why string) {
	k.mu.Lock()
	if !k.ok {
		k.mu.Unlock()
		return
	}
	token := k.held.Token
	k.ok = false
	k.hstop()
	close(k.changed)
	k.changed = make(chan struct{})
	k.mu.Unlock()
	if why == "closing" {
		k.log.Info("lease given up", "why", why, "token", token)
		return
	}
	k.log.Warn("lease lost", "why", why, "token", token)
}

// ReplicaLease names the liveness lease of a replica: each replica holds
// its own while it runs, so the others can tell when it has gone (the
// activations it drove are then ended by whoever sweeps).
func ReplicaLease(replica string) string { return "replica/" + replica }

// ReplicaGone returns since when replica has been gone from the replicas
// sharing s: when its liveness lease (ReplicaLease) lapsed, the Unix
// epoch if it never held one or released it (gone as long as can be), or
// the zero time while it holds it. What it left is swept, or taken over,
// by the background lease's holder (internal/control, internal/daemon).
func ReplicaGone(ctx context.Context, s interface {
	GetLease(ctx context.Context, name string) (store.Lease, error)
}, replica string, now time.Time) (time.Time, error) {
	l, err := s.GetLease(ctx, ReplicaLease(replica))
	switch {
	case errors.Is(err, sandbox.ErrNotFound):
		return time.Unix(0, 0), nil
	case err != nil:
		return time.Time{}, err
	case l.Live(now):
		return time.Time{}, nil
	case l.ExpiresAt.IsZero():
		return time.Unix(0, 0), nil // released: shut down for good
	}
	return l.ExpiresAt, nil
}
