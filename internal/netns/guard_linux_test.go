package netns

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
)

// TestGuardNode, in two namespaces the test makes (a "node" and a "Pod"
// joined by a veth, as a bridge plugin's gateway is): before the guard the
// Pod reaches the node's listeners on its gateway address and on an
// address of another interface; after it, neither, nor a link-local one,
// while the node still reaches the Pod's listener (the answers are
// established traffic), the Pod its own loopback, the allowed address and
// port, and an address of the node in NotNode. A second GuardNode replaces
// the table (the same rules, once); the node's own namespace is refused.
func TestGuardNode(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	nodePin, podPin := filepath.Join(dir, "node"), filepath.Join(dir, "pod")
	for _, pin := range []string{nodePin, podPin} {
		if err := newPinnedNS(pin); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { removePin(pin) })
	}
	nodeNS, podNS := openNS(t, nodePin), openNS(t, podPin)
	nh, ph := handleAt(t, nodeNS), handleAt(t, podNS)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	var (
		gateway   = netip.MustParseAddr("10.244.7.1")
		podAddr   = netip.MustParseAddr("10.244.7.2")
		other     = netip.MustParseAddr("198.51.100.9")  // the node's, on another interface
		linkLocal = netip.MustParseAddr("169.254.20.10") // a node-local DNS cache's
		service   = netip.MustParseAddr("10.96.0.10")    // kube-ipvs0's, in NotNode
	)
	const listenPort, allowPort = 8080, 5353
	must(nh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "gw"}, PeerName: "eth0",
		PeerNamespace: netlink.NsFd(int(podNS.Fd()))}))
	for _, side := range []struct {
		h    *netlink.Handle
		dev  string
		addr netip.Addr
	}{{nh, "gw", gateway}, {ph, "eth0", podAddr}} {
		l, err := side.h.LinkByName(side.dev)
		must(err)
		must(side.h.AddrAdd(l, &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(side.addr, 24))}))
		must(side.h.LinkSetUp(l))
		lo, err := side.h.LinkByName("lo")
		must(err)
		must(side.h.LinkSetUp(lo))
	}
	nlo, err := nh.LinkByName("lo")
	must(err)
	eth0, err := ph.LinkByName("eth0")
	must(err)
	for _, a := range []netip.Addr{other, linkLocal, service} {
		must(nh.AddrAdd(nlo, &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(a, 32))}))
		must(ph.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: prefixNet(netip.PrefixFrom(a, 32)), Gw: gateway.AsSlice()}))
	}
	serveTCP(t, nodeNS, netip.AddrPortFrom(netip.IPv4Unspecified(), listenPort))
	serveTCP(t, nodeNS, netip.AddrPortFrom(netip.IPv4Unspecified(), allowPort))
	serveTCP(t, podNS, netip.AddrPortFrom(netip.IPv4Unspecified(), listenPort))
	serveTCP(t, podNS, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), loopbackPort))

	fromPod := func(to netip.AddrPort, want bool) {
		t.Helper()
		timeout := denyTimeout
		if want {
			timeout = allowTimeout
		}
		err := inNS(int(podNS.Fd()), func() error { return dialOK(to.String(), timeout) })
		if got := err == nil; got != want {
			t.Errorf("the Pod reaches %s: %v (%v), want %v", to, got, err, want)
		}
	}
	fromNode := func(to netip.AddrPort) {
		t.Helper()
		if err := inNS(int(nodeNS.Fd()), func() error { return dialOK(to.String(), allowTimeout) }); err != nil {
			t.Errorf("the node does not reach the Pod's %s: %v", to, err)
		}
	}
	at := netip.AddrPortFrom
	// Without the guard, the node's listeners answer on all its addresses.
	for _, a := range []netip.Addr{gateway, other, linkLocal, service} {
		fromPod(at(a, listenPort), true)
	}

	g := NodeGuard{NodeNS: nodePin, Allow: []netip.AddrPort{at(linkLocal, allowPort)},
		NotNode: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}}
	var rules int
	for i := range 2 {
		if err := GuardNode(podPin, g); err != nil {
			t.Fatalf("GuardNode #%d: %v", i+1, err)
		}
		n := guardRules(t, podNS)
		if i > 0 && n != rules {
			t.Errorf("GuardNode again: %d rules, want the first's %d", n, rules)
		}
		rules = n
		for _, a := range []netip.Addr{gateway, other, linkLocal} {
			fromPod(at(a, listenPort), false)
		}
		fromPod(at(gateway, allowPort), false) // the port is allowed at linkLocal only
		fromPod(at(linkLocal, allowPort), true)
		fromPod(at(service, listenPort), true)
		fromPod(at(netip.MustParseAddr("127.0.0.1"), loopbackPort), true)
		fromPod(at(podAddr, listenPort), true) // its own address: over lo
		fromNode(at(podAddr, listenPort))
	}

	if err := GuardNode(nodePin, NodeGuard{NodeNS: nodePin}); err == nil {
		t.Error("GuardNode guarded the node's own namespace")
	}
	for _, bad := range []NodeGuard{
		{Allow: []netip.AddrPort{at(linkLocal, 0)}},
		{Allow: []netip.AddrPort{{}}},
		{NotNode: []netip.Prefix{{}}},
	} {
		if err := GuardNode(podPin, bad); err == nil {
			t.Errorf("GuardNode accepted %+v", bad)
		}
	}
}

// guardRules counts the rules of the guard's chain in ns, failing t if
// the table is not there.
func guardRules(t *testing.T, ns *os.File) int {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, tb := range tables {
		if tb.Name == GuardTable {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d tables inet %s, want 1", n, GuardTable)
	}
	rules, err := c.GetRules(&nftables.Table{Family: nftables.TableFamilyINet, Name: GuardTable}, &nftables.Chain{Name: "output"})
	if err != nil {
		t.Fatal(err)
	}
	return len(rules)
}
