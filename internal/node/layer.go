package node

import (
	"context"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// A stopped or failed sandbox keeps its writable layer on the host so
// that it can still be snapshotted (a Vercel persistent sandbox is, right
// after it stops), until it is deleted or, with Config.StoppedRetention,
// until the retention since it stopped has passed: then the timeout loop
// destroys it through the driver and marks the record, which stays.

// collectRetry is how long a layer whose removal failed waits for the next try.
const collectRetry = time.Minute

// collectAt returns when sb's layer is due for removal, if it is. The
// caller holds m.mu (m.cfg does not change).
func (m *Manager) collectAt(sb sandbox.Sandbox) (time.Time, bool) {
	if m.cfg.StoppedRetention <= 0 || !sb.State.Terminal() || !sb.LayerRemovedAt.IsZero() || sb.StoppedAt.IsZero() {
		return time.Time{}, false
	}
	return sb.StoppedAt.Add(m.cfg.StoppedRetention), true
}

// collectLayer removes a stopped sandbox's layer if it is still due: a
// delete may have come in since checkTimeouts looked.
func (m *Manager) collectLayer(ctx context.Context, e *entry) {
	e.op.Lock()
	defer e.op.Unlock()
	sb, _, gone := e.snapshot()
	if gone {
		return
	}
	m.mu.Lock()
	at, ok := m.collectAt(sb)
	m.mu.Unlock()
	if !ok || at.After(m.now()) {
		return
	}
	log := m.log.With("sandbox", sb.ID)
	dctx, cancel := driverContext(ctx)
	defer cancel()
	// Destroy of a stopped sandbox removes what is left of it on the host.
	if err := m.driverOf(sb).Destroy(dctx, sb.ID); err != nil {
		log.Error("remove the layer of a stopped sandbox", "err", err, "retryIn", collectRetry)
		m.mu.Lock()
		if _, ok := m.collect[sb.ID]; ok {
			m.collect[sb.ID] = m.now().Add(collectRetry)
		}
		m.mu.Unlock()
		return
	}
	m.update(e, func(sb *sandbox.Sandbox) { sb.LayerRemovedAt = m.now() })
	log.Info("stopped sandbox's layer removed", "stoppedAt", sb.StoppedAt, "retention", m.cfg.StoppedRetention)
}

// errLayerRemoved refuses a snapshot of a sandbox whose layer is gone.
func errLayerRemoved(sb sandbox.Sandbox, retention time.Duration) error {
	return sandbox.Errorf(sandbox.ErrConflict, "sandbox_layer_removed",
		"sandbox %s stopped at %s and its writable layer was removed %s later (the host keeps stopped sandboxes' layers for %s): there is nothing to snapshot",
		sb.ID, sb.StoppedAt.Format(time.RFC3339), sb.LayerRemovedAt.Sub(sb.StoppedAt).Round(time.Second), retention)
}
