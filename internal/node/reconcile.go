package node

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// reconcile makes the records agree with what the driver has on this host
// after a restart:
//   - a pending or running record whose sandbox still runs and whose agent
//     answers is re-adopted (its deadline re-armed; one already past stops
//     it at once);
//   - any other pending or running record is stopped through the driver and
//     marked failed, "lost after restart: <why>"; its writable layer stays
//     until Delete;
//   - a stopping record is stopped through the driver, finishing the stop
//     that was asked for, or the pause when it holds one;
//   - a paused record stays paused (anything the driver still has of it is
//     destroyed);
//   - every driver sandbox without a record is an orphan of a crash
//     mid-create and is destroyed.
//
// Nothing that is not re-adopted is left running.
func (m *Manager) reconcile(ctx context.Context) error {
	infos, err := m.cfg.Driver.List(ctx)
	if err != nil {
		return fmt.Errorf("node: reconcile: list driver sandboxes: %w", err)
	}
	listed := make(map[string]runtime.Info, len(infos))
	for _, in := range infos {
		listed[in.ID] = in
	}

	m.mu.Lock()
	ents := slices.Collect(maps.Values(m.entries))
	m.mu.Unlock()
	for _, e := range ents {
		e.mu.Lock()
		id := e.sb.ID
		e.mu.Unlock()
		info, known := listed[id]
		delete(listed, id)
		m.reconcileOne(ctx, e, info, known)
	}

	for id := range listed {
		m.log.Warn("destroying orphan sandbox", "sandbox", id)
		dctx, cancel := driverContext(ctx)
		err := m.cfg.Driver.Destroy(dctx, id)
		cancel()
		if err != nil {
			m.log.Error("destroy orphan sandbox", "sandbox", id, "err", err)
		}
	}

	// After the sandboxes: only now is it known which ones still run.
	m.reconcileNetworks(ctx)
	m.reconcileVolumes(ctx)

	// Deadlines that passed while no manager was watching.
	m.checkTimeouts(ctx)
	return nil
}

func (m *Manager) reconcileOne(ctx context.Context, e *entry, info runtime.Info, known bool) {
	e.op.Lock()
	defer e.op.Unlock()
	sb, _, _ := e.snapshot()
	log := m.log.With("sandbox", sb.ID)

	switch sb.State {
	case sandbox.Stopped, sandbox.Failed:
		if known && info.Running {
			// The record says it ended; make the host agree.
			log.Warn("stopping sandbox recorded as ended", "state", sb.State)
			if err := m.driverStop(ctx, sb.ID); err != nil {
				log.Error("stop sandbox recorded as ended", "err", err)
			}
		}
		return
	case sandbox.Paused:
		if known {
			// A crash between the pause's record and the driver's clean-up.
			dctx, cancel := driverContext(ctx)
			if err := m.cfg.Driver.Destroy(dctx, sb.ID); err != nil {
				log.Error("destroy paused sandbox's remains", "err", err)
			}
			cancel()
		}
		return
	case sandbox.Stopping:
		if sb.Pause != nil {
			// A pause cut short: its snapshot is whole (recorded after it).
			dctx, cancel := driverContext(ctx)
			err := m.cfg.Driver.Destroy(dctx, sb.ID)
			cancel()
			if err == nil {
				m.teardownNetwork(ctx, sb.ID)
				_, _ = m.finishPause(e)
				log.Info("sandbox paused", "reason", "pausing before restart")
				return
			}
			log.Error("finish pausing sandbox after restart", "err", err)
		}
		if err := m.driverStop(ctx, sb.ID); err != nil {
			log.Error("finish stopping sandbox after restart", "err", err)
			_, _ = m.transition(e, sandbox.Failed, nil, func(sb *sandbox.Sandbox) {
				sb.Error = "lost after restart: stop: " + err.Error()
				sb.StoppedAt = m.now()
			})
			return
		}
		_, _ = m.transition(e, sandbox.Stopped, nil, func(sb *sandbox.Sandbox) { sb.StoppedAt = m.now() })
		log.Info("sandbox stopped", "reason", "stopping before restart")
		return
	}

	client, ainfo, why := m.readopt(ctx, sb.ID, info, known)
	if client != nil {
		// The agent keeps its user for its whole life; a record saved
		// before the agent answered (or by an older paddock) learns it now.
		user := sb.User
		if user == (sandbox.User{}) {
			user = userOf(ainfo)
		}
		if sb.State == sandbox.Pending {
			// Created just before the crash: the driver finished, the
			// record did not. Its provisional deadline stands.
			_, _ = m.transition(e, sandbox.Running, client, func(sb *sandbox.Sandbox) {
				sb.StartedAt = m.now()
				sb.User = user
			})
		} else {
			e.mu.Lock()
			e.client = client
			e.mu.Unlock()
			if user != sb.User {
				m.update(e, func(sb *sandbox.Sandbox) { sb.User = user })
			} else {
				m.index(sb)
			}
		}
		log.Info("sandbox re-adopted", "expiresAt", sb.ExpiresAt)
		return
	}

	// What it used since the last sample, if its cgroup can still be read
	// (metering books it up to this StoppedAt; else nothing past the last
	// sample: see internal/metering).
	lw := m.collectLastWords(ctx, e)
	if known {
		if err := m.driverStop(ctx, sb.ID); err != nil {
			log.Error("stop lost sandbox", "err", err)
			why += "; stop: " + err.Error()
		}
	}
	log.Warn("sandbox lost after restart", "why", why)
	final, err := m.transition(e, sandbox.Failed, nil, func(sb *sandbox.Sandbox) {
		sb.Error = "lost after restart: " + why
		sb.StoppedAt = m.now()
	})
	if err == nil && lw.statsOK {
		lw.cmdsOK = false // the agent is gone: its commands were never listed
		m.recordLastWords(ctx, final, lw)
	}
}

// readopt returns a client for a sandbox that still runs and answers, or
// why it cannot be re-adopted.
func (m *Manager) readopt(ctx context.Context, id string, info runtime.Info, known bool) (*agent.Client, agent.Info, string) {
	switch {
	case !known:
		return nil, agent.Info{}, "the driver has no trace of it"
	case !info.Running:
		return nil, agent.Info{}, "it is no longer running"
	}
	client, err := m.cfg.Driver.Agent(ctx, id)
	if err != nil {
		return nil, agent.Info{}, "agent: " + err.Error()
	}
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	ainfo, err := client.Ping(pctx)
	if err != nil {
		client.Close()
		return nil, agent.Info{}, "agent does not answer: " + err.Error()
	}
	if err := ainfo.UserErr(); err != nil {
		// Its create was failing when paddock stopped.
		client.Close()
		return nil, agent.Info{}, "agent has no user: " + err.Error()
	}
	return client, ainfo, ""
}

func (m *Manager) driverStop(ctx context.Context, id string) error {
	dctx, cancel := driverContext(ctx)
	defer cancel()
	return m.cfg.Driver.Stop(dctx, id)
}
