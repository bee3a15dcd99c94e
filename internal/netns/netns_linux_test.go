package netns

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Test topology, all inside namespaces the test creates (never the real
// host's): a "host" namespace playing paddock's host side (ip_forward=1
// there only) and a "fake internet" namespace behind it, joined by a veth.
// Addresses come from TEST-NET-2 and exist only in those namespaces; the
// host namespace has no default route, so nothing can leave them.
var (
	tnHost     = netip.MustParseAddr("198.51.100.1")    // host namespace's uplink
	tnInet     = netip.MustParseAddr("198.51.100.2")    // fake internet: DNS + HTTP
	tnAllowed  = netip.MustParseAddr("198.51.100.10")   // allowed.test
	tnBlocked  = netip.MustParseAddr("198.51.100.20")   // blocked.test
	tnCIDR     = netip.MustParseAddr("198.51.100.30")   // only reachable by CIDR
	tnMetadata = netip.MustParseAddr("169.254.169.254") // fake cloud metadata, in the fake internet
	// Addresses of networks that are not the internet, behind the fake
	// internet too: a LAN, a carrier-grade NAT / VPN range, and Alibaba's
	// metadata service inside that range.
	tnPrivate = netip.MustParseAddr("10.99.0.10")
	tnCarrier = netip.MustParseAddr("100.64.0.10")
	tnAlibaba = netip.MustParseAddr("100.100.100.200")
	// tnPrivateNets are routed from the host namespace to the fake internet.
	tnPrivateNets = []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24"), netip.MustParsePrefix("100.64.0.0/10")}
)

const (
	// A refused connect costs the whole timeout, so it is short; one that
	// should work gets longer, so a kernel busy destroying namespaces from
	// earlier tests does not read as a policy failure.
	denyTimeout   = 300 * time.Millisecond
	allowTimeout  = 3 * time.Second
	hostPort      = 8080 // a listener on every address of the host namespace
	inetPort      = 80
	sandboxPort   = 8080
	loopbackPort  = 9090
	fakeTTLSecond = 60
)

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, veths and nftables rules")
	}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		t.Skip("needs network namespaces: ", err)
	}
}

type testbed struct {
	dir     string
	hostPin string
	m       *Manager
	cfg     Config
	// slow holds the fake internet's answers to slow.test until closed
	// (release).
	slow        chan struct{}
	releaseOnce sync.Once
}

// release lets the fake internet answer the slow.test queries it holds.
func (tb *testbed) release() { tb.releaseOnce.Do(func() { close(tb.slow) }) }

// newTestbed builds the topology and a Manager whose host side is the test's
// host namespace.
func newTestbed(t testing.TB) *testbed {
	t.Helper()
	requireRoot(t)
	dir := t.TempDir()
	tb := &testbed{dir: dir, hostPin: filepath.Join(dir, "host"), slow: make(chan struct{})}
	checkRealHostUntouched(t, instanceTag(filepath.Join(dir, "data")))
	inetPin := filepath.Join(dir, "inet")
	for _, pin := range []string{tb.hostPin, inetPin} {
		if err := newPinnedNS(pin); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { removePin(pin) })
	}
	hostNS, inetNS := openNS(t, tb.hostPin), openNS(t, inetPin)
	hh, ih := handleAt(t, hostNS), handleAt(t, inetNS)

	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(hh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "uplink"}, PeerName: "eth0",
		PeerNamespace: netlink.NsFd(int(inetNS.Fd()))}))
	for _, side := range []struct {
		h    *netlink.Handle
		dev  string
		addr netip.Addr
	}{{hh, "uplink", tnHost}, {ih, "eth0", tnInet}} {
		l, err := side.h.LinkByName(side.dev)
		must(err)
		must(side.h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: side.addr.AsSlice(), Mask: net.CIDRMask(24, 32)}}))
		must(side.h.LinkSetUp(l))
		lo, err := side.h.LinkByName("lo")
		must(err)
		must(side.h.LinkSetUp(lo))
	}
	ilo, err := ih.LinkByName("lo")
	must(err)
	for _, a := range []netip.Addr{tnAllowed, tnBlocked, tnCIDR, tnMetadata, tnPrivate, tnCarrier, tnAlibaba} {
		must(ih.AddrAdd(ilo, &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}}))
	}
	// The fake internet routes the pool back through the host namespace;
	// the host namespace routes the fake metadata address to it.
	ieth, err := ih.LinkByName("eth0")
	must(err)
	must(ih.RouteAdd(&netlink.Route{LinkIndex: ieth.Attrs().Index, Dst: prefixNet(DefaultPool), Gw: tnHost.AsSlice()}))
	up, err := hh.LinkByName("uplink")
	must(err)
	must(hh.RouteAdd(&netlink.Route{LinkIndex: up.Attrs().Index, Dst: prefixNet(netip.PrefixFrom(tnMetadata, 32)), Gw: tnInet.AsSlice()}))
	for _, p := range tnPrivateNets {
		must(hh.RouteAdd(&netlink.Route{LinkIndex: up.Attrs().Index, Dst: prefixNet(p), Gw: tnInet.AsSlice()}))
	}
	// ip_forward is per namespace: this sets it in the test's host
	// namespace only (checkRealHostUntouched verifies that).
	must(inNS(int(hostNS.Fd()), func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	}))

	startFakeDNS(t, inetNS, tb.slow, tb.release)
	for _, a := range []netip.Addr{tnInet, tnAllowed, tnBlocked, tnCIDR, tnMetadata, tnPrivate, tnCarrier, tnAlibaba} {
		serveTCP(t, inetNS, netip.AddrPortFrom(a, inetPort))
	}
	serveTCP(t, hostNS, netip.AddrPortFrom(netip.IPv4Unspecified(), hostPort))

	tb.cfg = Config{
		DataDir:  filepath.Join(dir, "data"),
		HostNS:   tb.hostPin,
		Upstream: []netip.AddrPort{netip.AddrPortFrom(tnInet, 53)},
		Logger:   slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	tb.m = tb.newManager(t)
	return tb
}

