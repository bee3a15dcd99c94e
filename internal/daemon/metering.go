package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/paddock-dev/paddock/internal/control"
	"github.com/paddock-dev/paddock/internal/events"
	"github.com/paddock-dev/paddock/internal/metering"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/volume"
	"github.com/paddock-dev/paddock/internal/volume/claim"
)

// newMeter makes the Meter (not started: startMeter starts it once the
// control plane, which its hard caps stop projects through, runs). It
// exists before the sandbox manager, whose stops book their last interval
// through it (nodeHistory.Used).
func (d *Daemon) newMeter() error {
	m, err := metering.New(metering.Config{
		Store:         d.store,
		Sandboxes:     meteredNode{d},
		Storage:       hostStorage{d},
		SharedStorage: sharedStorage{d},
		Events:        busEvents{d.bus},
		Enforcer:      budgetEnforcer{d},
		Prices:        d.cfg.Prices,
		Node:          d.cfg.NodeName,
		Interval:      d.cfg.UsageInterval,
		RawRetention:  d.cfg.UsageRetention,
		Leader:        d.leader,
		Logger:        d.log,
	})
	if err != nil {
		return err
	}
	d.meter = m
	return nil
}

// startMeter starts sampling, roll-ups and budget checks; the Meter stops
// first at Close, before the control plane and the sandbox manager.
func (d *Daemon) startMeter(ctx context.Context, _ *options) error {
	if err := d.meter.Start(ctx); err != nil {
		return err
	}
	d.push("metering", d.meter.Close)
	return nil
}

// budgetGate is the budgets' gate on new work of a team.
func (d *Daemon) budgetGate(_ context.Context, teamID string) error { return d.meter.Admit(teamID) }

// meteredNode is the sandbox manager as the Meter reads it; it looks the
// manager up at each call, since the Meter is made before it.
type meteredNode struct{ d *Daemon }

var _ metering.Sandboxes = meteredNode{}

func (n meteredNode) List(ctx context.Context, opts sandbox.ListOptions) ([]sandbox.Sandbox, string, error) {
	return n.d.node.List(ctx, opts)
}

func (n meteredNode) Stats(ctx context.Context, id string) (runtime.Stats, error) {
	return n.d.node.Stats(ctx, id)
}

// hostStorage sums what each team keeps on this host: its volumes' sizes
// (the cap, as provisioned) when they are this host's disks. Snapshots,
// and the Kubernetes runtime's volumes (claims in the cluster every
// replica lists), are the replicas' together: sharedStorage.
type hostStorage struct{ d *Daemon }

func (s hostStorage) TeamStorage(ctx context.Context) (map[string]uint64, error) {
	out := map[string]uint64{}
	if _, ok := s.d.volumes.(*volume.Manager); ok {
		return out, addVolumes(ctx, out, s.d.volumes)
	}
	return out, nil
}

// sharedStorage sums what each team keeps with every replica: its
// snapshots' own layers, from the snapshot directory (each snapshot once,
// whichever replicas pulled copies, and until it is deleted or expires,
// even after the replica that took it is gone: its image stays in the
// snapshot registry, or on that host, till then), and its volumes when
// they are the cluster's claims.
type sharedStorage struct{ d *Daemon }

func (s sharedStorage) TeamStorage(ctx context.Context) (map[string]uint64, error) {
	snaps, err := s.d.images.ListSnapshots(ctx, "")
	if err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	for _, snap := range snaps {
		if snap.TeamID != "" && snap.Size > 0 {
			out[snap.TeamID] += uint64(snap.Size)
		}
	}
	if _, ok := s.d.volumes.(*claim.Manager); ok {
		return out, addVolumes(ctx, out, s.d.volumes)
	}
	return out, nil
}

// addVolumes adds each team's volumes' sizes to out.
func addVolumes(ctx context.Context, out map[string]uint64, vols volumeStore) error {
	list, err := vols.ListAll(ctx)
	if err != nil {
		return err
	}
	for _, v := range list {
		if v.TeamID != "" && v.SizeBytes > 0 {
			out[v.TeamID] += uint64(v.SizeBytes)
		}
	}
	return nil
}

