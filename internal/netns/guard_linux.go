package netns

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"go4.org/netipx"
	"golang.org/x/sys/unix"
)

// GuardNode installs, or replaces as a whole, table inet paddock-node (see
// NodeGuard) in the network namespace at podNS, with the destinations that
// g.NodeNS delivers to itself now. It refuses to guard the node's own
// namespace: its table would cut the node off from itself.
func GuardNode(podNS string, g NodeGuard) error {
	if err := g.Validate(); err != nil {
		return err
	}
	pod, err := os.OpenFile(podNS, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer pod.Close()
	var node *os.File
	if g.NodeNS == "" {
		node, err = openOwnNS()
	} else {
		node, err = os.OpenFile(g.NodeNS, os.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return fmt.Errorf("netns: the node's namespace: %w", err)
	}
	defer node.Close()
	if sameFile(pod, node) {
		return fmt.Errorf("netns: %s is the node's own network namespace, not a Pod's", podNS)
	}
	local, err := nodeLocal(node)
	if err != nil {
		return err
	}
	deny, err := g.denied(local)
	if err != nil {
		return fmt.Errorf("netns: node guard set: %w", err)
	}
	return programGuard(int(pod.Fd()), deny, g.Allow)
}

// denied is what the guard drops: hardBlocked, and the node's local
// destinations outside g.NotNode.
func (g NodeGuard) denied(local []netip.Prefix) (*netipx.IPSet, error) {
	var node netipx.IPSetBuilder
	for _, p := range local {
		node.AddPrefix(p)
	}
	for _, p := range g.NotNode {
		node.RemovePrefix(p)
	}
	nodeSet, err := node.IPSet()
	if err != nil {
		return nil, err
	}
	var b netipx.IPSetBuilder
	b.AddSet(nodeSet)
	for _, p := range hardBlocked {
		b.AddPrefix(p)
	}
	return b.IPSet()
}

// nodeLocal lists what the namespace ns delivers to itself: its local
// routing table's local, broadcast and anycast routes. That is every
// address of every interface, and also what no interface lists (an "AnyIP"
// local route of a whole prefix, a subnet's broadcast address), all of
// which reach the node's listeners on the wildcard address. Multicast
// routes are left out: hardBlocked has multicast whole.
func nodeLocal(ns *os.File) ([]netip.Prefix, error) {
	h, err := netlink.NewHandleAt(vnetns.NsHandle(ns.Fd()))
	if err != nil {
		return nil, fmt.Errorf("netns: netlink in the node's namespace: %w", err)
	}
	defer h.Close()
	filter := &netlink.Route{Table: unix.RT_TABLE_LOCAL}
	var routes []netlink.Route
	for i := range dumpAttempts {
		routes, err = h.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_TABLE)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
		time.Sleep(min(time.Duration(i+1)*time.Millisecond, 20*time.Millisecond))
	}
	if err != nil {
		return nil, fmt.Errorf("netns: list the node's local routes: %w", err)
	}
	var out []netip.Prefix
	for _, r := range routes {
		if r.Dst == nil || (r.Type != unix.RTN_LOCAL && r.Type != unix.RTN_BROADCAST && r.Type != unix.RTN_ANYCAST) {
			continue
		}
		a, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			continue
		}
		bits, _ := r.Dst.Mask.Size()
		if a = a.Unmap(); a.Is4() && bits > 32 {
			bits -= 96
		}
		if p, err := a.Prefix(bits); err == nil {
			out = append(out, p)
		}
	}
	return out, nil
}

// programGuard replaces table inet paddock-node in the namespace nsFd in
// one batch (add, delete, add again, then its sets and chain), so the
// kernel swaps it atomically: a second call (every container of a Pod
// calls it) never leaves two copies nor a moment without the table.
//
//	output (filter, policy accept):
//	  oifname "lo" accept
//	  ct state established,related accept
//	  icmpv6 type 130-143 accept     (MLD and neighbour discovery)
//	  ip[6] daddr <allow> tcp|udp dport <port> accept
//	  ip daddr @node4 drop
//	  ip6 daddr @node6 drop
func programGuard(nsFd int, deny *netipx.IPSet, allow []netip.AddrPort) error {
	c, err := nftables.New(nftables.WithNetNSFd(nsFd))
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: GuardTable}
	accept := nftables.ChainPolicyAccept
	out := &nftables.Chain{Table: t, Name: "output", Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &accept}
	node4 := &nftables.Set{Table: t, Name: "node4", KeyType: nftables.TypeIPAddr, Interval: true}
	node6 := &nftables.Set{Table: t, Name: "node6", KeyType: nftables.TypeIP6Addr, Interval: true}
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	e4, e6 := intervalElems(deny)
	for _, s := range []struct {
		set   *nftables.Set
		elems []nftables.SetElement
	}{{node4, e4}, {node6, e6}} {
		if err := c.AddSet(s.set, s.elems); err != nil {
			return fmt.Errorf("nftables set %s: %w", s.set.Name, err)
		}
	}
	c.AddChain(out)

	yes := &expr.Verdict{Kind: expr.VerdictAccept}
	no := &expr.Verdict{Kind: expr.VerdictDrop}
	rules := [][]expr.Any{
		{
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname("lo")},
			yes,
		},
		slices.Concat(ctEstablished(), []expr.Any{yes}),
		{
			// IPv6 needs these to and from the node's link-local and
			// multicast addresses, which the sets below refuse; none of
			// them reaches a listener.
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMPV6}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
			&expr.Cmp{Op: expr.CmpOpGte, Register: 1, Data: []byte{130}},
			&expr.Cmp{Op: expr.CmpOpLte, Register: 1, Data: []byte{143}},
			yes,
		},
	}
	for _, a := range allow {
		for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
			rules = append(rules, daddrPort(a, proto, yes))
		}
	}
	rules = append(rules, daddrIn(node4, no), daddrIn(node6, no))
	for _, exprs := range rules {
		c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: exprs})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: apply table inet %s: %w", GuardTable, err)
	}
	return nil
}

// daddrPort matches packets of protocol proto (TCP or UDP) to ap.
func daddrPort(ap netip.AddrPort, proto byte, verdict *expr.Verdict) []expr.Any {
	a := ap.Addr().Unmap()
	family, off := byte(unix.NFPROTO_IPV4), uint32(16)
	if a.Is6() {
		family, off = unix.NFPROTO_IPV6, 24
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{family}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: uint32(a.BitLen() / 8)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a.AsSlice()},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(ap.Port())},
		verdict,
	}
}
