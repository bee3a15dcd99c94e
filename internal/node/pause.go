package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Pause keeps a running sandbox's filesystem as a snapshot and stops it:
// its id, ports, env, policy, volumes and team stay in the record
// (Sandbox.Pause says what was kept), nothing of it runs, its timeout clock
// stops and it holds no capacity slot. Resume boots it again from the
// snapshot. Processes and memory are not kept (Pause.Memory is false): no
// driver has that power yet. Pausing a paused sandbox returns it unchanged.
func (m *Manager) Pause(ctx context.Context, id string) (sandbox.Sandbox, error) {
	store, err := m.snapshots()
	if err != nil {
		return sandbox.Sandbox{}, err
	}
	e, sb, unlock, err := m.lockRunning(ctx, id)
	if err != nil {
		if errors.Is(err, sandbox.ErrNotRunning) && sb.State == sandbox.Paused {
			return sb, nil
		}
		return sb, err
	}
	defer unlock()
	snapper, err := m.snapshotterOf(sb)
	if err != nil {
		return sb, err
	}
	snap, err := m.snapshotLocked(ctx, store, snapper, sb, false)
	if err != nil {
		return sb, fmt.Errorf("node: pause sandbox %s: %w", id, err)
	}
	lw := m.collectLastWords(ctx, e)
	timeout := sb.ExpiresAt.Sub(sb.StartedAt)
	if timeout <= 0 {
		timeout = m.cfg.DefaultTimeout
	}
	pause := &sandbox.Pause{Snapshot: snap.ID, PausedAt: m.now(), Timeout: min(timeout, m.cfg.MaxTimeout)}
	// Stopping already holds the pause, so a crash from here on ends the
	// sandbox paused (reconcile), not lost.
	if sb, err = m.transition(e, sandbox.Stopping, nil, func(sb *sandbox.Sandbox) { sb.Pause = pause }); err != nil {
		return sb, fmt.Errorf("node: pause sandbox %s: %w", id, err)
	}
	log := m.log.With("sandbox", id)
	dctx, cancel := driverContext(ctx)
	defer cancel()
	// Destroy, not Stop: the layer is in the snapshot now, and resume
	// creates the sandbox afresh under the same id.
	if err := m.driverOf(sb).Destroy(dctx, id); err != nil {
		log.Error("pause sandbox failed", "err", err)
		failed, terr := m.transition(e, sandbox.Failed, nil, func(sb *sandbox.Sandbox) {
			sb.Error = "pause: " + err.Error()
			sb.StoppedAt = m.now()
			// The snapshot stays, as an ordinary one of the team's.
			sb.Pause = nil
		})
		m.recordLastWords(ctx, failed, lw)
		return failed, errors.Join(fmt.Errorf("node: pause sandbox %s: %w", id, err), terr)
	}
	m.teardownNetwork(dctx, id)
	m.releaseVolumes(dctx, id)
	sb, err = m.finishPause(e)
	if err != nil {
		return sb, fmt.Errorf("node: pause sandbox %s: %w", id, err)
	}
	m.recordLastWords(ctx, sb, lw)
	log.Info("sandbox paused", "snapshot", snap.ID, "bytes", snap.Size)
	return sb, nil
}

// finishPause moves a stopping sandbox that holds a pause to paused.
func (m *Manager) finishPause(e *entry) (sandbox.Sandbox, error) {
	return m.transition(e, sandbox.Paused, nil, func(sb *sandbox.Sandbox) {
		sb.StoppedAt = m.now()
		sb.ExpiresAt = time.Time{}
	})
}

