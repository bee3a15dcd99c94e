package node

import (
	"context"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Observer hears what the node does, for metrics and lifecycle events
// (internal/daemon adapts it to internal/metrics and internal/events).
// Calls are made on the node's own path, some under a sandbox's lifecycle
// lock: an Observer returns quickly and never calls back into the node.
type Observer interface {
	// SandboxEvent reports a fact of a sandbox's life as it happens.
	SandboxEvent(ctx context.Context, e Event)
	// CreatePhase reports that one phase of a create took d (see
	// observePhases for the names).
	CreatePhase(phase string, d time.Duration)
}

// EventType names a lifecycle event of a sandbox.
type EventType string

// The sandbox lifecycle events, as the API and webhooks name them.
const (
	EventCreated       EventType = "sandbox.created"        // recorded as pending, before the driver builds it
	EventStarted       EventType = "sandbox.started"        // running
	EventFailed        EventType = "sandbox.failed"         // a create or a stop failed
	EventStopped       EventType = "sandbox.stopped"        // with Reason and Usage
	EventDeleted       EventType = "sandbox.deleted"        // gone from the host
	EventSnapshotted   EventType = "sandbox.snapshotted"    // with SnapshotID
	EventLabelsChanged EventType = "sandbox.labels_changed" // new labels in Sandbox
	EventAdopted       EventType = "sandbox.adopted"        // taken over from a replica gone (Reason), in its state now
)

// Event is one lifecycle event of a sandbox.
type Event struct {
	Type    EventType
	Sandbox sandbox.Sandbox // the record right after the fact
	// Reason says why a sandbox stopped ("requested", "timeout",
	// "deleted") or failed.
	Reason string
	// Usage is the run's resource use, on EventStopped (nil when the
	// node keeps no history or the sandbox never ran).
	Usage      *Usage
	SnapshotID string
}

// emit hands e to the Observer, if any.
func (m *Manager) emit(ctx context.Context, e Event) {
	if m.cfg.Observer != nil {
		m.cfg.Observer.SandboxEvent(ctx, e)
	}
}

// observePhases reports a create's step timings (sandbox.Phases, filled by
// the node and the driver through the create's context), each step that
// ran under its name: network, volumes, layer, config, start, agent, user,
// source and total. It is the one recording point of create timing.
func (m *Manager) observePhases(p sandbox.Phases) {
	if m.cfg.Observer == nil {
		return
	}
	for _, ph := range []struct {
		name string
		d    time.Duration
	}{
		{"network", p.Network}, {"volumes", p.Volumes}, {"layer", p.Layer}, {"config", p.Config},
		{"start", p.Start}, {"agent", p.Agent}, {"user", p.User}, {"source", p.Source}, {"total", p.Total},
	} {
		if ph.d > 0 {
			m.cfg.Observer.CreatePhase(ph.name, ph.d)
		}
	}
}

// emitStopped reports a stop with its usage, as History got it.
func (m *Manager) emitStopped(ctx context.Context, sb sandbox.Sandbox, reason string, lw lastWords) {
	e := Event{Type: EventStopped, Sandbox: sb, Reason: reason}
	if u, ok := usageOf(sb, lw); ok && lw.recorded {
		e.Usage = &u
	}
	m.emit(ctx, e)
}
