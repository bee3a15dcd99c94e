package daemon

// Any replica serves any sandbox: the node asks peers about an id it does
// not have (node.Config.Peers), and the HTTP surfaces forward the request
// to the replica that runs it (httperr.Forward). Who runs a sandbox is its
// record's node; where that replica is reached is the store's replica
// directory, written at start (advertise); whether it still runs is its
// liveness lease.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/paddock-dev/paddock/internal/lease"
	"github.com/paddock-dev/paddock/internal/node"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// peers is node.Peers on the store.
type peers struct {
	s    store.Store
	self string // this replica's node name
	now  func() time.Time
}

var _ node.Peers = (*peers)(nil)

// Locate finds the replica whose record holds id. Idle pool sandboxes are
// no one's to serve; a record of this node's that the node does not have
// is not found.
func (p *peers) Locate(ctx context.Context, id string) error {
	rec, err := p.s.GetSandbox(ctx, id)
	switch {
	case errors.Is(err, sandbox.ErrNotFound):
		return nil
	case err != nil:
		return err
	case rec.Node == p.self || rec.Sandbox.Pool != "":
		return nil
	}
	ee := &sandbox.ElsewhereError{ID: id, TeamID: rec.Sandbox.TeamID, Replica: rec.Node}
	// Gone unless its lease is live: a replica killed keeps its directory
	// entry, and its address may be another Pod's by now.
	l, err := p.s.GetLease(ctx, lease.ReplicaLease(rec.Node))
	switch {
	case errors.Is(err, sandbox.ErrNotFound):
		return ee
	case err != nil:
		return err
	case !l.Live(p.now()) || l.Holder != rec.Node:
		return ee
	}
	r, err := p.s.GetReplica(ctx, rec.Node)
	switch {
	case errors.Is(err, sandbox.ErrNotFound):
		return ee // it runs, but never said where
	case err != nil:
		return err
	}
	ee.URL = r.URL
	return ee
}

// Sandboxes returns the records of the other replicas in the directory.
// A lone replica reads the directory only (itself at most).
func (p *peers) Sandboxes(ctx context.Context) ([]sandbox.Sandbox, error) {
	reps, err := p.s.ListReplicas(ctx)
	if err != nil {
		return nil, err
	}
	var out []sandbox.Sandbox
	for _, r := range reps {
		if r.Name == p.self {
			continue
		}
		recs, err := p.s.ListSandboxes(ctx, r.Name)
		if err != nil {
			return nil, err
		}
		for _, rec := range recs {
			out = append(out, rec.Sandbox)
		}
	}
	return out, nil
}

// advertise writes where this replica serves into the store's directory,
// before it serves: the others forward there from then on. A replica
// without an advertise URL is entered too (URL ""), so that the others
// list its sandboxes, and answer 503 rather than forward for them.
func (d *Daemon) advertise(ctx context.Context) error {
	r := store.Replica{Name: d.cfg.NodeName, URL: d.cfg.AdvertiseURL, UpdatedAt: time.Now()}
	if err := d.store.PutReplica(ctx, r); err != nil {
		return fmt.Errorf("enter this replica in the store's directory: %w", err)
	}
	return nil
}
