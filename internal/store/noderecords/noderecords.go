// Package noderecords keeps a node's sandbox records in the control plane's
// store: New(s, name) is a node.Records for node.Config.Records, and
// NewHistory(s) a node.History for node.Config.History (command exits and
// usage kept after the sandbox is gone). It sits above both packages, so
// that neither imports the other.
package noderecords

import (
	"context"

	"github.com/paddock-dev/paddock/internal/node"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// Records is the records of one node in a store.
type Records struct {
	s    store.Store
	node string
}

var _ node.Records = (*Records)(nil)

// New returns the records of the node named name (the host's name, unique
// among the nodes that share s). Times come back at store.TimePrecision.
func New(s store.Store, name string) *Records { return &Records{s: s, node: name} }

// Save puts sb under this node, moving it here if another node had it.
func (r *Records) Save(ctx context.Context, sb sandbox.Sandbox) error {
	return r.s.PutSandbox(ctx, store.SandboxRecord{Node: r.node, Sandbox: sb})
}

// Remove deletes the record of id. Sandbox IDs are random and a sandbox
// lives on one node, so the ID alone names it.
func (r *Records) Remove(ctx context.Context, id string) error {
	return r.s.DeleteSandbox(ctx, id)
}

// LoadAll returns this node's records.
func (r *Records) LoadAll(ctx context.Context) ([]sandbox.Sandbox, error) {
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
