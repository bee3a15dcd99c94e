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
// Nothing that is not re-adopted is left running. Each record is matched
// against what its own runtime's driver lists; a record whose runtime this
// host no longer offers is lost.
func (m *Manager) reconcile(ctx context.Context) error {
	// listed holds each runtime's sandboxes by id.
	listed := make(map[string]map[string]runtime.Info, len(m.rt.drivers))
	for name, d := range m.rt.drivers {
		infos, err := d.List(ctx)
		if err != nil {
			return fmt.Errorf("node: reconcile: list %s sandboxes: %w", name, err)
		}
		byID := make(map[string]runtime.Info, len(infos))
		for _, in := range infos {
			byID[in.ID] = in
		}
		listed[name] = byID
	}

	m.mu.Lock()
	ents := slices.Collect(maps.Values(m.entries))
	m.mu.Unlock()
	for _, e := range ents {
		e.mu.Lock()
		id, rt := e.sb.ID, e.sb.Driver
		e.mu.Unlock()
		if rt == "" {
			rt = m.rt.def
		}
		info, known := listed[rt][id]
		delete(listed[rt], id)
		m.reconcileOne(ctx, e, info, known, "lost after restart")
	}

	for name, byID := range listed {
		for id := range byID {
			m.log.Warn("destroying orphan sandbox", "sandbox", id, "runtime", name)
			dctx, cancel := driverContext(ctx)
			err := m.rt.drivers[name].Destroy(dctx, id)
			cancel()
			if err != nil {
				m.log.Error("destroy orphan sandbox", "sandbox", id, "runtime", name, "err", err)
			}
		}
	}

	// After the sandboxes: only now is it known which ones still run.
	m.reconcileNetworks(ctx)
	m.reconcileVolumes(ctx)

	// Deadlines that passed while no manager was watching.
	m.checkTimeouts(ctx)
	return nil
}

// reconcileOne makes one record agree with what its driver has of it
// (info, if known), as reconcile says: re-adopted, finished or failed.
// lost begins the Error of a record failed ("lost after restart"; Adopt's
// names the replica gone).
func (m *Manager) reconcileOne(ctx context.Context, e *entry, info runtime.Info, known bool, lost string) {
	e.op.Lock()
	defer e.op.Unlock()
	m.reconcileLocked(ctx, e, info, known, lost)
}

// reconcileLocked is reconcileOne for a caller that holds e.op.
func (m *Manager) reconcileLocked(ctx context.Context, e *entry, info runtime.Info, known bool, lost string) {
	sb, _, _ := e.snapshot()
	log := m.log.With("sandbox", sb.ID)

	switch sb.State {
	case sandbox.Stopped, sandbox.Failed:
		if known && info.Running {
			// The record says it ended; make the host agree.
			log.Warn("stopping sandbox recorded as ended", "state", sb.State)
			if err := m.driverStop(ctx, sb); err != nil {
				log.Error("stop sandbox recorded as ended", "err", err)
			}
		}
		return
	case sandbox.Paused:
		if known {
			// A crash between the pause's record and the driver's clean-up.
			dctx, cancel := driverContext(ctx)
			if err := m.driverOf(sb).Destroy(dctx, sb.ID); err != nil {
				log.Error("destroy paused sandbox's remains", "err", err)
			}
			cancel()
		}
		return
	case sandbox.Stopping:
		if sb.Pause != nil {
			// A pause cut short: its snapshot is whole (recorded after it).
			dctx, cancel := driverContext(ctx)
			err := m.driverOf(sb).Destroy(dctx, sb.ID)
			cancel()
			if err == nil {
				m.teardownNetwork(ctx, sb.ID)
				_, _ = m.finishPause(e)
				log.Info("sandbox paused", "reason", "pausing before restart")
				return
			}
			log.Error("finish pausing sandbox after restart", "err", err)
		}
		if err := m.driverStop(ctx, sb); err != nil {
			log.Error("finish stopping sandbox after restart", "err", err)
			_, _ = m.transition(e, sandbox.Failed, nil, func(sb *sandbox.Sandbox) {
				sb.Error = lost + ": stop: " + err.Error()
				sb.StoppedAt = m.now()
			})
			return
		}
		_, _ = m.transition(e, sandbox.Stopped, nil, func(sb *sandbox.Sandbox) { sb.StoppedAt = m.now() })
		log.Info("sandbox stopped", "reason", "stopping before restart")
		return
	}

	client, ainfo, why := m.readopt(ctx, sb, info, known)
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
		if err := m.driverStop(ctx, sb); err != nil {
			log.Error("stop lost sandbox", "err", err)
			why += "; stop: " + err.Error()
		}
	}
	log.Warn("sandbox lost", "why", lost+": "+why)
	final, err := m.transition(e, sandbox.Failed, nil, func(sb *sandbox.Sandbox) {
		sb.Error = lost + ": " + why
		sb.StoppedAt = m.now()
	})
	if err == nil && lw.statsOK {
		lw.cmdsOK = false // the agent is gone: its commands were never listed
		m.recordLastWords(ctx, final, lw)
	}
}

// readopt returns a client for a sandbox that still runs and answers, or
// why it cannot be re-adopted.
func (m *Manager) readopt(ctx context.Context, sb sandbox.Sandbox, info runtime.Info, known bool) (*agent.Client, agent.Info, string) {
	id, drv := sb.ID, m.driverOf(sb)
	if md, ok := drv.(missingDriver); ok {
		return nil, agent.Info{}, md.err().Error()
	}
	switch {
	case !known:
		return nil, agent.Info{}, "the driver has no trace of it"
	case !info.Running:
		return nil, agent.Info{}, "it is no longer running"
	}
	client, err := drv.Agent(ctx, id)
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

func (m *Manager) driverStop(ctx context.Context, sb sandbox.Sandbox) error {
	dctx, cancel := driverContext(ctx)
	defer cancel()
	return m.driverOf(sb).Stop(dctx, sb.ID)
}
