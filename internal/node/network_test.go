package node

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/netns"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// fakeNetwork keeps networks in a map and records every call.
type fakeNetwork struct {
	mu       sync.Mutex // guards the fields below
	nets     map[string]netns.Network
	calls    []string
	next     byte
	setupErr error
}

var _ Network = (*fakeNetwork)(nil)

func newFakeNetwork() *fakeNetwork { return &fakeNetwork{nets: map[string]netns.Network{}} }

func (f *fakeNetwork) Setup(_ context.Context, id string, p netns.Policy) (*netns.Network, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "setup "+id)
	if f.setupErr != nil {
		return nil, f.setupErr
	}
	f.next += 4
	nw := netns.Network{ID: id, NSPath: "/fake/" + id, HostAddr: netip.AddrFrom4([4]byte{10, 9, 0, f.next + 1}),
		SandboxAddr: netip.AddrFrom4([4]byte{10, 9, 0, f.next + 2}), DNS: netip.AddrFrom4([4]byte{10, 9, 0, f.next + 1}), Policy: p}
	f.nets[id] = nw
	return &nw, nil
}

func (f *fakeNetwork) Update(_ context.Context, id string, p netns.Policy) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "update "+id)
	nw, ok := f.nets[id]
	if !ok {
		return sandbox.ErrNotFound
	}
	nw.Policy = p
	f.nets[id] = nw
	return nil
}

func (f *fakeNetwork) Teardown(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "teardown "+id)
	delete(f.nets, id)
	return nil
}

func (f *fakeNetwork) Stats(id string) (uint64, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.nets[id]; !ok {
		return 0, 0, sandbox.ErrNotFound
	}
	return 10, 20, nil
}

func (f *fakeNetwork) List() []netns.Network {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []netns.Network
	for _, n := range f.nets {
		out = append(out, n)
	}
	return out
}

func (f *fakeNetwork) has(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.nets[id]
	return ok
}

func TestNetworkLifecycle(t *testing.T) {
	fn := newFakeNetwork()
	e := newEnv(t, func(c *Config) { c.Network = fn })
	sb, err := e.m.Create(t.Context(), sandbox.CreateRequest{Ports: []sandbox.Port{{Port: 3000}, {Port: 80, Public: true}}})
	if err != nil {
		t.Fatal(err)
	}
	if !sb.Address.IsValid() || sb.NetworkPolicy == nil || sb.NetworkPolicy.Mode != netns.ModeAllowAll {
		t.Errorf("record %+v: want an address and the allow-all default", sb)
	}
	if want := []sandbox.Port{{Port: 80, Public: true}, {Port: 3000}}; !slices.Equal(sb.Ports, want) {
		t.Errorf("ports %v, want %v", sb.Ports, want)
	}
	if got, err := e.m.Get(t.Context(), sb.ID); err != nil || got.State != sandbox.Running || got.Address != sb.Address || len(got.Ports) != 2 {
		t.Errorf("Get = %+v, %v", got, err)
	}
	st, err := e.m.Stats(t.Context(), sb.ID)
	if err != nil || st.NetworkRxBytes != 10 || st.NetworkTxBytes != 20 {
		t.Errorf("Stats = %+v, %v", st, err)
	}

	sb, err = e.m.AddPorts(t.Context(), sb.ID, []sandbox.Port{{Port: 8080}})
	if err != nil || len(sb.Ports) != 3 {
		t.Errorf("AddPorts = %v, %v", sb.Ports, err)
	}
	_, err = e.m.AddPorts(t.Context(), sb.ID, []sandbox.Port{{Port: 8080}})
	wantErr(t, err, sandbox.ErrInvalid, "duplicate_port")

	deny := sandbox.NetworkPolicy{Mode: netns.ModeDenyAll}
	sb, err = e.m.UpdateNetworkPolicy(t.Context(), sb.ID, deny)
	if err != nil || sb.NetworkPolicy.Mode != netns.ModeDenyAll || fn.List()[0].Policy.Mode != netns.ModeDenyAll {
		t.Errorf("UpdateNetworkPolicy = %+v, %v", sb.NetworkPolicy, err)
	}
	_, err = e.m.UpdateNetworkPolicy(t.Context(), sb.ID, sandbox.NetworkPolicy{Mode: "open"})
	wantErr(t, err, sandbox.ErrInvalid, "invalid_policy")

	if _, err := e.m.Stop(t.Context(), sb.ID); err != nil {
		t.Fatal(err)
	}
	if fn.has(sb.ID) {
		t.Error("network left after stop")
	}
	if got, _ := e.m.Get(t.Context(), sb.ID); got.State == sandbox.Running {
		t.Error("a stopped sandbox is still running")
	}

	other := e.create(t)
	if err := e.m.Delete(t.Context(), other.ID); err != nil {
		t.Fatal(err)
	}
	if fn.has(other.ID) {
		t.Error("network left after delete")
	}
}

