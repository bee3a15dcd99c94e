package node

import (
	"context"
	"sync"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// timeoutLoop stops sandboxes when their deadline passes. It sleeps on one
// timer armed for the earliest deadline and re-arms it whenever a deadline
// changes (index wakes it), so it never polls. Start runs it; Close cancels
// ctx and waits for it, including any stop it has in flight.
func (m *Manager) timeoutLoop(ctx context.Context) {
	defer m.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if next, ok := m.nextDeadline(); ok {
			// Deadlines are in cfg.Now's time; the timer only needs to wake
			// us about then, and checkTimeouts decides with cfg.Now.
			timer.Reset(max(0, next.Sub(m.now())))
		} else {
			timer.Stop()
		}
		select {
		case <-ctx.Done():
			return
		case <-m.wake:
		case <-timer.C:
			m.checkTimeouts(ctx)
		}
	}
}

// nextDeadline returns the earliest deadline of a running sandbox or of a
// stopped one's layer.
func (m *Manager) nextDeadline() (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var next time.Time
	for _, deadlines := range []map[string]time.Time{m.deadlines, m.collect} {
		for _, at := range deadlines {
			if next.IsZero() || at.Before(next) {
				next = at
			}
		}
	}
	return next, !next.IsZero()
}

// checkTimeouts stops every running sandbox whose deadline has passed by
// cfg.Now, and removes the layers of stopped ones past their retention, in
// parallel, and returns when all is done. Tests call it directly after
// moving their fake clock.
func (m *Manager) checkTimeouts(ctx context.Context) {
	now := m.now()
	m.mu.Lock()
	var due, collect []*entry
	for id, at := range m.deadlines {
		if !at.After(now) {
			if e, ok := m.entries[id]; ok {
				due = append(due, e)
			}
		}
	}
	for id, at := range m.collect {
		if !at.After(now) {
			if e, ok := m.entries[id]; ok {
				collect = append(collect, e)
			}
		}
	}
	m.mu.Unlock()

	var wg sync.WaitGroup
	for _, e := range due {
		wg.Go(func() { m.expire(ctx, e) })
	}
	for _, e := range collect {
		wg.Go(func() { m.collectLayer(ctx, e) })
	}
	wg.Wait()
}

// expire stops e if it is still running past its deadline: an extension or
// a stop may have come in since checkTimeouts looked.
func (m *Manager) expire(ctx context.Context, e *entry) {
	e.op.Lock()
	defer e.op.Unlock()
	sb, _, gone := e.snapshot()
	if gone || sb.State != sandbox.Running || sb.ExpiresAt.After(m.now()) {
		return
	}
	m.log.Info("sandbox timed out", "sandbox", sb.ID, "expiresAt", sb.ExpiresAt)
	if _, err := m.stopLocked(ctx, e, "timeout", ""); err != nil {
		m.log.Error("stop timed-out sandbox", "sandbox", sb.ID, "err", err)
	}
}