// busEvents publishes budget warnings on the event bus: stored (the API's
// feeds read them), and delivered to the team's webhooks like lifecycle
// events. Written straight to the store they reached the feeds only by
// polling and no webhook at all.
type busEvents struct{ b *events.Bus }

func (e busEvents) Publish(ctx context.Context, ev store.Event) error {
	_, err := e.b.Publish(ctx, ev)
	return err
}

// budgetEnforcer stops a team's work at its hard cap with its state
// saved: its projects are deactivated (state saved, as any deactivation),
// then its other running sandboxes on this host are paused (their files
// kept as a snapshot, resumable under the same id once the budget allows:
// Resume passes the budgets' gate). A sandbox that cannot be paused (a
// driver without snapshots, a snapshot that fails) is stopped instead, not
// deleted, so its writable layer stays for a snapshot until the stopped
// retention.
type budgetEnforcer struct{ d *Daemon }

func (b budgetEnforcer) StopTeam(ctx context.Context, teamID, reason string) error {
	var errs []error
	if b.d.control != nil {
		if err := b.d.control.DeactivateTeam(ctx, teamID, control.ReasonBudget); err != nil {
			errs = append(errs, err)
		}
	}
	// Every state, not only running: a sandbox another check is pausing
	// right now is "stopping", and pausing it again waits for that pause
	// (the sandbox's lifecycle lock) instead of leaving it half done when
	// this returns.
	opts := sandbox.ListOptions{TeamID: teamID, Limit: 500}
	for {
		sbs, next, err := b.d.node.List(ctx, opts)
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		for _, sb := range sbs {
			if sb.ProjectID != "" || (sb.State != sandbox.Running && sb.State != sandbox.Stopping) {
				continue // a project's is its activation's to end, with its state
			}
			if err := b.pauseOrStop(ctx, sb.ID, reason); err != nil {
				errs = append(errs, err)
			}
		}
		if next == "" {
			return errors.Join(errs...)
		}
		opts.Cursor = next
	}
}

// pauseOrStop pauses a running sandbox, or stops it when it cannot be
// paused. A sandbox that stopped meanwhile (ErrConflict, ErrNotRunning) is
// no error.
func (b budgetEnforcer) pauseOrStop(ctx context.Context, id, reason string) error {
	log := b.d.log.With("sandbox", id, "reason", reason)
	_, err := b.d.node.Pause(ctx, id)
	switch {
	case err == nil:
		log.Info("sandbox paused: its team reached its budget's hard cap")
		return nil
	case errors.Is(err, sandbox.ErrConflict) || errors.Is(err, sandbox.ErrNotRunning):
		return nil
	}
	log.Warn("pause for the budget failed: stopping instead (the writable layer stays until the stopped retention)", "err", err)
	if _, err := b.d.node.Stop(ctx, id); err != nil && !errors.Is(err, sandbox.ErrConflict) && !errors.Is(err, sandbox.ErrNotRunning) {
		return fmt.Errorf("stop sandbox %s: %w", id, err)
	}
	log.Info("sandbox stopped: its team reached its budget's hard cap")
	return nil
}

// budgetedSandboxes is what the API and the Vercel layer create
// through, with the budgets' gate in front: a team past its budget's hard
// cap gets ErrBudgetExceeded instead of a new sandbox.
type budgetedSandboxes struct {
	frontSandboxes
	gate func(ctx context.Context, teamID string) error
}

// Create implements server.Sandboxes.
func (b budgetedSandboxes) Create(ctx context.Context, req sandbox.CreateRequest) (sandbox.Sandbox, error) {
	if err := b.gate(ctx, req.TeamID); err != nil {
		return sandbox.Sandbox{}, err
	}
	return b.frontSandboxes.Create(ctx, req)
}

// Resume implements server.Pauser: a paused sandbox runs again only within
// its team's budget (the cap pauses sandboxes; resuming one is new work).
func (b budgetedSandboxes) Resume(ctx context.Context, id string, timeout time.Duration) (sandbox.Sandbox, error) {
	sb, err := b.frontSandboxes.Get(ctx, id)
	if err != nil {
		return sb, err
	}
	if err := b.gate(ctx, sb.TeamID); err != nil {
		return sandbox.Sandbox{}, err
	}
	return b.frontSandboxes.Resume(ctx, id, timeout)
}