func TestNetworkCreateFailures(t *testing.T) {
	fn := newFakeNetwork()
	e := newEnv(t, func(c *Config) { c.Network = fn; c.MaxPorts = 2 })
	for _, tc := range []struct {
		name string
		req  sandbox.CreateRequest
		code string
	}{
		{"port zero", sandbox.CreateRequest{Ports: []sandbox.Port{{Port: 0}}}, "invalid_port"},
		{"port too big", sandbox.CreateRequest{Ports: []sandbox.Port{{Port: 65536}}}, "invalid_port"},
		{"duplicate", sandbox.CreateRequest{Ports: []sandbox.Port{{Port: 1}, {Port: 1}}}, "duplicate_port"},
		{"too many", sandbox.CreateRequest{Ports: []sandbox.Port{{Port: 1}, {Port: 2}, {Port: 3}}}, "too_many_ports"},
		{"bad policy", sandbox.CreateRequest{NetworkPolicy: &sandbox.NetworkPolicy{Mode: "allow-all", AllowDomains: []string{"x.test"}}}, "invalid_policy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.m.Create(t.Context(), tc.req)
			wantErr(t, err, sandbox.ErrInvalid, tc.code)
		})
	}

	// A driver failure tears the network down.
	e.d.SetCreateErr(errors.New("no rootfs"))
	sb, err := e.m.Create(t.Context(), sandbox.CreateRequest{})
	if err == nil || sb.State != sandbox.Failed {
		t.Fatalf("Create = %s, %v; want failed", sb.State, err)
	}
	if fn.has(sb.ID) {
		t.Error("network left after a failed create")
	}
	e.d.SetCreateErr(nil)

	// So does a failed Setup, and the driver is never asked.
	fn.mu.Lock()
	fn.setupErr = errors.New("pool exhausted")
	fn.mu.Unlock()
	sb, err = e.m.Create(t.Context(), sandbox.CreateRequest{})
	if err == nil || sb.State != sandbox.Failed || e.d.Called("create", sb.ID) {
		t.Errorf("Create with a failing Setup = %s, %v", sb.State, err)
	}
}

func TestNoNetworkRefusesPorts(t *testing.T) {
	e := newEnv(t, nil)
	_, err := e.m.Create(t.Context(), sandbox.CreateRequest{Ports: []sandbox.Port{{Port: 3000}}})
	wantErr(t, err, sandbox.ErrUnsupported, "network_disabled")
	sb := e.create(t)
	if sb.Address.IsValid() || sb.NetworkPolicy != nil {
		t.Errorf("loopback-only sandbox has network fields: %+v", sb)
	}
	_, err = e.m.AddPorts(t.Context(), sb.ID, []sandbox.Port{{Port: 3000}})
	wantErr(t, err, sandbox.ErrUnsupported, "network_disabled")
}

// addressedDriver is a driver whose sandboxes have a network of their own,
// as a Pod has on Kubernetes: it gives each the address addr.
type addressedDriver struct {
	*fake.Driver
	addr netip.Addr
}

var _ runtime.Addresser = addressedDriver{}

func (d addressedDriver) Address(_ context.Context, id string) (netip.Addr, error) {
	if running, known := d.Running(id); !known || !running {
		return netip.Addr{}, sandbox.Errorf(sandbox.ErrNotRunning, "not_running", "%s is not running", id)
	}
	return d.addr, nil
}