func (tb *testbed) newManager(t testing.TB) *Manager {
	t.Helper()
	m, err := New(tb.cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, n := range m.List() {
			m.Teardown(context.Background(), n.ID)
		}
		m.Close()
	})
	return m
}

func (tb *testbed) setup(t testing.TB, id string, p Policy) *Network {
	t.Helper()
	n, err := tb.m.Setup(t.Context(), id, p)
	if err != nil {
		t.Fatalf("Setup(%s): %v", id, err)
	}
	t.Cleanup(func() { tb.m.Teardown(context.Background(), id) })
	return n
}

// checkRealHostUntouched records the real namespace's forwarding setting
// and nftables tables and checks at the end that they are unchanged and
// that no veth of this test (instance tag tag) appeared there. Veths of
// other instances are not ours to judge: a paddock server or another
// package's tests may be running on this machine at the same time.
func checkRealHostUntouched(t testing.TB, tag string) {
	t.Helper()
	before, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	had := map[string]bool{}
	links, _ := netlink.LinkList()
	for _, l := range links {
		had[l.Attrs().Name] = true
	}
	tablesBefore := realHostTables(t)
	t.Cleanup(func() {
		after, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
		if string(after) != string(before) {
			t.Errorf("real host ip_forward changed: %q -> %q", before, after)
		}
		if tablesAfter := realHostTables(t); !slices.Equal(tablesAfter, tablesBefore) {
			t.Errorf("real host nftables tables changed: %v -> %v", tablesBefore, tablesAfter)
		}
		links, _ := netlink.LinkList()
		for _, l := range links {
			if name := l.Attrs().Name; !had[name] && (isOurIfName(tag, name) || name == "uplink") {
				t.Errorf("link %s appeared in the real host namespace", name)
			}
		}
	})
}

// realHostTables lists the nftables tables of the test process's own
// namespace (the real host's), read-only, as sorted "family name" strings.
// Unlocked goroutines run there: inNS threads are restored or destroyed.
func realHostTables(t testing.TB) []string {
	t.Helper()
	c, err := nftables.New()
	if err == nil {
		var tables []*nftables.Table
		if tables, err = c.ListTables(); err == nil {
			out := make([]string, 0, len(tables))
			for _, tb := range tables {
				out = append(out, fmt.Sprintf("%d %s", tb.Family, tb.Name))
			}
			slices.Sort(out)
			return out
		}
	}
	t.Errorf("list the real host's nftables tables: %v", err)
	return nil
}