// Resume boots a paused sandbox again from its pause snapshot, under the
// same id, with its ports, env, policy and volumes; its processes start
// afresh (the agent, nothing of the old run). The timeout is timeout, or
// the one it had when paused if zero, counted from now. Resuming a running
// sandbox returns it unchanged. A resume that fails leaves it paused, with
// the reason in Error, so it can be tried again.
func (m *Manager) Resume(ctx context.Context, id string, timeout time.Duration) (sandbox.Sandbox, error) {
	if timeout < 0 || timeout > m.cfg.MaxTimeout {
		return sandbox.Sandbox{}, sandbox.Errorf(sandbox.ErrInvalid, "invalid_timeout", "timeout must be in [0, %s], got %s", m.cfg.MaxTimeout, timeout)
	}
	e, err := m.lookup(ctx, id)
	if err != nil {
		return sandbox.Sandbox{}, err
	}
	e.op.Lock()
	defer e.op.Unlock()
	sb, _, gone := e.snapshot()
	switch {
	case gone:
		return sandbox.Sandbox{}, notFound(id)
	case sb.State == sandbox.Running:
		return sb, nil
	case sb.State != sandbox.Paused || sb.Pause == nil:
		return sb, sandbox.Errorf(sandbox.ErrConflict, "sandbox_not_paused", "sandbox %s is %s, not paused", id, sb.State)
	}
	if timeout == 0 {
		timeout = sb.Pause.Timeout
	}
	if timeout <= 0 {
		timeout = m.cfg.DefaultTimeout
	}
	snap, rootfs, err := m.resolveSnapshot(ctx, sb.Pause.Snapshot)
	if err != nil {
		return sb, fmt.Errorf("node: resume sandbox %s: %w", id, err)
	}
	m.mu.Lock()
	switch {
	case m.closed:
		m.mu.Unlock()
		return sb, sandbox.Errorf(sandbox.ErrUnavailable, "node_closed", "node is shutting down")
	case len(m.active) >= m.cfg.MaxSandboxes:
		m.mu.Unlock()
		return sb, sandbox.Errorf(sandbox.ErrExhausted, "capacity", "this host runs its maximum of %d sandboxes", m.cfg.MaxSandboxes)
	}
	m.active[id] = struct{}{} // the slot, until the transition indexes it
	m.mu.Unlock()
	if sb, err = m.transition(e, sandbox.Pending, nil, func(sb *sandbox.Sandbox) { sb.Error = "" }); err != nil {
		m.index(sb)
		return sb, fmt.Errorf("node: resume sandbox %s: %w", id, err)
	}
	policy := sb.NetworkPolicy
	if policy == nil && m.cfg.Network != nil {
		// Paused on a host that ran without networking.
		p := clonePolicy(DefaultNetworkPolicy)
		policy = &p
	}
	spec := runtime.Spec{ID: id, Image: sb.Image, Rootfs: rootfs, Resources: sb.Resources, Hostname: id, User: sb.ImageUser}
	dctx, cancel := driverContext(ctx)
	defer cancel()
	client, err := m.boot(dctx, e, spec, policy, sb.Volumes)
	if err != nil {
		m.log.Error("resume sandbox failed", "sandbox", id, "err", err)
		// boot used the driver of the record's runtime: a resume keeps it.
		m.unboot(ctx, m.driverOf(sb), id, client)
		sb, terr := m.transition(e, sandbox.Paused, nil, func(sb *sandbox.Sandbox) { sb.Error = "resume: " + err.Error() })
		return sb, errors.Join(fmt.Errorf("node: resume sandbox %s: %w", id, err), terr)
	}
	now := m.now()
	sb, err = m.transition(e, sandbox.Running, client, func(sb *sandbox.Sandbox) {
		sb.StartedAt, sb.ExpiresAt, sb.LastActivityAt = now, now.Add(timeout), now
		sb.StoppedAt = time.Time{}
		sb.NetworkPolicy = policy
		// The layers recorded keep them from image GC while the sandbox
		// exists; the pause snapshot itself is no longer needed.
		sb.ImageLayers = slices.Clone(rootfs.Lowers)
		// And a snapshot of it stacks on the pause snapshot's image.
		sb.ImageRef = rootfs.Ref
		sb.Pause = nil
	})
	if err != nil {
		return sb, fmt.Errorf("node: resume sandbox %s: %w", id, err)
	}
	if store, err := m.snapshots(); err == nil {
		if err := store.RemoveSnapshot(ctx, snap.ID); err != nil {
			m.log.Warn("forget pause snapshot", "sandbox", id, "snapshot", snap.ID, "err", err)
		}
	}
	m.log.Info("sandbox resumed", "sandbox", id, "expiresAt", sb.ExpiresAt)
	return sb, nil
}

// stopPaused ends a paused sandbox: nothing runs, so it goes straight to
// stopped; its pause snapshot stays as an ordinary snapshot of its team's.
// The caller holds e.op.
func (m *Manager) stopPaused(e *entry) (sandbox.Sandbox, error) {
	return m.transition(e, sandbox.Stopped, nil, func(sb *sandbox.Sandbox) {
		// The layer went into the snapshot at the pause.
		sb.LayerRemovedAt = sb.StoppedAt
		sb.Pause = nil
	})
}
