package daemon

import (
	"context"
	"fmt"
	"time"

	"github.com/paddock-dev/paddock/internal/lease"
)

// backgroundLease names the lease of the work that runs once among the
// replicas sharing a store. Its holder sweeps what gone replicas left
// (control; first taking over their sandboxes where its driver reaches
// them: takeover.go), delivers webhooks (events), rolls up usage (metering) and
// prunes command history. Everything else in the background acts on this
// host's own sandboxes, images and pools, which only this replica can
// reach, and stays per host: the sandbox manager's timeouts and
// reconcile, the warm pools' refill, the image and snapshot GC, usage
// sampling and budget stops, and the idle and lifetime checks of the
// activations this replica drives (control's own runs: each is driven by
// one replica, so each is torn down once).
const backgroundLease = "background"

// startLeases takes this replica's liveness lease (the others tell from
// it whether the activations it drives have a driver, and whether to
// forward to it: peers.go) before anything runs, enters the replica in the
// store's directory, then keeps the lease and competes for the background
// lease. Both stop
// after everything they gate (closers run last first).
func (d *Daemon) startLeases(ctx context.Context, _ *options) error {
	cfg := lease.Config{Store: d.store, Holder: d.cfg.NodeName, TTL: d.cfg.LeaseTTL, Renew: d.cfg.LeaseRenew, Logger: d.log}
	rcfg := cfg
	rcfg.Name, rcfg.KeepOnClose = lease.ReplicaLease(d.cfg.NodeName), true
	replica, err := lease.New(rcfg)
	if err != nil {
		return err
	}
	if err := replica.Acquire(ctx); err != nil {
		return fmt.Errorf("take this replica's lease %s: %w", rcfg.Name, err)
	}
	replica.Start()
	d.push("replica lease", replica.Close) // left to expire: a restart takes it back
	if err := d.advertise(ctx); err != nil {
		return err
	}
	bcfg := cfg
	bcfg.Name = backgroundLease
	bg, err := lease.New(bcfg)
	if err != nil {
		return err
	}
	// Try at once, so that a lone replica holds it from the start; another
	// replica's live lease is no error: this one waits its turn.
	_ = bg.Acquire(ctx)
	bg.Start()
	d.push("background lease", bg.Close) // released: another replica takes over at once
	d.background = bg
	return nil
}

// leader reports whether this replica holds the background lease.
func (d *Daemon) leader() bool {
	_, ok := d.background.Held()
	return ok
}

// leaderCtx is the background lease's Held, for work that must stop when
// the lease is lost.
func (d *Daemon) leaderCtx() (context.Context, bool) { return d.background.Held() }

// leaseTimes are the leases' TTL and renewal period in effect.
func (c Config) leaseTimes() (ttl, renew time.Duration) {
	ttl, renew = c.LeaseTTL, c.LeaseRenew
	if ttl == 0 {
		ttl = lease.DefaultTTL
	}
	if renew == 0 {
		renew = min(lease.DefaultRenew, ttl/3)
	}
	return ttl, renew
}
