package netns

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"go4.org/netipx"

	"github.com/paddock-dev/paddock/internal/atomicfile"
	"github.com/paddock-dev/paddock/internal/dnsfilter"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
)

// Manager creates and removes sandbox networks on this host.
type Manager struct {
	cfg    Config
	log    *slog.Logger
	dir    string          // DataDir/netns: pins and state files
	tag    string          // instanceTag(DataDir), part of every host veth name
	hostNS *os.File        // the host-side namespace
	sameNS bool            // hostNS is paddock's own namespace: no setns needed
	host   *netlink.Handle // netlink socket in hostNS

	// static is Config.staticBlocked; blocked is static plus the host's
	// addresses, swapped whenever those change (see watchHost).
	static  *netipx.IPSet
	blocked atomic.Pointer[netipx.IPSet]
	// hostAddrs are the host-side addresses outside static, sorted: owned
	// by New, then by the watchHost goroutine.
	hostAddrs []netip.Addr
	// hostDumps counts address dumps that completed, dumpRetries the
	// interrupted ones retried: no sandbox's Setup dumps (see listHost).
	hostDumps, dumpRetries atomic.Int64
	// up forwards every resolver's queries; dnsSlots caps the queries all
	// resolvers have upstream at once.
	up       *dnsfilter.Upstream
	dnsSlots chan struct{}
	// stopWatch ends watchHost, which closes watchDone.
	stopWatch chan struct{}
	watchDone chan struct{}

	mu     sync.Mutex
	nets   map[string]*entry // guarded by mu
	slots  map[int]string    // guarded by mu: allocated /30 slot -> id
	next   int               // guarded by mu: where the next allocation starts
	closed bool              // guarded by mu
}

// entry is one sandbox network. Its own mutex serializes Setup, Update and
// Teardown of that sandbox; Manager.mu only guards the maps.
type entry struct {
	mu   sync.Mutex
	slot int
	gone bool // guarded by mu: torn down, or Setup failed
	net  Network
	ns   *os.File  // the pinned namespace, open for nftables
	res  *resolver // nil when the resolver could not start on re-adoption
}

// state is the small per-sandbox file next to the pin.
type state struct {
	Slot    int     `json:"slot"`
	Network Network `json:"network"`
}

// New opens the host-side namespace, applies Config.NAT there (programming
// or removing table ip paddock-nat), and re-adopts the networks pinned under
// DataDir by an earlier run (starting their resolvers again).
func New(cfg Config) (*Manager, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	static, err := cfg.staticBlocked()
	if err != nil {
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "netns: blocked ranges: %v", err)
	}
	m := &Manager{cfg: cfg, log: cfg.Logger, dir: filepath.Join(cfg.DataDir, "netns"), tag: instanceTag(cfg.DataDir),
		nets: map[string]*entry{}, slots: map[int]string{}, static: static,
		dnsSlots: make(chan struct{}, maxDNSInFlightTotal), stopWatch: make(chan struct{}), watchDone: make(chan struct{})}
	if err := os.MkdirAll(m.dir, 0o700); err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	self, err := openOwnNS()
	if err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	defer self.Close()
	if cfg.HostNS == "" {
		m.hostNS, err = openOwnNS()
	} else {
		m.hostNS, err = os.Open(cfg.HostNS)
	}
	if err != nil {
		return nil, fmt.Errorf("netns: open host namespace: %w", err)
	}
	if !isNSFS(m.hostNS) {
		m.hostNS.Close()
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "netns: %s is not a network namespace", cfg.HostNS)
	}
	m.sameNS = sameFile(self, m.hostNS)
	m.host, err = netlink.NewHandleAt(vnetns.NsHandle(m.hostNS.Fd()))
	if err != nil {
		m.hostNS.Close()
		return nil, fmt.Errorf("netns: netlink in host namespace: %w", err)
	}
	// Before readopt: a NAT failure should stop New before any resolver
	// starts. Close does not undo it: sandboxes outlive paddock's process.
	if err := m.applyNAT(); err != nil {
		m.host.Close()
		m.hostNS.Close()
		return nil, err
	}
	m.up = dnsfilter.NewUpstream(cfg.Upstream, m.inHost)
	// Subscribe before the first dump, so no address added in between is
	// missed; the watcher owns the subscription from here on.
	sub, err := m.subscribeHost()
	if err != nil {
		m.up.Close()
		m.host.Close()
		m.hostNS.Close()
		return nil, fmt.Errorf("netns: watch host addresses: %w", err)
	}
	if _, err := m.refreshHost(); err != nil {
		sub.stop()
		m.up.Close()
		m.host.Close()
		m.hostNS.Close()
		return nil, err
	}
	if err := m.readopt(); err != nil {
		sub.stop()
		close(m.watchDone) // no watcher to wait for
		m.Close()
		return nil, err
	}
	// After readopt, which fills m.nets alone; changes meanwhile wait in
	// the subscription.
	go m.watchHost(sub)
	return m, nil
}

