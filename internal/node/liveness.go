package node

import (
	"context"
	"sync"
	"time"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// livenessLoop stops, every Config.LivenessInterval, the sandboxes
// recorded as running whose driver no longer runs them: an agent that
// exited or was killed (out of memory, by hand), a Pod evicted past its
// disk cap. Without it such a sandbox would stay "running" until its
// timeout: exec answering errors, metering charging it, its quota slot
// taken. Start runs it; Close cancels ctx and waits.
func (m *Manager) livenessLoop(ctx context.Context) {
	defer m.wg.Done()
	t := time.NewTicker(m.cfg.LivenessInterval)
	defer t.Stop()
	absent := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.checkLiveness(ctx, absent)
		}
	}
}

// polledLister is a driver whose List is cheap enough to call every
// LivenessInterval: it reads state the driver keeps, starting no process
// per sandbox (runc, Kubernetes). Another driver's (gVisor's runs runsc
// once per sandbox) is listed only when an agent of its stops answering
// a ping.
type polledLister interface {
	runtime.Driver
	ListIsCheap()
}

const (
	// livenessPingTimeout bounds one agent ping of a sandbox whose driver
	// is not a polledLister; one that does not answer in time only makes
	// its driver list its sandboxes.
	livenessPingTimeout = 2 * time.Second
	// livenessPings caps the pings in flight at once.
	livenessPings = 16
)

// livenessCandidate is a sandbox recorded running when a check began.
type livenessCandidate struct {
	e       *entry
	started time.Time
	client  *agent.Client
}

// checkLiveness compares the running records with their drivers' lists
// and stops each sandbox its driver has as not running, with the driver's
// reason. A sandbox missing from a list altogether is stopped only when it
// is missing from two lists in a row (absent carries the first miss
// between calls): a list may lag a create or a takeover's relabelling.
func (m *Manager) checkLiveness(ctx context.Context, absent map[string]bool) {
	// The records first, then the lists: a sandbox whose create finishes
	// after its driver's list was taken is not a candidate this time.
	byRuntime := map[string]map[string]livenessCandidate{}
	m.mu.Lock()
	ents := make([]*entry, 0, len(m.entries))
	for _, e := range m.entries {
		ents = append(ents, e)
	}
	m.mu.Unlock()
	for _, e := range ents {
		sb, client, gone := e.snapshot()
		if gone || sb.State != sandbox.Running {
			continue
		}
		rt := sb.Driver
		if rt == "" {
			rt = m.rt.def
		}
		if byRuntime[rt] == nil {
			byRuntime[rt] = map[string]livenessCandidate{}
		}
		byRuntime[rt][sb.ID] = livenessCandidate{e: e, started: sb.StartedAt, client: client}
	}
	running := map[string]bool{}
	for rt, cands := range byRuntime {
		d, ok := m.rt.drivers[rt]
		if !ok {
			continue
		}
		if _, cheap := d.(polledLister); !cheap {
			dead := m.unanswered(ctx, cands)
			for id := range cands {
				if _, ok := dead[id]; !ok {
					running[id] = true
					delete(absent, id)
				}
			}
			if cands = dead; len(cands) == 0 {
				continue
			}
		}
		lctx, cancel := driverContext(ctx)
		infos, err := d.List(lctx)
		cancel()
		if err != nil {
			m.log.Warn("liveness: list sandboxes", "runtime", rt, "err", err)
			continue
		}
		listed := make(map[string]runtime.Info, len(infos))
		for _, in := range infos {
			listed[in.ID] = in
		}
		for id, c := range cands {
			running[id] = true
			in, known := listed[id]
			switch {
			case known && in.Running:
				delete(absent, id)
				continue
			case !known && !absent[id]:
				absent[id] = true
				continue
			}
			delete(absent, id)
			why := in.Reason
			if why == "" && !known {
				why = "the runtime no longer has it"
			} else if why == "" {
				why = "its agent is not running"
			}
			m.exited(ctx, c.e, c.started, why)
		}
	}
	for id := range absent {
		if !running[id] {
			delete(absent, id)
		}
	}
}

// unanswered returns the candidates whose agent does not answer a ping.
func (m *Manager) unanswered(ctx context.Context, cands map[string]livenessCandidate) map[string]livenessCandidate {
	var mu sync.Mutex
	out := map[string]livenessCandidate{}
	slots := make(chan struct{}, livenessPings)
	var wg sync.WaitGroup
	for id, c := range cands {
		if c.client == nil {
			continue
		}
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			pctx, cancel := context.WithTimeout(ctx, livenessPingTimeout)
			defer cancel()
			if _, err := c.client.Ping(pctx); err != nil {
				mu.Lock()
				out[id] = c
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return out
}

// exited stops e, which its driver no longer runs, if it is still the same
// run checkLiveness saw: a stop, or a stop and resume, may have come in
// since.
func (m *Manager) exited(ctx context.Context, e *entry, started time.Time, why string) {
	e.op.Lock()
	defer e.op.Unlock()
	sb, _, gone := e.snapshot()
	if gone || sb.State != sandbox.Running || !sb.StartedAt.Equal(started) {
		return
	}
	m.log.Warn("sandbox exited", "sandbox", sb.ID, "why", why)
	if _, err := m.stopLocked(ctx, e, "exited", "exited: "+why); err != nil {
		m.log.Error("stop exited sandbox", "sandbox", sb.ID, "err", err)
	}
}
