package daemon

// The expiry of the snapshots gone replicas took. Each replica's image GC
// expires the snapshots its own store holds, asking the snapshot directory
// for their last use through any replica; a snapshot only the directory
// has (its replica gone for good, no live replica pulled it) would stay
// there, and in the snapshot registry, forever. The background lease's
// holder expires those, once among the replicas.

import (
	"context"
	"log/slog"
	"time"

	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/lease"
	"github.com/paddock-dev/paddock/internal/store"
)

// abandonGrace is how long a replica's liveness lease has lapsed before
// the snapshots it took count as abandoned: an hour, far past the
// takeover's grace, so that a replica restarting or upgraded under its
// own name expires its own (keeping those its stopped sandboxes stack),
// and the Kubernetes runtime's sandboxes it left have been taken over
// onto a live replica, whose records then keep what they run.
const abandonGrace = time.Hour

// expireAbandonedSnapshots runs one sweep if this replica holds the
// background lease, under the lease's context.
func (d *Daemon) expireAbandonedSnapshots(ctx context.Context) {
	lctx, ok := d.leaderCtx()
	if !ok {
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(lctx, cancel)()
	sweepAbandonedSnapshots(ctx, d.images, d.store, d.cfg.NodeName, abandonGrace, d.log)
}

// sweepAbandonedSnapshots expires, through images, the snapshot
// directory's records unused for the TTL whose replica is gone (see
// abandonment); self is this replica, whose own records it expires too
// when its store no longer holds them (its GC never sees those).
func sweepAbandonedSnapshots(ctx context.Context, images *image.Store, st store.Store, self string, grace time.Duration, log *slog.Logger) {
	a := &abandonment{st: st, self: self, grace: grace, now: time.Now(), gone: map[string]bool{}}
	n, err := images.ExpireAbandoned(ctx, a.abandoned)
	if err != nil && ctx.Err() == nil {
		log.Warn("snapshot expiry: the snapshots of gone replicas", "err", err)
	}
	if n > 0 {
		log.Info("snapshot expiry: expired the snapshots of gone replicas", "snapshots", n)
	}
}

// abandonment judges, for one sweep, whether a directory record has no
// replica to expire it: its replica's liveness lease has lapsed for longer
// than grace (abandonGrace), or it is this replica's and not held here;
// and no sandbox of a live replica still needs it (created from it, paused
// into it, or running its pushed image: a Pod taken over from the gone
// replica runs it). Records of sandboxes left on gone replicas do not
// count: with a local runtime they went with their host, and the
// Kubernetes runtime's were taken over onto a live one.
type abandonment struct {
	st    store.Store
	self  string
	grace time.Duration
	now   time.Time

	gone map[string]bool // by replica, as read this sweep
	// needed holds the snapshot ids and images that sandboxes of live
	// replicas use; read at the first record that asks.
	needed map[string]bool
}

func (a *abandonment) abandoned(ctx context.Context, e image.Snapshot) (bool, error) {
	if e.Replica != a.self {
		gone, err := a.replicaGone(ctx, e.Replica)
		if err != nil || !gone {
			return false, err
		}
	}
	if a.needed == nil {
		if err := a.readNeeded(ctx); err != nil {
			return false, err
		}
	}
	return !a.needed[e.ID] && (e.Ref == "" || !a.needed[e.Ref]), nil
}

func (a *abandonment) replicaGone(ctx context.Context, replica string) (bool, error) {
	if gone, ok := a.gone[replica]; ok {
		return gone, nil
	}
	if replica == a.self {
		return false, nil
	}
	since, err := lease.ReplicaGone(ctx, a.st, replica, a.now)
	if err != nil {
		return false, err
	}
	gone := !since.IsZero() && a.now.Sub(since) >= a.grace
	a.gone[replica] = gone
	return gone, nil
}

func (a *abandonment) readNeeded(ctx context.Context) error {
	recs, err := a.st.ListSandboxes(ctx, "")
	if err != nil {
		return err
	}
	needed := map[string]bool{}
	for _, r := range recs {
		if gone, err := a.replicaGone(ctx, r.Node); err != nil {
			return err
		} else if gone {
			continue
		}
		sb := r.Sandbox
		for _, k := range []string{sb.Snapshot, sb.ImageRef} {
			if k != "" {
				needed[k] = true
			}
		}
		if sb.Pause != nil && sb.Pause.Snapshot != "" {
			needed[sb.Pause.Snapshot] = true
		}
	}
	a.needed = needed
	return nil
}