// Close stops the resolvers and releases the Manager's handles. Networks
// stay, and so does the NAT table: sandboxes keep running across a paddock
// restart, their connections keep flowing, and the next New re-adopts them
// (and re-applies or removes the table, per its Config.NAT).
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	ents := make([]*entry, 0, len(m.nets))
	for _, e := range m.nets {
		ents = append(ents, e)
	}
	m.mu.Unlock()
	close(m.stopWatch)
	<-m.watchDone
	for _, e := range ents {
		e.mu.Lock()
		if e.res != nil {
			e.res.Close()
			e.res = nil
		}
		if e.ns != nil {
			e.ns.Close()
			e.ns = nil
		}
		e.mu.Unlock()
	}
	m.up.Close()
	m.host.Close()
	return m.hostNS.Close()
}

// Setup creates the network of sandbox id with the given egress policy.
func (m *Manager) Setup(ctx context.Context, id string, policy Policy) (*Network, error) {
	if !sandbox.ValidID(id) {
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_id", "invalid sandbox id %q", id)
	}
	if err := policy.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	e := &entry{}
	e.mu.Lock()
	defer e.mu.Unlock()
	m.mu.Lock()
	switch {
	case m.closed:
		m.mu.Unlock()
		return nil, sandbox.Errorf(sandbox.ErrUnavailable, "netns_closed", "netns: manager closed")
	case m.nets[id] != nil:
		m.mu.Unlock()
		return nil, sandbox.Errorf(sandbox.ErrConflict, "network_exists", "sandbox %s already has a network", id)
	}
	e.slot = m.allocLocked(id)
	if e.slot < 0 {
		m.mu.Unlock()
		return nil, sandbox.Errorf(sandbox.ErrExhausted, "address_pool_exhausted", "no free /30 left in %v", m.cfg.Pool)
	}
	m.nets[id] = e
	m.mu.Unlock()

	// From here on the work is not interrupted by ctx: half a network is
	// worse than a slow one; on failure everything made so far is undone.
	if err := m.setup(e, id, policy); err != nil {
		e.gone = true
		m.release(e, id)
		m.forget(id, e)
		return nil, fmt.Errorf("netns: setup %s: %w", id, err)
	}
	n := e.net
	return &n, nil
}