// TestDriverNetwork: a driver with a network of its own (an Addresser)
// gets ports and egress policies on a node without host networking, and
// one beside host networking too: the node sets nothing up on the host,
// hands the policy to the driver (the same default as on the host) and
// records the driver's address for the proxies. A policy change is refused
// rather than faked; the host-network driver keeps its own path.
func TestDriverNetwork(t *testing.T) {
	for _, tc := range []struct {
		name    string
		network bool
	}{{"no host network", false}, {"beside host networking", true}} {
		t.Run(tc.name, func(t *testing.T) {
			addr := netip.MustParseAddr("10.88.0.7")
			pods := addressedDriver{Driver: fake.NewDriver(t, fake.DriverConfig{Name: "kubernetes"}), addr: addr}
			fn := newFakeNetwork()
			e := newEnv(t, func(c *Config) {
				c.Driver, c.Drivers = pods, nil
				if tc.network {
					c.Network = fn
				}
			})
			ctx := t.Context()
			policy := sandbox.NetworkPolicy{Mode: netns.ModeCustom, AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}}
			sb, err := e.m.Create(ctx, sandbox.CreateRequest{Ports: []sandbox.Port{{Port: 3000}}, NetworkPolicy: &policy})
			if err != nil {
				t.Fatal(err)
			}
			if sb.Address != addr {
				t.Errorf("address %v, want the driver's %v", sb.Address, addr)
			}
			spec := pods.Spec(sb.ID)
			if spec.Network != nil || spec.Egress == nil || spec.Egress.Mode != netns.ModeCustom || len(spec.Egress.AllowCIDRs) != 1 {
				t.Errorf("spec network %+v, egress %+v: want no host network and the policy", spec.Network, spec.Egress)
			}
			if fn.has(sb.ID) {
				t.Error("a host network was set up for a sandbox with its own")
			}
			plain, err := e.m.Create(ctx, sandbox.CreateRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if p := pods.Spec(plain.ID).Egress; p == nil || p.Mode != DefaultNetworkPolicy.Mode {
				t.Errorf("default egress %+v, want %+v", p, DefaultNetworkPolicy)
			}
			if sb, err = e.m.AddPorts(ctx, sb.ID, []sandbox.Port{{Port: 8080}}); err != nil || len(sb.Ports) != 2 {
				t.Errorf("AddPorts = %+v, %v", sb.Ports, err)
			}
			_, err = e.m.UpdateNetworkPolicy(ctx, sb.ID, sandbox.NetworkPolicy{Mode: netns.ModeDenyAll})
			wantErr(t, err, sandbox.ErrUnsupported, "network_policy_update_unsupported")
			if _, err := e.m.Stats(ctx, sb.ID); err != nil {
				t.Errorf("Stats: %v", err)
			}
		})
	}
}

// egressDriver is an addressedDriver that also changes a running
// sandbox's egress itself (a runtime.EgressUpdater), refusing domains as
// the Kubernetes driver does.
type egressDriver struct {
	addressedDriver
	mu       sync.Mutex                        // guards policies
	policies map[string]*sandbox.NetworkPolicy // the policy each sandbox's update last set
}

var _ runtime.EgressUpdater = (*egressDriver)(nil)