func openNS(t testing.TB, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func handleAt(t testing.TB, ns *os.File) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(vnetns.NsHandle(ns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// startFakeDNS answers in the fake internet: allowed.test (and www.),
// blocked.test, metadata.test, lan.test (a private address), cname-lan.test
// (a CNAME to lan.test, with its address, as resolvers answer), mixed.test
// (a private and a public address) and slow.test (held until slow closes);
// anything else is NXDOMAIN. release runs before the server shuts down.
func startFakeDNS(t testing.TB, ns *os.File, slow <-chan struct{}, release func()) {
	t.Helper()
	records := map[string][]netip.Addr{
		"allowed.test.": {tnAllowed}, "www.allowed.test.": {tnAllowed},
		"blocked.test.": {tnBlocked}, "metadata.test.": {tnMetadata},
		"lan.test.": {tnPrivate}, "mixed.test.": {tnPrivate, tnAllowed}, "slow.test.": {tnAllowed},
	}
	a := func(name string, ip netip.Addr) dns.RR {
		return &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: fakeTTLSecond}, A: ip.AsSlice()}
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		q := req.Question[0]
		name := strings.ToLower(q.Name)
		if name == "slow.test." {
			<-slow
		}
		ips, ok := records[name]
		switch {
		case name == "cname-lan.test." && q.Qtype == dns.TypeA:
			m.Answer = append(m.Answer, &dns.CNAME{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeCNAME,
				Class: dns.ClassINET, Ttl: fakeTTLSecond}, Target: "lan.test."}, a("lan.test.", tnPrivate))
		case !ok:
			m.Rcode = dns.RcodeNameError
		case q.Qtype == dns.TypeA:
			for _, ip := range ips {
				m.Answer = append(m.Answer, a(q.Name, ip))
			}
		}
		w.WriteMsg(m)
	})
	var pc net.PacketConn
	if err := inNS(int(ns.Fd()), func() (err error) {
		pc, err = net.ListenPacket("udp4", netip.AddrPortFrom(tnInet, 53).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: func() { close(started) }}
	done := make(chan struct{})
	go func() { defer close(done); srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { release(); srv.Shutdown(); <-done })
}

// serveTCP listens in ns on ap and answers every connection with
// "ok <local address> from <remote address>\n": the remote part shows
// whether NAT rewrote the client's source.
func serveTCP(t testing.TB, ns *os.File, ap netip.AddrPort) {
	t.Helper()
	var ln net.Listener
	if err := inNS(int(ns.Fd()), func() (err error) {
		ln, err = net.Listen("tcp4", ap.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(2 * time.Second))
				fmt.Fprintf(c, "ok %s from %s\n", c.LocalAddr(), c.RemoteAddr())
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
}

// dialOK connects to addr from the calling thread's namespace and expects
// the test listeners' greeting.
func dialOK(addr string, timeout time.Duration) error {
	_, err := dialPeer(addr, timeout)
	return err
}

// dialPeer is dialOK returning the client address the listener saw.
func dialPeer(addr string, timeout time.Duration) (netip.AddrPort, error) {
	c, err := net.DialTimeout("tcp4", addr, timeout)
	if err != nil {
		return netip.AddrPort{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return netip.AddrPort{}, err
	}
	_, peer, ok := strings.Cut(strings.TrimSpace(line), " from ")
	if !strings.HasPrefix(line, "ok ") || !ok {
		return netip.AddrPort{}, fmt.Errorf("unexpected greeting %q", line)
	}
	return netip.ParseAddrPort(peer)
}

// nsDialer is a goroutine locked into a sandbox's namespace for its whole
// life, standing for a process that keeps running across policy updates.
type nsDialer struct {
	reqs chan func()
	done chan struct{}
	tid  int
}

func newNSDialer(t testing.TB, nsPath string) *nsDialer {
	t.Helper()
	ns := openNS(t, nsPath)
	d := &nsDialer{reqs: make(chan func()), done: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		defer close(d.done)
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			ready <- err
			return
		}
		d.tid = unix.Gettid()
		ready <- nil
		for fn := range d.reqs {
			fn()
		}
	}()
	if err := <-ready; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { close(d.reqs); <-d.done })
	return d
}

func (d *nsDialer) do(fn func() error) error {
	errc := make(chan error, 1)
	d.reqs <- func() {
		if unix.Gettid() != d.tid {
			errc <- fmt.Errorf("dialer moved threads")
			return
		}
		errc <- fn()
	}
	return <-errc
}

// dial connects from the sandbox; want says which outcome is expected, to
// pick the timeout.
func (d *nsDialer) dial(addr string, want bool) error {
	timeout := denyTimeout
	if want {
		timeout = allowTimeout
	}
	return d.do(func() error { return dialOK(addr, timeout) })
}

// peer connects from the sandbox and returns the client address the
// listener at addr saw.
func (d *nsDialer) peer(addr string) (p netip.AddrPort, err error) {
	err = d.do(func() (err error) {
		p, err = dialPeer(addr, allowTimeout)
		return err
	})
	return p, err
}

// lookup asks the sandbox's resolver for name's A records over UDP.
func (d *nsDialer) lookup(server netip.Addr, name string) (rcode int, addrs []netip.Addr, err error) {
	err = d.do(func() error {
		c := &dns.Client{Net: "udp", Timeout: allowTimeout}
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), dns.TypeA)
		resp, _, err := c.Exchange(m, netip.AddrPortFrom(server, 53).String())
		if err != nil {
			return err
		}
		rcode = resp.Rcode
		for _, rr := range resp.Answer {
			if a, ok := rr.(*dns.A); ok {
				ip, _ := netip.AddrFromSlice(a.A.To4())
				addrs = append(addrs, ip)
			}
		}
		return nil
	})
	return rcode, addrs, err
}

func ap(a netip.Addr, port uint16) string { return netip.AddrPortFrom(a, port).String() }

// check is one probe from inside a sandbox.
type check struct {
	name   string
	dial   string // address to connect to, or
	lookup string // name to resolve
	ok     bool   // connect succeeds / lookup answers NOERROR
	// addrs, when set, is the answer a lookup must give.
	addrs []netip.Addr
}

// run makes the probe from d, a dialer in the sandbox n.
func (c check) run(t *testing.T, d *nsDialer, n *Network) {
	t.Helper()
	if c.dial != "" {
		if err := d.dial(c.dial, c.ok); (err == nil) != c.ok {
			t.Errorf("%s: dial %s: err=%v, want ok=%v", c.name, c.dial, err, c.ok)
		}
		return
	}
	rcode, addrs, err := d.lookup(n.DNS, c.lookup)
	switch {
	case err != nil:
		t.Errorf("%s: lookup %s: %v", c.name, c.lookup, err)
	case (rcode == dns.RcodeSuccess) != c.ok:
		t.Errorf("%s: lookup %s: rcode %s, want ok=%v", c.name, c.lookup, dns.RcodeToString[rcode], c.ok)
	case !c.ok && rcode != dns.RcodeRefused:
		t.Errorf("%s: lookup %s: rcode %s, want REFUSED", c.name, c.lookup, dns.RcodeToString[rcode])
	case c.addrs != nil && !slices.Equal(addrs, c.addrs):
		t.Errorf("%s: lookup %s = %v, want %v", c.name, c.lookup, addrs, c.addrs)
	}
}