func (m *Manager) setup(e *entry, id string, policy Policy) error {
	hostAddr, sbAddr := slotAddrs(m.cfg.Pool, e.slot)
	e.net = Network{ID: id, NSPath: filepath.Join(m.dir, id), HostIf: hostIfName(m.tag, id),
		HostAddr: hostAddr, SandboxAddr: sbAddr, DNS: hostAddr, Policy: policy}
	if err := newPinnedNS(e.net.NSPath); err != nil {
		return err
	}
	ns, err := os.Open(e.net.NSPath)
	if err != nil {
		return err
	}
	e.ns = ns
	// The peer is created directly inside the sandbox's namespace, named
	// eth0 there: no rename, no moment where it sits in the host namespace.
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: e.net.HostIf}, PeerName: "eth0",
		PeerNamespace: netlink.NsFd(int(ns.Fd()))}
	if err := m.host.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %s: %w", e.net.HostIf, err)
	}
	hostLink, err := m.host.LinkByName(e.net.HostIf)
	if err != nil {
		return err
	}
	if err := m.host.AddrAdd(hostLink, addr30(hostAddr)); err != nil {
		return fmt.Errorf("address %s: %w", e.net.HostIf, err)
	}
	if err := m.host.LinkSetUp(hostLink); err != nil {
		return err
	}
	sb, err := netlink.NewHandleAt(vnetns.NsHandle(ns.Fd()))
	if err != nil {
		return err
	}
	defer sb.Close()
	for _, name := range []string{"lo", "eth0"} {
		l, err := sb.LinkByName(name)
		if err != nil {
			return err
		}
		if name == "eth0" {
			if err := sb.AddrAdd(l, addr30(sbAddr)); err != nil {
				return fmt.Errorf("address eth0: %w", err)
			}
		}
		if err := sb.LinkSetUp(l); err != nil {
			return fmt.Errorf("up %s: %w", name, err)
		}
		if name == "eth0" {
			if err := sb.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: hostAddr.AsSlice()}); err != nil {
				return fmt.Errorf("default route: %w", err)
			}
		}
	}
	if err := program(int(ns.Fd()), m.ruleInput(e.net.HostAddr, policy), true, false); err != nil {
		return err
	}
	if e.res, err = m.startResolver(id, hostAddr, int(ns.Fd()), policy); err != nil {
		return err
	}
	return m.writeState(e)
}

// Update replaces the egress policy of a running sandbox in one atomic
// nftables transaction; processes inside keep running.
func (m *Manager) Update(ctx context.Context, id string, policy Policy) error {
	if err := policy.Validate(); err != nil {
		return err
	}
	e, err := m.lookup(id)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.gone || e.ns == nil {
		return sandbox.Errorf(sandbox.ErrNotFound, "network_not_found", "sandbox %s has no network", id)
	}
	in := m.ruleInput(e.net.HostAddr, policy)
	old := e.net.Policy
	flushDNS := old.Mode != policy.Mode || !slices.Equal(old.AllowDomains, policy.AllowDomains)
	// Rules first, then the resolver: in between, the resolver may still
	// allow a name the new rules no longer want, and the flush below
	// happened before; the window is one netlink round trip.
	if err := program(int(e.ns.Fd()), in, false, flushDNS); err != nil {
		return fmt.Errorf("netns: update %s: %w", id, err)
	}
	if e.res != nil {
		e.res.setPolicy(policy)
	}
	e.net.Policy = policy
	if err := m.writeState(e); err != nil {
		return fmt.Errorf("netns: update %s: %w", id, err)
	}
	m.log.InfoContext(ctx, "netns: policy updated", "sandbox", id, "mode", policy.Mode)
	return nil
}

