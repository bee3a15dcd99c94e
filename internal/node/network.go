package node

import (
	"context"
	"fmt"

	"github.com/paddock-dev/paddock/internal/netns"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// The node answers the proxy's lookups from its in-memory records.

// setupNetwork creates e's network, when the node has networking, and
// records the sandbox's address. The caller holds e.op; on error it tears
// down whatever Setup left.
func (m *Manager) setupNetwork(ctx context.Context, e *entry, policy *sandbox.NetworkPolicy) (*netns.Network, error) {
	if m.cfg.Network == nil {
		return nil, nil
	}
	sb, _, _ := e.snapshot()
	nw, err := m.cfg.Network.Setup(ctx, sb.ID, netns.Policy(*policy))
	if err != nil {
		return nil, fmt.Errorf("set up network: %w", err)
	}
	m.update(e, func(sb *sandbox.Sandbox) { sb.Address = nw.SandboxAddr })
	return nw, nil
}

// teardownNetwork removes a sandbox's network once nothing of the sandbox
// runs. Teardown is idempotent, so it is safe for sandboxes that never had
// one; a failure is logged because the sandbox itself is already gone and a
// leftover is retried on the next reconcile.
func (m *Manager) teardownNetwork(ctx context.Context, id string) {
	if m.cfg.Network == nil {
		return
	}
	if err := m.cfg.Network.Teardown(ctx, id); err != nil {
		m.log.Error("tear down sandbox network", "sandbox", id, "err", err)
	}
}

// AddPorts declares more ports of a running sandbox for the proxy.
func (m *Manager) AddPorts(ctx context.Context, id string, ports []sandbox.Port) (sandbox.Sandbox, error) {
	if m.cfg.Network == nil {
		return sandbox.Sandbox{}, errNoNetwork
	}
	e, sb, unlock, err := m.lockRunning(id)
	if err != nil {
		return sb, err
	}
	defer unlock()
	merged, err := mergePorts(&m.cfg, sb.Ports, ports)
	if err != nil {
		return sb, err
	}
	return m.update(e, func(sb *sandbox.Sandbox) { sb.Ports = merged }), nil
}

// UpdateNetworkPolicy replaces a running sandbox's egress policy; its
// processes keep running.
func (m *Manager) UpdateNetworkPolicy(ctx context.Context, id string, policy sandbox.NetworkPolicy) (sandbox.Sandbox, error) {
	if m.cfg.Network == nil {
		return sandbox.Sandbox{}, errNoNetwork
	}
	policy = clonePolicy(policy)
	if err := netns.Policy(policy).Validate(); err != nil {
		return sandbox.Sandbox{}, err
	}
	e, sb, unlock, err := m.lockRunning(id)
	if err != nil {
		return sb, err
	}
	defer unlock()
	dctx, cancel := driverContext(ctx)
	defer cancel()
	if err := m.cfg.Network.Update(dctx, id, netns.Policy(policy)); err != nil {
		return sb, fmt.Errorf("node: update network policy of sandbox %s: %w", id, err)
	}
	return m.update(e, func(sb *sandbox.Sandbox) { sb.NetworkPolicy = &policy }), nil
}

// reconcileNetworks tears down every network with no sandbox record, and
// those of sandboxes that no longer run. Called at the end of reconcile.
func (m *Manager) reconcileNetworks(ctx context.Context) {
	if m.cfg.Network == nil {
		return
	}
	for _, nw := range m.cfg.Network.List() {
		m.mu.Lock()
		e, ok := m.entries[nw.ID]
		m.mu.Unlock()
		if ok {
			if sb, _, gone := e.snapshot(); !gone && (sb.State == sandbox.Running || sb.State == sandbox.Pending) {
				continue
			}
		}
		m.log.Warn("tearing down network of a sandbox that does not run", "sandbox", nw.ID)
		dctx, cancel := driverContext(ctx)
		m.teardownNetwork(dctx, nw.ID)
		cancel()
	}
}