func TestEgressPolicies(t *testing.T) {
	tb := newTestbed(t)
	other := tb.setup(t, "other", Policy{Mode: ModeAllowAll})
	serveTCP(t, openNS(t, other.NSPath), netip.AddrPortFrom(netip.IPv4Unspecified(), sandboxPort))

	// Controls: every target the policies refuse is reachable from the
	// host namespace, so a failure below is the policy, not the topology.
	t.Run("controls from host namespace", func(t *testing.T) {
		h := newNSDialer(t, tb.hostPin)
		for _, a := range []string{ap(tnHost, hostPort), ap(tnAllowed, inetPort), ap(tnMetadata, inetPort),
			ap(tnPrivate, inetPort), ap(tnCarrier, inetPort), ap(tnAlibaba, inetPort),
			ap(other.SandboxAddr, sandboxPort), ap(other.HostAddr, hostPort)} {
			if err := h.dial(a, true); err != nil {
				t.Errorf("host namespace cannot reach %s: %v", a, err)
			}
		}
	})

	// Always refused, whatever the policy.
	always := func(n *Network) []check {
		return []check{
			{name: "host uplink address", dial: ap(tnHost, hostPort)},
			{name: "host veth address", dial: ap(n.HostAddr, hostPort)},
			{name: "other sandbox", dial: ap(other.SandboxAddr, sandboxPort)},
			{name: "other sandbox's host end", dial: ap(other.HostAddr, hostPort)},
			{name: "metadata", dial: ap(tnMetadata, inetPort)},
			{name: "private (RFC 1918)", dial: ap(tnPrivate, inetPort)},
			{name: "carrier-grade NAT", dial: ap(tnCarrier, inetPort)},
			{name: "alibaba metadata", dial: ap(tnAlibaba, inetPort)},
			{name: "loopback", dial: ap(netip.MustParseAddr("127.0.0.1"), loopbackPort), ok: true},
			{name: "own address", dial: ap(n.SandboxAddr, loopbackPort), ok: true},
		}
	}
	tests := []struct {
		name   string
		policy Policy
		checks []check
	}{
		{"allow-all", Policy{Mode: ModeAllowAll}, []check{
			{name: "internet", dial: ap(tnInet, inetPort), ok: true},
			{name: "any address", dial: ap(tnBlocked, inetPort), ok: true},
			{name: "any name", lookup: "blocked.test", ok: true},
			{name: "name resolving to metadata", lookup: "metadata.test"},
			{name: "name resolving to the LAN", lookup: "lan.test"},
			{name: "CNAME into the LAN", lookup: "cname-lan.test"},
			{name: "public address kept, private dropped", lookup: "mixed.test", ok: true, addrs: []netip.Addr{tnAllowed}},
		}},
		{"deny-all", Policy{Mode: ModeDenyAll}, []check{
			{name: "internet", dial: ap(tnInet, inetPort)},
			{name: "name", lookup: "allowed.test"},
		}},
		{"custom domains", Policy{Mode: ModeCustom, AllowDomains: []string{"allowed.test", "*.allowed.test", "metadata.test", "lan.test"}}, []check{
			{name: "allowed address before lookup", dial: ap(tnAllowed, inetPort)},
			{name: "allowed name", lookup: "allowed.test", ok: true},
			{name: "allowed address after lookup", dial: ap(tnAllowed, inetPort), ok: true},
			{name: "wildcard", lookup: "www.allowed.test", ok: true},
			{name: "blocked name", lookup: "blocked.test"},
			{name: "blocked address", dial: ap(tnBlocked, inetPort)},
			{name: "other address", dial: ap(tnInet, inetPort)},
			{name: "allowed name resolving to metadata", lookup: "metadata.test"},
			{name: "metadata stays refused", dial: ap(tnMetadata, inetPort)},
			{name: "allowed name resolving to the LAN", lookup: "lan.test"},
			{name: "LAN stays refused", dial: ap(tnPrivate, inetPort)},
		}},
		{"custom CIDRs, deny wins", Policy{Mode: ModeCustom,
			AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("169.254.0.0/16")},
			DenyCIDRs:  []netip.Prefix{netip.PrefixFrom(tnBlocked, 32)}}, []check{
			{name: "allowed CIDR", dial: ap(tnCIDR, inetPort), ok: true},
			{name: "allowed CIDR 2", dial: ap(tnAllowed, inetPort), ok: true},
			{name: "denied inside allowed", dial: ap(tnBlocked, inetPort)},
			{name: "no names", lookup: "allowed.test"},
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := tb.setup(t, fmt.Sprintf("sb-%d", i), tt.policy)
			serveTCP(t, openNS(t, n.NSPath), netip.AddrPortFrom(netip.IPv4Unspecified(), loopbackPort))
			d := newNSDialer(t, n.NSPath)
			for _, c := range append(tt.checks, always(n)...) {
				c.run(t, d, n)
			}
		})
	}
}