// Teardown removes the network of sandbox id. It is idempotent, and also
// cleans what a crashed run may have left for that id.
func (m *Manager) Teardown(ctx context.Context, id string) error {
	if !sandbox.ValidID(id) {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_id", "invalid sandbox id %q", id)
	}
	m.mu.Lock()
	e := m.nets[id]
	m.mu.Unlock()
	if e == nil {
		e = &entry{slot: -1, net: Network{ID: id, NSPath: filepath.Join(m.dir, id), HostIf: hostIfName(m.tag, id)}}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.gone = true
	err := m.release(e, id)
	m.forget(id, e)
	if err != nil {
		return fmt.Errorf("netns: teardown %s: %w", id, err)
	}
	m.log.DebugContext(ctx, "netns: torn down", "sandbox", id)
	return nil
}

// release undoes what setup made, tolerating parts that do not exist.
func (m *Manager) release(e *entry, id string) error {
	if e.res != nil {
		e.res.Close()
		e.res = nil
	}
	var errs []error
	// Deleting the host end deletes eth0 too.
	if l, err := m.host.LinkByName(hostIfName(m.tag, id)); err == nil {
		if err := m.host.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("delete veth: %w", err))
		}
	} else if !errors.As(err, new(netlink.LinkNotFoundError)) {
		errs = append(errs, err)
	}
	if e.ns != nil {
		e.ns.Close()
		e.ns = nil
	}
	if err := removePin(filepath.Join(m.dir, id)); err != nil {
		errs = append(errs, err)
	}
	if err := os.Remove(filepath.Join(m.dir, id+".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// forget drops id's entry and frees its slot, if e is still the entry.
func (m *Manager) forget(id string, e *entry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.nets[id] == e {
		delete(m.nets, id)
	}
	if e.slot >= 0 && m.slots[e.slot] == id {
		delete(m.slots, e.slot)
	}
}

// List returns the networks this Manager knows, for the node's reconcile.
func (m *Manager) List() []Network {
	m.mu.Lock()
	ents := make([]*entry, 0, len(m.nets))
	for _, e := range m.nets {
		ents = append(ents, e)
	}
	m.mu.Unlock()
	out := make([]Network, 0, len(ents))
	for _, e := range ents {
		e.mu.Lock()
		if !e.gone && e.net.ID != "" {
			out = append(out, e.net)
		}
		e.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b Network) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Stats returns the bytes the sandbox received and sent, read from the host
// end of its veth (whose rx is the sandbox's tx).
func (m *Manager) Stats(id string) (rxBytes, txBytes uint64, err error) {
	if _, err := m.lookup(id); err != nil {
		return 0, 0, err
	}
	l, err := m.host.LinkByName(hostIfName(m.tag, id))
	if err != nil {
		return 0, 0, fmt.Errorf("netns: stats %s: %w", id, err)
	}
	s := l.Attrs().Statistics
	if s == nil {
		return 0, 0, fmt.Errorf("netns: stats %s: kernel sent no statistics", id)
	}
	return s.TxBytes, s.RxBytes, nil
}

func (m *Manager) lookup(id string) (*entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.nets[id]; e != nil {
		return e, nil
	}
	return nil, sandbox.Errorf(sandbox.ErrNotFound, "network_not_found", "sandbox %s has no network", id)
}

// allocLocked takes the next free slot after the last one handed out, so a
// just-freed address is not reused at once (stale conntrack entries, ARP
// caches and late packets of the previous sandbox die out first).
func (m *Manager) allocLocked(id string) int {
	n := poolSlots(m.cfg.Pool)
	for i := range n {
		s := (m.next + i) % n
		if _, used := m.slots[s]; !used {
			m.slots[s] = id
			m.next = (s + 1) % n
			return s
		}
	}
	return -1
}

// ruleInput is what the rules of a sandbox with policy p are made of now.
func (m *Manager) ruleInput(hostAddr netip.Addr, p Policy) ruleInput {
	return ruleInput{policy: p, hostAddr: hostAddr, blocked: m.blocked.Load()}
}

// reprogram replaces the rules of e's namespace with what its policy and
// the current blocked ranges make; the resolved addresses stay. Used on
// re-adoption (the configuration or the host may have changed while paddock
// was down) and when the host's addresses change. e.mu is held.
func (m *Manager) reprogram(e *entry) error {
	in := m.ruleInput(e.net.HostAddr, e.net.Policy)
	err := program(int(e.ns.Fd()), in, false, false)
	if err != nil {
		// No table at all (a crash between the namespace and its rules):
		// install it whole.
		if err2 := program(int(e.ns.Fd()), in, true, false); err2 == nil {
			return nil
		}
	}
	return err
}

func (m *Manager) writeState(e *entry) error {
	b, err := json.Marshal(state{Slot: e.slot, Network: e.net})
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(m.dir, e.net.ID+".json"), b, 0o600)
}

// readopt rebuilds the Manager's view from DataDir: each live pin is a
// network (its state file says its slot and policy; without one, eth0's
// address says the slot and the policy is unknown, reported as deny-all
// until updated — the rules in the namespace are left as they are). Leftovers
// of a crash are removed: empty pins, state files without a pin, and host
// veths named like ours that belong to no pin.
func (m *Manager) readopt() error {
	des, err := os.ReadDir(m.dir)
	if err != nil {
		return fmt.Errorf("netns: %w", err)
	}
	for _, de := range des {
		name := de.Name()
		switch {
		case strings.HasPrefix(name, "."):
			// An atomicfile temp left by a crash: the state it was
			// replacing, if any, is intact.
			os.Remove(filepath.Join(m.dir, name))
		case strings.HasSuffix(name, ".json"):
			id := strings.TrimSuffix(name, ".json")
			if _, err := os.Stat(filepath.Join(m.dir, id)); errors.Is(err, os.ErrNotExist) {
				m.log.Warn("netns: removing stale network state", "sandbox", id)
				if err := m.release(&entry{}, id); err != nil {
					m.log.Warn("netns: cleanup", "sandbox", id, "err", err)
				}
			}
		case sandbox.ValidID(name):
			if err := m.adopt(name); err != nil {
				m.log.Warn("netns: dropping unusable network", "sandbox", name, "err", err)
				if err := m.release(&entry{}, name); err != nil {
					m.log.Warn("netns: cleanup", "sandbox", name, "err", err)
				}
			}
		}
	}
	links, err := m.host.LinkList()
	if err != nil {
		return fmt.Errorf("netns: list host links: %w", err)
	}
	known := map[string]bool{}
	for id := range m.nets {
		known[hostIfName(m.tag, id)] = true
	}
	for _, l := range links {
		if _, ok := l.(*netlink.Veth); ok && isOurIfName(m.tag, l.Attrs().Name) && !known[l.Attrs().Name] {
			m.log.Warn("netns: removing orphan veth", "if", l.Attrs().Name)
			if err := m.host.LinkDel(l); err != nil {
				m.log.Warn("netns: remove orphan veth", "if", l.Attrs().Name, "err", err)
			}
		}
	}
	return nil
}

func (m *Manager) adopt(id string) error {
	pin := filepath.Join(m.dir, id)
	ns, err := os.Open(pin)
	if err != nil {
		return err
	}
	if !isNSFS(ns) {
		ns.Close()
		return errors.New("pin is not a namespace")
	}
	e := &entry{slot: -1, ns: ns}
	if b, err := os.ReadFile(pin + ".json"); err == nil {
		var st state
		if err := json.Unmarshal(b, &st); err == nil && st.Network.ID == id {
			e.slot, e.net = st.Slot, st.Network
		}
	}
	if e.slot < 0 {
		e.net, e.slot, err = m.probe(id, ns)
		if err != nil {
			ns.Close()
			return err
		}
	}
	if e.slot < 0 || e.slot >= poolSlots(m.cfg.Pool) || m.slots[e.slot] != "" {
		ns.Close()
		return fmt.Errorf("address slot %d unusable (pool changed?)", e.slot)
	}
	e.net.NSPath = pin
	// The rules as this configuration makes them: BlockCIDRs, AllowPrivate
	// or the host's addresses may have changed while paddock was down. A
	// network whose state file was lost is reported deny-all, and now
	// enforced so, until its policy is set again.
	if err := m.reprogram(e); err != nil {
		ns.Close()
		return fmt.Errorf("rules: %w", err)
	}
	m.slots[e.slot] = id
	m.nets[id] = e
	if e.res, err = m.startResolver(id, e.net.HostAddr, int(ns.Fd()), e.net.Policy); err != nil {
		// Keep the network listed so the node's reconcile decides; its
		// lookups fail until it is recreated.
		m.log.Warn("netns: resolver not restarted", "sandbox", id, "err", err)
	}
	return nil
}

// probe reads a network back from its namespace when its state file is gone.
func (m *Manager) probe(id string, ns *os.File) (Network, int, error) {
	sb, err := netlink.NewHandleAt(vnetns.NsHandle(ns.Fd()))
	if err != nil {
		return Network{}, -1, err
	}
	defer sb.Close()
	l, err := sb.LinkByName("eth0")
	if err != nil {
		return Network{}, -1, err
	}
	addrs, err := sb.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return Network{}, -1, err
	}
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.IP.To4())
		if slot := slotOf(m.cfg.Pool, ip); slot >= 0 {
			host, sbAddr := slotAddrs(m.cfg.Pool, slot)
			return Network{ID: id, HostIf: hostIfName(m.tag, id), HostAddr: host, SandboxAddr: sbAddr, DNS: host,
				Policy: Policy{Mode: ModeDenyAll}}, slot, nil
		}
	}
	return Network{}, -1, errors.New("eth0 has no address in the pool")
}

func addr30(a netip.Addr) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(30, 32)}}
}

// inHost runs fn with sockets it creates landing in the host-side namespace.
func (m *Manager) inHost(fn func() error) error {
	if m.sameNS {
		return fn()
	}
	return inNS(int(m.hostNS.Fd()), fn)
}
