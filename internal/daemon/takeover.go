package daemon

// The takeover of a gone replica's sandboxes. With the Kubernetes driver a
// replica's sandboxes are Pods that outlive it, and its records are in the
// shared store; a replica replaced under a new name (a Deployment's) never
// comes back for them. The background lease's holder takes them over
// (node.Manager.Adopt): they are served, timed out and deleted again, or
// failed saying which replica went. Sandboxes of the local runtimes (runc,
// gVisor) went with their host; their records stay.

import (
	"context"
	"time"

	"github.com/paddock-dev/paddock/internal/lease"
)

// sweep is control's Config.Sweep: whether this replica holds the
// background lease, asked on control's sweep tick (IdleCheckInterval)
// right before it sweeps the activations gone replicas left. Holding it,
// this replica first takes the gone replicas' sandboxes over, so that the
// activations on them are taken over too (control finds their sandboxes
// running here) instead of ended.
func (d *Daemon) sweep() (context.Context, bool) {
	ctx, ok := d.leaderCtx()
	if ok && d.closing != nil {
		tctx, cancel := context.WithCancel(ctx)
		stop := context.AfterFunc(d.closing, cancel)
		d.takeover(tctx)
		stop()
		cancel()
	}
	return ctx, ok
}

// takeover adopts the sandboxes of every replica whose liveness lease
// lapsed at least takeoverGrace ago. It looks at most once per lease TTL:
// finding the replicas with records reads every sandbox record.
func (d *Daemon) takeover(ctx context.Context) {
	if d.node == nil || !d.node.Adopts() {
		return // one host's own sandboxes: nothing another replica left is reachable
	}
	ttl, _ := d.cfg.leaseTimes()
	now := time.Now()
	if now.Sub(d.lookedAt) < ttl {
		return
	}
	d.lookedAt = now
	recs, err := d.store.ListSandboxes(ctx, "")
	if err != nil {
		d.log.Warn("takeover: list sandbox records", "err", err)
		return
	}
	others := map[string]bool{}
	for _, r := range recs {
		if r.Node != d.cfg.NodeName {
			others[r.Node] = true
		}
	}
	grace := d.cfg.takeoverGrace()
	for replica := range others {
		since, err := lease.ReplicaGone(ctx, d.store, replica, now)
		if err != nil {
			d.log.Warn("takeover: read a replica's lease", "replica", replica, "err", err)
			continue
		}
		if since.IsZero() || now.Sub(since) < grace {
			continue // alive, or may still come back for its own
		}
		adopted, err := d.node.Adopt(ctx, replica)
		if err != nil {
			// What was taken stays taken; the rest waits for the next look.
			d.log.Warn("takeover: adopt a gone replica's sandboxes", "replica", replica, "err", err)
		}
		if len(adopted) > 0 {
			d.log.Warn("took over a gone replica's sandboxes", "replica", replica, "goneSince", since, "sandboxes", len(adopted))
		}
	}
}

// takeoverGrace is how long a replica's liveness lease has lapsed before
// its sandboxes are taken over: the lease TTL. By then the replica has
// been silent for two TTLs (30 s by default), long enough for one
// restarting under its own name (a container restart in its Pod) to be
// back for its sandboxes, and nobody has served or timed them out since.
// It is never longer than OrphanGrace, so that control, sweeping on the
// same tick, finds the sandboxes of a gone replica's ready activations
// running here and takes them over rather than ending them.
func (c Config) takeoverGrace() time.Duration {
	ttl, _ := c.leaseTimes()
	if c.OrphanGrace > 0 {
		return min(ttl, c.OrphanGrace)
	}
	return ttl
}