func (d *egressDriver) UpdateEgress(_ context.Context, id string, p *sandbox.NetworkPolicy) error {
	if _, known := d.Running(id); !known {
		return sandbox.Errorf(sandbox.ErrNotFound, "not_found", "%s not found", id)
	}
	if p != nil && len(p.AllowDomains) > 0 {
		return sandbox.Errorf(sandbox.ErrUnsupported, "no_domain_policy", "no domains")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.policies[id] = p
	return nil
}

func (d *egressDriver) policy(id string) *sandbox.NetworkPolicy {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.policies[id]
}

// TestDriverEgressUpdate: with a driver that is an EgressUpdater, a
// running sandbox's policy change goes to the driver (never to this
// host's network, even beside one), after the node's own validation, and
// is recorded, across a restart; the driver's refusal changes nothing.
// Its Stats' network bytes stand: the host's veth figure is not for it.
func TestDriverEgressUpdate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		network bool
	}{{"no host network", false}, {"beside host networking", true}} {
		t.Run(tc.name, func(t *testing.T) {
			pods := &egressDriver{addressedDriver: addressedDriver{Driver: fake.NewDriver(t, fake.DriverConfig{Name: "kubernetes"}),
				addr: netip.MustParseAddr("10.88.0.7")}, policies: map[string]*sandbox.NetworkPolicy{}}
			fn := newFakeNetwork()
			mod := func(c *Config) {
				c.Driver, c.Drivers = pods, nil
				if tc.network {
					c.Network = fn
				}
			}
			e := newEnv(t, mod)
			ctx := t.Context()
			custom := sandbox.NetworkPolicy{Mode: netns.ModeCustom, AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}}
			sb, err := e.m.Create(ctx, sandbox.CreateRequest{NetworkPolicy: &custom})
			if err != nil {
				t.Fatal(err)
			}
			pods.SetStats(runtime.Stats{NetworkRxBytes: 1000, NetworkTxBytes: 2000})
			if st, err := e.m.Stats(ctx, sb.ID); err != nil || st.NetworkRxBytes != 1000 || st.NetworkTxBytes != 2000 {
				t.Errorf("Stats = %+v, %v; want the driver's network bytes", st, err)
			}

			deny := sandbox.NetworkPolicy{Mode: netns.ModeDenyAll}
			got, err := e.m.UpdateNetworkPolicy(ctx, sb.ID, deny)
			if err != nil || got.NetworkPolicy == nil || got.NetworkPolicy.Mode != netns.ModeDenyAll {
				t.Fatalf("UpdateNetworkPolicy = %+v, %v", got.NetworkPolicy, err)
			}
			if p := pods.policy(sb.ID); p == nil || p.Mode != netns.ModeDenyAll {
				t.Errorf("the driver's policy %+v, want deny-all", p)
			}
			fn.mu.Lock()
			if slices.Contains(fn.calls, "update "+sb.ID) {
				t.Error("the host network was asked to update a driver's sandbox")
			}
			fn.mu.Unlock()
			_, err = e.m.UpdateNetworkPolicy(ctx, sb.ID, sandbox.NetworkPolicy{Mode: netns.ModeCustom, AllowDomains: []string{"example.com"}})
			wantErr(t, err, sandbox.ErrUnsupported, "no_domain_policy")
			_, err = e.m.UpdateNetworkPolicy(ctx, sb.ID, sandbox.NetworkPolicy{Mode: "open"})
			wantErr(t, err, sandbox.ErrInvalid, "invalid_policy")
			if p := pods.policy(sb.ID); p == nil || p.Mode != netns.ModeDenyAll {
				t.Errorf("the driver's policy after refused updates: %+v, want deny-all", p)
			}
			if got := e.get(t, sb.ID); got.NetworkPolicy == nil || got.NetworkPolicy.Mode != netns.ModeDenyAll {
				t.Errorf("the record's policy after refused updates: %+v, want deny-all", got.NetworkPolicy)
			}

			e.m.Close()
			m := e.manager(t, mod)
			if got, err := m.Get(ctx, sb.ID); err != nil || got.NetworkPolicy == nil || got.NetworkPolicy.Mode != netns.ModeDenyAll {
				t.Errorf("after a restart: %+v, %v; want the updated policy", got.NetworkPolicy, err)
			}
			if _, err := m.Stop(ctx, sb.ID); err != nil {
				t.Fatal(err)
			}
			_, err = m.UpdateNetworkPolicy(ctx, sb.ID, custom)
			wantErr(t, err, sandbox.ErrNotRunning, "")
		})
	}
}

func TestReconcileTearsDownStrayNetworks(t *testing.T) {
	fn := newFakeNetwork()
	e := newEnv(t, func(c *Config) { c.Network = fn })
	kept := e.create(t)
	if _, err := fn.Setup(t.Context(), "sb-orphan", netns.Policy{Mode: netns.ModeAllowAll}); err != nil {
		t.Fatal(err)
	}
	e.m.Close()
	e.manager(t, func(c *Config) { c.Network = fn })
	if fn.has("sb-orphan") {
		t.Error("network without a record survived reconcile")
	}
	if !fn.has(kept.ID) {
		t.Error("network of a re-adopted sandbox was torn down")
	}
}