func TestUpdateRunningSandbox(t *testing.T) {
	tb := newTestbed(t)
	n := tb.setup(t, "live", Policy{Mode: ModeAllowAll})
	d := newNSDialer(t, n.NSPath) // one thread in the namespace throughout
	steps := []struct {
		policy Policy
		probes map[string]bool
	}{
		{Policy{Mode: ModeAllowAll}, map[string]bool{ap(tnAllowed, inetPort): true, ap(tnBlocked, inetPort): true}},
		{Policy{Mode: ModeDenyAll}, map[string]bool{ap(tnAllowed, inetPort): false, ap(tnBlocked, inetPort): false}},
		{Policy{Mode: ModeCustom, AllowCIDRs: []netip.Prefix{netip.PrefixFrom(tnAllowed, 32)}},
			map[string]bool{ap(tnAllowed, inetPort): true, ap(tnBlocked, inetPort): false}},
		{Policy{Mode: ModeCustom, AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")},
			DenyCIDRs: []netip.Prefix{netip.PrefixFrom(tnAllowed, 32)}},
			map[string]bool{ap(tnAllowed, inetPort): false, ap(tnBlocked, inetPort): true}},
		{Policy{Mode: ModeAllowAll}, map[string]bool{ap(tnAllowed, inetPort): true, ap(tnBlocked, inetPort): true}},
	}
	for i, s := range steps {
		if i > 0 {
			if err := tb.m.Update(t.Context(), n.ID, s.policy); err != nil {
				t.Fatalf("step %d: Update: %v", i, err)
			}
		}
		for addr, want := range s.probes {
			if err := d.dial(addr, want); (err == nil) != want {
				t.Errorf("step %d (%s): dial %s: err=%v, want ok=%v", i, s.policy.Mode, addr, err, want)
			}
		}
	}
	// The resolver follows updates too.
	if err := tb.m.Update(t.Context(), n.ID, Policy{Mode: ModeCustom, AllowDomains: []string{"allowed.test"}}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int{"allowed.test": dns.RcodeSuccess, "blocked.test": dns.RcodeRefused} {
		if rcode, _, err := d.lookup(n.DNS, name); err != nil || rcode != want {
			t.Errorf("lookup %s after update: rcode %d err %v, want %d", name, rcode, err, want)
		}
	}
	if err := tb.m.Update(t.Context(), "nope", Policy{Mode: ModeAllowAll}); err == nil {
		t.Error("Update of an unknown sandbox succeeded")
	}
	if err := tb.m.Update(t.Context(), n.ID, Policy{Mode: "bogus"}); err == nil {
		t.Error("Update with an invalid policy succeeded")
	}

	rx, tx, err := tb.m.Stats(n.ID)
	if err != nil {
		t.Fatal(err)
	}
	if rx == 0 || tx == 0 {
		t.Errorf("Stats = rx %d tx %d, want both > 0 after traffic", rx, tx)
	}
}

func TestRestartReadopts(t *testing.T) {
	tb := newTestbed(t)
	a := tb.setup(t, "a", Policy{Mode: ModeCustom, AllowDomains: []string{"allowed.test"}})
	b := tb.setup(t, "b", Policy{Mode: ModeAllowAll})
	// Lose b's state file: its address is read back from the namespace.
	if err := os.Remove(filepath.Join(tb.cfg.DataDir, "netns", "b.json")); err != nil {
		t.Fatal(err)
	}
	if err := tb.m.Close(); err != nil {
		t.Fatal(err)
	}
	tb.m = tb.newManager(t)
	got := tb.m.List()
	if len(got) != 2 || got[0].SandboxAddr != a.SandboxAddr || got[1].SandboxAddr != b.SandboxAddr ||
		got[0].Policy.Mode != ModeCustom {
		t.Fatalf("after restart List() = %+v", got)
	}
	// The resolver is back, with a's policy.
	d := newNSDialer(t, a.NSPath)
	if rcode, _, err := d.lookup(a.DNS, "allowed.test"); err != nil || rcode != dns.RcodeSuccess {
		t.Fatalf("lookup after restart: rcode %d err %v", rcode, err)
	}
	if err := d.dial(ap(tnAllowed, inetPort), true); err != nil {
		t.Fatalf("dial after restart: %v", err)
	}
	c := tb.setup(t, "c", Policy{Mode: ModeDenyAll})
	if c.SandboxAddr == a.SandboxAddr || c.SandboxAddr == b.SandboxAddr {
		t.Fatalf("address %v handed out twice", c.SandboxAddr)
	}
	if _, err := tb.m.Setup(t.Context(), "a", Policy{Mode: ModeDenyAll}); err == nil {
		t.Fatal("second Setup of the same id succeeded")
	}
}

func TestSetupTeardownLeavesNothing(t *testing.T) {
	tb := newTestbed(t)
	const iterations = 200
	deadline := time.Now().Add(2 * time.Minute)
	policy := Policy{Mode: ModeCustom, AllowDomains: []string{"allowed.test"},
		AllowCIDRs: []netip.Prefix{netip.PrefixFrom(tnCIDR, 32)}}
	var durs []time.Duration
	for i := range iterations {
		if time.Now().After(deadline) {
			t.Fatalf("only %d iterations before the time limit", i)
		}
		id := fmt.Sprintf("loop-%d", i)
		start := time.Now()
		if _, err := tb.m.Setup(t.Context(), id, policy); err != nil {
			t.Fatalf("iteration %d: Setup: %v", i, err)
		}
		if err := tb.m.Teardown(t.Context(), id); err != nil {
			t.Fatalf("iteration %d: Teardown: %v", i, err)
		}
		durs = append(durs, time.Since(start))
		if err := tb.m.Teardown(t.Context(), id); err != nil {
			t.Fatalf("iteration %d: second Teardown: %v", i, err)
		}
	}
	slices.Sort(durs)
	t.Logf("setup+teardown: p50 %v, p90 %v, max %v", durs[len(durs)/2], durs[len(durs)*9/10], durs[len(durs)-1])

	if l := tb.m.List(); len(l) != 0 {
		t.Errorf("List() = %v", l)
	}
	tb.m.mu.Lock()
	if len(tb.m.slots) != 0 || len(tb.m.nets) != 0 {
		t.Errorf("allocations left: %v", tb.m.slots)
	}
	tb.m.mu.Unlock()
	entries, err := os.ReadDir(filepath.Join(tb.cfg.DataDir, "netns"))
	if err != nil || len(entries) != 0 {
		t.Errorf("data dir not empty: %v %v", entries, err)
	}
	hostNS := openNS(t, tb.hostPin)
	hh := handleAt(t, hostNS)
	links, err := hh.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if isOurIfName(tb.m.tag, l.Attrs().Name) {
			t.Errorf("veth %s left", l.Attrs().Name)
		}
	}
	routes, err := hh.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Dst != nil && DefaultPool.Contains(netip.AddrFrom4([4]byte(r.Dst.IP.To4()))) {
			t.Errorf("route %v left", r)
		}
	}
	addrs, err := hh.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if DefaultPool.Contains(netip.AddrFrom4([4]byte(a.IP.To4()))) {
			t.Errorf("address %v left", a)
		}
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(hostNS.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	if tables, err := c.ListTables(); err != nil || len(tables) != 0 {
		t.Errorf("host namespace has nftables tables %v (err %v): rules belong in sandbox namespaces", tables, err)
	}
	if err := tb.m.Teardown(t.Context(), "never-existed"); err != nil {
		t.Errorf("Teardown of an unknown id: %v", err)
	}
}

