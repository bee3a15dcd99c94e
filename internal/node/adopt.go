package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Adopt takes over the sandboxes of the node named from, a paddock
// replica gone for good (internal/daemon decides so from its lease), that
// this node's drivers reach too (a runtime.Adopter: Pods in a namespace
// every replica shares). Each record is moved here (SharedRecords.Move:
// a record is taken once, whoever else tries), its sandbox made this
// node's driver's, and then it joins the node as a restart re-adopts a
// record (reconcile): one that runs and answers is running here, with
// its deadline; one gone is failed, "lost with replica <from>: <why>";
// one stopping is stopped. An idle pool sandbox is destroyed: pools are
// per replica, and this one refills its own. The records of a runtime
// this node cannot adopt from stay from's: runc's and gVisor's sandboxes
// were on the gone host.
//
// It returns the records taken over, as they are now (pool sandboxes
// aside). Calls are serialised, and a call again takes nothing twice: a
// record already here is skipped. Each live sandbox taken over is an
// EventAdopted. The node must be started.
func (m *Manager) Adopt(ctx context.Context, from string) ([]sandbox.Sandbox, error) {
	shared, ok := m.store.(SharedRecords)
	if !ok {
		return nil, sandbox.Errorf(sandbox.ErrUnsupported, "adopt_unsupported",
			"node: this node's records are its host's own; there are no other nodes' to adopt")
	}
	m.mu.Lock()
	ready := m.started && !m.closed
	m.mu.Unlock()
	if !ready {
		return nil, sandbox.Errorf(sandbox.ErrUnavailable, "node_not_started", "node: Adopt before Start or after Close")
	}
	m.adopting.Lock()
	defer m.adopting.Unlock()
	recs, err := shared.LoadNode(ctx, from)
	if err != nil {
		return nil, fmt.Errorf("node: adopt from %s: %w", from, err)
	}
	var out []sandbox.Sandbox
	var errs []error
	for _, rec := range recs {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		ad, ok := m.rt.of(rec.Driver).(runtime.Adopter)
		if !ok {
			continue // on the gone host, or a runtime this node does not run
		}
		if _, err := m.lookupAny(rec.ID); err == nil {
			continue // here already
		}
		sb, taken, err := m.adoptOne(ctx, shared, from, rec.ID, ad)
		if err != nil {
			errs = append(errs, err)
		}
		if taken {
			out = append(out, sb)
		}
	}
	return out, errors.Join(errs...)
}

// adoptOne takes one record of from over; taken is false when it was not
// (another took it first, or the driver could not be asked: the record
// then goes back to from, for the next Adopt to try again).
func (m *Manager) adoptOne(ctx context.Context, shared SharedRecords, from, id string, ad runtime.Adopter) (sb sandbox.Sandbox, taken bool, err error) {
	log := m.log.With("sandbox", id, "replica", from)
	sb, err = shared.Move(ctx, id, from, "")
	if errors.Is(err, sandbox.ErrConflict) || errors.Is(err, sandbox.ErrNotFound) {
		log.Info("sandbox not adopted: taken or deleted meanwhile", "err", err)
		return sb, false, nil
	}
	if err != nil {
		return sb, false, fmt.Errorf("node: adopt %s from %s: take its record: %w", id, from, err)
	}
	dctx, cancel := driverContext(ctx)
	info, err := ad.Adopt(dctx, id)
	cancel()
	known := err == nil
	if err != nil && !errors.Is(err, sandbox.ErrNotFound) {
		if _, merr := shared.Move(ctx, id, "", from); merr != nil {
			// Here with no entry: a restart of this node resolves it.
			log.Error("give an adopted record back", "err", merr)
		}
		return sb, false, fmt.Errorf("node: adopt %s from %s: %w", id, from, err)
	}

	// In the map before it is reconciled, under its op lock: a request
	// that finds it waits for the outcome, and the timeout loop, woken
	// by its deadline, finds it.
	live := !sb.State.Terminal() && sb.State != sandbox.Paused
	e := &entry{sb: sb}
	e.op.Lock()
	m.mu.Lock()
	m.entries[id] = e
	m.mu.Unlock()
	m.index(sb)
	m.reconcileLocked(ctx, e, info, known, "lost with replica "+from)
	now, _, _ := e.snapshot()
	e.op.Unlock()

	if now.Pool != "" {
		// A failed destroy leaves a failed record here, which Delete or
		// this node's next reconcile finishes.
		if err := m.delete(ctx, e, id, nil); err != nil {
			return now, false, fmt.Errorf("node: adopt %s from %s: destroy its idle pool sandbox: %w", id, from, err)
		}
		log.Info("idle pool sandbox of a replica gone destroyed", "pool", now.Pool)
		return now, false, nil
	}
	log.Warn("sandbox adopted from a replica gone", "state", now.State, "error", now.Error)
	if live {
		m.emit(ctx, Event{Type: EventAdopted, Sandbox: now, Reason: "replica " + from + " is gone"})
	}
	return now, true, nil
}

// Adopts reports whether Adopt can take anything over here: the records
// are shared with other nodes and a driver of this node reaches other
// nodes' sandboxes (a runtime.Adopter).
func (m *Manager) Adopts() bool {
	if _, ok := m.store.(SharedRecords); !ok {
		return false
	}
	for _, d := range m.rt.drivers {
		if _, ok := d.(runtime.Adopter); ok {
			return true
		}
	}
	return false
}
