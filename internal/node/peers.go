package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Peers tells the node of the sandboxes that other replicas sharing its
// records run, so that any replica answers for any sandbox: the HTTP
// surfaces forward a request for one of them to its replica (see
// sandbox.ElsewhereError), and lists show them all. internal/daemon
// implements it on the store's records, its replica directory and the
// replicas' leases. Implementations are safe for concurrent use.
type Peers interface {
	// Locate is asked about an id this node does not have. It returns a
	// *sandbox.ElsewhereError if another replica runs the sandbox (URL ""
	// when that replica is gone), nil if none does, or why it cannot tell.
	Locate(ctx context.Context, id string) error
	// Sandboxes returns the records of the sandboxes other replicas run,
	// in any order, idle pool sandboxes included.
	Sandboxes(ctx context.Context) ([]sandbox.Sandbox, error)
}

// elsewhere turns the not-found err of a lookup of id into where another
// replica runs it, when one does. Only ids this node does not have get
// here: a lone replica's hot path never asks the peers.
func (m *Manager) elsewhere(ctx context.Context, id string, err error) error {
	if m.cfg.Peers == nil || !errors.Is(err, sandbox.ErrNotFound) || !sandbox.ValidID(id) {
		return err
	}
	switch perr := m.cfg.Peers.Locate(ctx, id); {
	case perr == nil:
		return err
	case errors.As(perr, new(*sandbox.ElsewhereError)):
		return perr
	default:
		return fmt.Errorf("node: find the replica of sandbox %s: %w", id, perr)
	}
}

// peerSandboxes returns what the other replicas run, for List.
func (m *Manager) peerSandboxes(ctx context.Context) ([]sandbox.Sandbox, error) {
	if m.cfg.Peers == nil {
		return nil, nil
	}
	sbs, err := m.cfg.Peers.Sandboxes(ctx)
	if err != nil {
		return nil, fmt.Errorf("node: list other replicas' sandboxes: %w", err)
	}
	return sbs, nil
}