// BenchmarkSetup measures Setup+Teardown of a custom-policy network and
// reports the median.
func BenchmarkSetup(b *testing.B) {
	tb := newTestbed(b)
	policy := Policy{Mode: ModeCustom, AllowDomains: []string{"allowed.test"}}
	var setup, total []time.Duration
	i := 0
	for b.Loop() {
		id := fmt.Sprintf("bench-%d", i)
		i++
		start := time.Now()
		if _, err := tb.m.Setup(b.Context(), id, policy); err != nil {
			b.Fatal(err)
		}
		setup = append(setup, time.Since(start))
		if err := tb.m.Teardown(b.Context(), id); err != nil {
			b.Fatal(err)
		}
		total = append(total, time.Since(start))
	}
	slices.Sort(setup)
	slices.Sort(total)
	b.ReportMetric(float64(setup[len(setup)/2].Microseconds())/1000, "p50-setup-ms")
	b.ReportMetric(float64(total[len(total)/2].Microseconds())/1000, "p50-setup+teardown-ms")
}

// TestNAT runs Config.NAT against the test's host namespace: its uplink
// (tnHost) plays the host's internet-facing interface.
func TestNAT(t *testing.T) {
	tb := newTestbed(t)
	hostNS := openNS(t, tb.hostPin)
	inetPin := filepath.Join(tb.dir, "inet")

	// NAT off (newTestbed's Manager): no table, and the fake internet
	// routes the pool back, so a sandbox gets through with its own address
	// and the fake internet can open a connection to a sandbox. These are
	// the controls for what NAT changes below.
	if got := natTables(t, hostNS); len(got) != 0 {
		t.Fatalf("NAT off: host namespace has NAT tables %v", got)
	}
	open := tb.setup(t, "open", Policy{Mode: ModeAllowAll})
	closed := tb.setup(t, "closed", Policy{Mode: ModeDenyAll})
	serveTCP(t, openNS(t, open.NSPath), netip.AddrPortFrom(netip.IPv4Unspecified(), sandboxPort))
	od, cd, inet := newNSDialer(t, open.NSPath), newNSDialer(t, closed.NSPath), newNSDialer(t, inetPin)
	if p, err := od.peer(ap(tnInet, inetPort)); err != nil || p.Addr() != open.SandboxAddr {
		t.Fatalf("NAT off: listener saw %v (err %v), want the sandbox's own %v", p, err, open.SandboxAddr)
	}
	if err := inet.dial(ap(open.SandboxAddr, sandboxPort), true); err != nil {
		t.Fatalf("NAT off: the fake internet cannot reach the sandbox, so the check below means nothing: %v", err)
	}

	// ip_forward off in the test's host namespace, to see New turn it on.
	setForward(t, hostNS, "0")
	if err := tb.m.Close(); err != nil {
		t.Fatal(err)
	}
	tb.cfg.NAT = true
	tb.m = tb.newManager(t)
	if got := readForward(t, hostNS); got != "1" {
		t.Errorf("NAT on: ip_forward = %q in the host namespace, want 1", got)
	}
	checkNAT := func(t *testing.T) {
		t.Helper()
		want := map[string]int{"postrouting": 1, "forward": 4}
		if got := natTables(t, hostNS); len(got) != 1 || !maps.Equal(got[natTableName], want) {
			t.Errorf("NAT tables = %v, want one %s with rules per chain %v", got, natTableName, want)
		}
		if p, err := od.peer(ap(tnInet, inetPort)); err != nil || p.Addr() != tnHost {
			t.Errorf("allow-all: listener saw %v (err %v), want the uplink's %v (masqueraded)", p, err, tnHost)
		}
		if err := od.dial(ap(tnAllowed, inetPort), true); err != nil {
			t.Errorf("allow-all: dial %v: %v", tnAllowed, err)
		}
		// The sandbox's policy still decides first.
		if err := od.dial(ap(tnMetadata, inetPort), false); err == nil {
			t.Error("allow-all: metadata reachable through NAT")
		}
		if err := cd.dial(ap(tnInet, inetPort), false); err == nil {
			t.Error("deny-all: fake internet reachable through NAT")
		}
		// Forwarding on must not open the pool to whoever routes it here.
		if err := inet.dial(ap(open.SandboxAddr, sandboxPort), false); err == nil {
			t.Error("fake internet opened a connection into the pool")
		}
	}
	t.Run("on", checkNAT)

	// Restart with NAT: the table is replaced, not duplicated.
	if err := tb.m.Close(); err != nil {
		t.Fatal(err)
	}
	tb.m = tb.newManager(t)
	t.Run("on again", checkNAT)

	// Restart without NAT: the table goes, ip_forward stays.
	if err := tb.m.Close(); err != nil {
		t.Fatal(err)
	}
	tb.cfg.NAT = false
	tb.m = tb.newManager(t)
	if got := natTables(t, hostNS); len(got) != 0 {
		t.Errorf("NAT off again: host namespace still has %v", got)
	}
	if got := readForward(t, hostNS); got != "1" {
		t.Errorf("NAT off again: ip_forward = %q, want it left at 1", got)
	}
	if err := cd.dial(ap(tnInet, inetPort), false); err == nil {
		t.Error("deny-all: fake internet reachable after NAT off")
	}
}

