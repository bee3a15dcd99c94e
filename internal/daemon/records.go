package daemon

// A node's sandbox records in the control plane's store: newNodeRecords(s,
// name) is node.Config.Records, and newNodeHistory(s) node.Config.History
// (command exits and usage kept after the sandbox is gone). They live here,
// above both packages, so that neither imports the other.

import (
	"context"
	"fmt"

	"github.com/paddock-dev/paddock/internal/node"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// nodeRecords is the records of one node in a store.
type nodeRecords struct {
	s    store.Store
	node string
	// ended, if set, hears of every sandbox that stopped, failed, paused
	// or went: admission gives its slot back (a resume asks again).
	ended func(team, id string)
}

var _ node.SharedRecords = (*nodeRecords)(nil)

// newNodeRecords returns the records of the node named name (the host's
// name, unique among the nodes that share s). Times come back at
// store.TimePrecision.
func newNodeRecords(s store.Store, name string) *nodeRecords { return &nodeRecords{s: s, node: name} }

// Save puts sb under this node, moving it here if another node had it.
func (r *nodeRecords) Save(ctx context.Context, sb sandbox.Sandbox) error {
	err := r.s.PutSandbox(ctx, store.SandboxRecord{Node: r.node, Sandbox: sb})
	if r.ended != nil && (sb.State == sandbox.Stopped || sb.State == sandbox.Failed || sb.State == sandbox.Paused) {
		r.ended(sb.TeamID, sb.ID)
	}
	return err
}

// Remove deletes the record of id. Sandbox IDs are random and a sandbox
// lives on one node, so the ID alone names it.
func (r *nodeRecords) Remove(ctx context.Context, id string) error {
	err := r.s.DeleteSandbox(ctx, id)
	if r.ended != nil {
		r.ended("", id)
	}
	return err
}

// LoadAll returns this node's records.
func (r *nodeRecords) LoadAll(ctx context.Context) ([]sandbox.Sandbox, error) {
	recs, err := r.s.ListSandboxes(ctx, r.node)
	if err != nil {
		return nil, err
	}
	out := make([]sandbox.Sandbox, 0, len(recs))
	for _, rec := range recs {
		out = append(out, rec.Sandbox)
	}
	return out, nil
}

// LoadNode returns the records of another node sharing the store.
func (r *nodeRecords) LoadNode(ctx context.Context, node string) ([]sandbox.Sandbox, error) {
	return (&nodeRecords{s: r.s, node: node}).LoadAll(ctx)
}

// Move moves id's record from node from to node to ("": this one) if
// from has it: one conditional write in the store (store.MoveSandbox), so
// of two moves at once one wins, and a write by the record's own node (one
// that came back under its name just as the takeover read its lapsed
// lease) is never overwritten by a move that read the record before it.
func (r *nodeRecords) Move(ctx context.Context, id, from, to string) (sandbox.Sandbox, error) {
	if from == "" {
		from = r.node
	}
	if to == "" {
		to = r.node
	}
	rec, err := r.s.MoveSandbox(ctx, id, from, to)
	if err != nil {
		return sandbox.Sandbox{}, fmt.Errorf("move sandbox %s from %s to %s: %w", id, from, to, err)
	}
	return rec.Sandbox, nil
}
