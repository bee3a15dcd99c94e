package node

import (
	"context"
	"fmt"

	"github.com/paddock-dev/paddock/internal/netns"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// The node answers the proxy's lookups from its in-memory records.
//
// A sandbox's network is either one the node sets up on this host
// (Config.Network: a namespace the driver joins, egress enforced there, the
// veth's address recorded), or, for a driver that is a runtime.Addresser
// (Kubernetes: a Pod has the cluster's network), the driver's own: the
// node then sets up nothing, hands the egress policy to the driver
// (runtime.Spec.Egress; a change of it while the sandbox runs goes to the
// driver too, if it is a runtime.EgressUpdater) and records the address
// the driver gives. Either way the record's Address is where the proxies
// reach the sandbox's ports, and the rest of the node, the proxies and the
// control plane do not tell the two apart.

// ownNetwork reports whether d gives its sandboxes a network of its own.
func ownNetwork(d runtime.Driver) bool {
	_, ok := d.(runtime.Addresser)
	return ok
}

// requestNetworked reports whether the sandbox req asks for would have a
// network: this host's, or its runtime's own. The runtime is req's, else
// its snapshot's, else the default; one that cannot be resolved is left
// for create to refuse.
func (m *Manager) requestNetworked(req sandbox.CreateRequest) bool {
	if m.cfg.Network != nil {
		return true
	}
	rt := req.Runtime
	if rt == "" && req.Snapshot != "" {
		if store, err := m.snapshots(); err == nil {
			if snap, err := store.GetSnapshot(req.Snapshot); err == nil {
				rt = snap.Runtime
			}
		}
	}
	return ownNetwork(m.rt.of(rt))
}

// hostNetwork reports whether sb's network is one this host set up, whose
// veth counts its bytes.
func (m *Manager) hostNetwork(sb sandbox.Sandbox) bool {
	return m.cfg.Network != nil && sb.Address.IsValid() && !ownNetwork(m.driverOf(sb))
}

// recordAddress records the address a driver with a network of its own
// gives a sandbox that has just started.
func (m *Manager) recordAddress(ctx context.Context, e *entry, a runtime.Addresser, id string) error {
	addr, err := a.Address(ctx, id)
	if err != nil {
		return fmt.Errorf("address of the sandbox: %w", err)
	}
	m.update(e, func(sb *sandbox.Sandbox) { sb.Address = addr })
	return nil
}

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
	e, sb, unlock, err := m.lockRunning(ctx, id)
	if err != nil {
		return sb, err
	}
	defer unlock()
	if m.cfg.Network == nil && !ownNetwork(m.driverOf(sb)) {
		return sb, errNoNetwork
	}
	merged, err := mergePorts(&m.cfg, sb.Ports, ports)
	if err != nil {
		return sb, err
	}
	return m.update(e, func(sb *sandbox.Sandbox) { sb.Ports = merged }), nil
}

// UpdateNetworkPolicy replaces a running sandbox's egress policy; its
// processes keep running.
func (m *Manager) UpdateNetworkPolicy(ctx context.Context, id string, policy sandbox.NetworkPolicy) (sandbox.Sandbox, error) {
	policy = clonePolicy(policy)
	if err := netns.Policy(policy).Validate(); err != nil {
		return sandbox.Sandbox{}, err
	}
	e, sb, unlock, err := m.lockRunning(ctx, id)
	if err != nil {
		return sb, err
	}
	defer unlock()
	// The policy is enforced where it was at create: by this host's
	// network, or by a driver with a network of its own, which also keeps
	// it (a Pod's NetworkPolicy) for whoever runs the sandbox next.
	var apply func(context.Context) error
	switch drv := m.driverOf(sb); {
	case ownNetwork(drv):
		up, ok := drv.(runtime.EgressUpdater)
		if !ok {
			return sb, sandbox.Errorf(sandbox.ErrUnsupported, "network_policy_update_unsupported",
				"runtime %q cannot change a running sandbox's egress policy: create it with the policy it needs", drv.Capabilities().Name)
		}
		apply = func(ctx context.Context) error { return up.UpdateEgress(ctx, id, &policy) }
	case m.cfg.Network == nil:
		return sb, errNoNetwork
	default:
		apply = func(ctx context.Context) error { return m.cfg.Network.Update(ctx, id, netns.Policy(policy)) }
	}
	dctx, cancel := driverContext(ctx)
	defer cancel()
	if err := apply(dctx); err != nil {
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