// natTables maps each IPv4 table named natTableName in ns (several would be
// a bug) to its rule count per chain; more than one table shows up as
// natTableName#2 and so on.
func natTables(t testing.TB, ns *os.File) map[string]map[string]int {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]int{}
	for i, tbl := range tables {
		if tbl.Name != natTableName {
			continue
		}
		key := tbl.Name
		if _, dup := out[key]; dup {
			key = fmt.Sprintf("%s#%d", key, i+1)
		}
		out[key] = map[string]int{}
		for _, ch := range chains {
			if ch.Table.Name != tbl.Name {
				continue
			}
			rules, err := c.GetRules(tbl, ch)
			if err != nil {
				t.Fatal(err)
			}
			out[key][ch.Name] = len(rules)
		}
	}
	return out
}

// readForward and setForward read and write ip_forward in a test namespace
// (never the real host's: checkRealHostUntouched verifies that).
func readForward(t testing.TB, ns *os.File) string {
	t.Helper()
	var b []byte
	if err := inNS(int(ns.Fd()), func() (err error) {
		b, err = os.ReadFile(ipForwardPath)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func setForward(t testing.TB, ns *os.File, v string) {
	t.Helper()
	if err := inNS(int(ns.Fd()), func() error {
		return os.WriteFile(ipForwardPath, []byte(v), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
}

// TestOperatorRanges: the operator's allow list opens private ranges to the
// policy (not Reserved ones), BlockCIDRs closes a public address whatever
// the policy says, and a restart applies both to sandboxes already running.
func TestOperatorRanges(t *testing.T) {
	tb := newTestbed(t)
	early := tb.setup(t, "early", Policy{Mode: ModeAllowAll})
	ed := newNSDialer(t, early.NSPath)
	if err := ed.dial(ap(tnPrivate, inetPort), false); err == nil {
		t.Fatal("default config: a private address is reachable in allow-all")
	}

	if err := tb.m.Close(); err != nil {
		t.Fatal(err)
	}
	tb.cfg.AllowPrivate = tnPrivateNets
	tb.cfg.BlockCIDRs = []netip.Prefix{netip.PrefixFrom(tnCIDR, 32)}
	tb.m = tb.newManager(t)

	tests := []struct {
		name   string
		policy Policy
		checks []check
	}{
		{"allow-all", Policy{Mode: ModeAllowAll}, []check{
			{name: "allowed private", dial: ap(tnPrivate, inetPort), ok: true},
			{name: "allowed carrier-grade NAT", dial: ap(tnCarrier, inetPort), ok: true},
			{name: "alibaba metadata inside the allowed range", dial: ap(tnAlibaba, inetPort)},
			{name: "metadata", dial: ap(tnMetadata, inetPort)},
			{name: "operator-blocked public address", dial: ap(tnCIDR, inetPort)},
			{name: "other public address", dial: ap(tnAllowed, inetPort), ok: true},
			{name: "name in an allowed private range", lookup: "lan.test", ok: true, addrs: []netip.Addr{tnPrivate}},
		}},
		{"custom allowing the blocked address", Policy{Mode: ModeCustom,
			AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}}, []check{
			{name: "operator block wins", dial: ap(tnCIDR, inetPort)},
			{name: "rest of the allowed CIDR", dial: ap(tnAllowed, inetPort), ok: true},
			{name: "private not in the policy", dial: ap(tnPrivate, inetPort)},
		}},
		{"deny-all", Policy{Mode: ModeDenyAll}, []check{
			{name: "allowed private still needs the policy", dial: ap(tnPrivate, inetPort)},
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := tb.setup(t, fmt.Sprintf("op-%d", i), tt.policy)
			d := newNSDialer(t, n.NSPath)
			for _, c := range tt.checks {
				c.run(t, d, n)
			}
		})
	}
	t.Run("running sandbox after restart", func(t *testing.T) {
		if err := ed.dial(ap(tnPrivate, inetPort), true); err != nil {
			t.Errorf("allowed private address: %v", err)
		}
		if err := ed.dial(ap(tnCIDR, inetPort), false); err == nil {
			t.Error("operator-blocked address reachable")
		}
	})
}

// TestResolverLimits: a flood gets REFUSED past the sandbox's rate, and
// queries past its in-flight cap get REFUSED at once instead of queueing.
func TestResolverLimits(t *testing.T) {
	tb := newTestbed(t)
	if err := tb.m.Close(); err != nil {
		t.Fatal(err)
	}
	const rateQPS, burst, inFlight = 5, 10, 4
	tb.cfg.DNSRate, tb.cfg.DNSBurst, tb.cfg.DNSMaxInFlight = rateQPS, burst, inFlight
	tb.m = tb.newManager(t)

	t.Run("rate", func(t *testing.T) {
		n := tb.setup(t, "flood", Policy{Mode: ModeAllowAll})
		d := newNSDialer(t, n.NSPath)
		const queries = 100
		var ok, refused int
		start := time.Now()
		err := d.do(func() error {
			c := &dns.Client{Net: "udp", Timeout: allowTimeout}
			for i := range queries {
				if time.Since(start) > time.Minute {
					return fmt.Errorf("%d queries took over a minute", i)
				}
				m := new(dns.Msg)
				m.SetQuestion("allowed.test.", dns.TypeA)
				resp, _, err := c.Exchange(m, netip.AddrPortFrom(n.DNS, 53).String())
				if err != nil {
					return fmt.Errorf("query %d (%d answered, %d refused): %w", i, ok, refused, err)
				}
				switch resp.Rcode {
				case dns.RcodeSuccess:
					ok++
				case dns.RcodeRefused:
					refused++
				default:
					return fmt.Errorf("rcode %s", dns.RcodeToString[resp.Rcode])
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// The bucket holds burst tokens and gains rateQPS per second.
		most := burst + int(time.Since(start).Seconds()*rateQPS) + 1
		if ok == 0 || ok > most || ok+refused != queries {
			t.Fatalf("%d answered, %d refused of %d; want 1..%d answered, the rest refused", ok, refused, queries, most)
		}
	})

	t.Run("in flight", func(t *testing.T) {
		n := tb.setup(t, "stuck", Policy{Mode: ModeAllowAll})
		d := newNSDialer(t, n.NSPath)
		const queries = 2 * inFlight
		conns := make([]net.Conn, queries)
		if err := d.do(func() error {
			for i := range conns {
				c, err := net.Dial("udp4", netip.AddrPortFrom(n.DNS, 53).String())
				if err != nil {
					return err
				}
				t.Cleanup(func() { c.Close() })
				conns[i] = c
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		rcodes := make(chan int, queries)
		var wg sync.WaitGroup
		for _, c := range conns {
			wg.Go(func() {
				m := new(dns.Msg)
				m.SetQuestion("slow.test.", dns.TypeA)
				dc := &dns.Conn{Conn: c}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if err := dc.WriteMsg(m); err != nil {
					rcodes <- -1
					return
				}
				resp, err := dc.ReadMsg()
				if err != nil {
					rcodes <- -1
					return
				}
				rcodes <- resp.Rcode
			})
		}
		// The queries past the cap are answered while the others wait
		// for the fake internet.
		for range queries - inFlight {
			if rc := <-rcodes; rc != dns.RcodeRefused {
				tb.release()
				wg.Wait()
				t.Fatalf("a query answered %v while %d others were upstream, want REFUSED", rc, inFlight)
			}
		}
		tb.release()
		wg.Wait()
		close(rcodes)
		for rc := range rcodes {
			if rc != dns.RcodeSuccess {
				t.Errorf("a held query answered %v, want NOERROR once the upstream answered", rc)
			}
		}
	})
}

// TestHostAddressesFollowed: an address the host side gains while a
// sandbox runs (a new NIC, docker0) becomes unreachable from the sandbox
// without any update of its policy.
func TestHostAddressesFollowed(t *testing.T) {
	tb := newTestbed(t)
	n := tb.setup(t, "running", Policy{Mode: ModeAllowAll})
	d := newNSDialer(t, n.NSPath)
	hh := handleAt(t, openNS(t, tb.hostPin))
	lo, err := hh.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	// A public-looking address: no static range covers it.
	added := netip.MustParseAddr("203.0.113.7")
	if err := hh.AddrAdd(lo, &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(added, 32))}); err != nil {
		t.Fatal(err)
	}
	// The host namespace's listener answers on every address, the new one
	// included, until the sandbox's rules catch up.
	deadline := time.Now().Add(5 * time.Second)
	for d.dial(ap(added, hostPort), false) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("the host's new address %v is still reachable from a running sandbox", added)
		}
	}
	// And a sandbox made afterwards has it from the start.
	later := tb.setup(t, "later", Policy{Mode: ModeAllowAll})
	if err := newNSDialer(t, later.NSPath).dial(ap(added, hostPort), false); err == nil {
		t.Errorf("the host's address %v is reachable from a new sandbox", added)
	}
}
