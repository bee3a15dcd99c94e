package netns

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"go4.org/netipx"
	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/dnsfilter"
)

// tableName is paddock's table inside each sandbox's namespace.
const tableName = "paddock"

// Bounds of a resolved address's life in the allow set.
const (
	minDNSTimeout = 30 * time.Second
	maxDNSTimeout = dnsfilter.MaxTTL
)

// rules names the objects of the table; they are addressed by name, so the
// same values serve the first install and every update.
type rules struct {
	table                        *nftables.Table
	deny4, deny6, allow4, allow6 *nftables.Set
	dns4, dns6                   *nftables.Set
	output                       *nftables.Chain
}

func newRules() *rules {
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: tableName}
	interval := func(name string, key nftables.SetDatatype) *nftables.Set {
		return &nftables.Set{Table: t, Name: name, KeyType: key, Interval: true}
	}
	timed := func(name string, key nftables.SetDatatype) *nftables.Set {
		return &nftables.Set{Table: t, Name: name, KeyType: key, HasTimeout: true}
	}
	drop := nftables.ChainPolicyDrop
	return &rules{
		table:  t,
		deny4:  interval("deny4", nftables.TypeIPAddr),
		deny6:  interval("deny6", nftables.TypeIP6Addr),
		allow4: interval("allow4", nftables.TypeIPAddr),
		allow6: interval("allow6", nftables.TypeIP6Addr),
		dns4:   timed("dns4", nftables.TypeIPAddr),
		dns6:   timed("dns6", nftables.TypeIP6Addr),
		output: &nftables.Chain{
			Table: t, Name: "output", Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &drop,
		},
	}
}

// ruleInput is what a sandbox's ruleset is computed from.
type ruleInput struct {
	policy   Policy
	hostAddr netip.Addr    // the resolver's address, the only host address reachable (port 53)
	blocked  *netipx.IPSet // always refused: Config.staticBlocked and the host's addresses
}

// program installs (first=true) or replaces the ruleset in the namespace nsFd
// in one netlink batch, so the kernel swaps it atomically: a packet sees the
// old rules or the new ones, never a mix. flushDNS also forgets addresses the
// resolver allowed (done when the allowed domains change).
func program(nsFd int, in ruleInput, first, flushDNS bool) error {
	c, err := nftables.New(nftables.WithNetNSFd(nsFd))
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	r := newRules()
	deny, err := withBlocked(in.blocked, in.policy.DenyCIDRs, nil)
	if err != nil {
		return fmt.Errorf("deny set: %w", err)
	}
	var allow []netip.Prefix
	if in.policy.Mode == ModeCustom {
		allow = in.policy.AllowCIDRs
	}
	allowSet, err := withBlocked(&netipx.IPSet{}, allow, nil)
	if err != nil {
		return fmt.Errorf("allow set: %w", err)
	}
	deny4, deny6 := intervalElems(deny)
	allow4, allow6 := intervalElems(allowSet)
	if first {
		c.AddTable(r.table)
		for _, s := range []struct {
			set   *nftables.Set
			elems []nftables.SetElement
		}{{r.deny4, deny4}, {r.deny6, deny6}, {r.allow4, allow4}, {r.allow6, allow6}, {r.dns4, nil}, {r.dns6, nil}} {
			if err := c.AddSet(s.set, s.elems); err != nil {
				return fmt.Errorf("nftables set %s: %w", s.set.Name, err)
			}
		}
		c.AddChain(r.output)
	} else {
		c.FlushChain(r.output)
		sets := []*nftables.Set{r.deny4, r.deny6, r.allow4, r.allow6}
		if flushDNS {
			sets = append(sets, r.dns4, r.dns6)
		}
		for _, s := range sets {
			c.FlushSet(s)
		}
		for _, s := range []struct {
			set   *nftables.Set
			elems []nftables.SetElement
		}{{r.deny4, deny4}, {r.deny6, deny6}, {r.allow4, allow4}, {r.allow6, allow6}} {
			if len(s.elems) == 0 {
				continue
			}
			if err := c.SetAddElements(s.set, s.elems); err != nil {
				return fmt.Errorf("nftables set %s: %w", s.set.Name, err)
			}
		}
	}
	for _, exprs := range r.chainRules(in) {
		c.AddRule(&nftables.Rule{Table: r.table, Chain: r.output, Exprs: exprs})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: apply ruleset: %w", err)
	}
	return nil
}

// chainRules is the output chain, in the order the package comment gives.
func (r *rules) chainRules(in ruleInput) [][]expr.Any {
	accept := &expr.Verdict{Kind: expr.VerdictAccept}
	drop := &expr.Verdict{Kind: expr.VerdictDrop}
	out := [][]expr.Any{
		{ // oifname "lo" accept
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname("lo")},
			accept,
		},
		{ // ct direction reply accept: answers on connections opened into the sandbox
			&expr.Ct{Register: 1, Key: expr.CtKeyDIRECTION},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{1}},
			accept,
		},
	}
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		// ip daddr <resolver> {udp,tcp} dport 53 accept
		out = append(out, daddrPort(netip.AddrPortFrom(in.hostAddr, 53), proto, accept))
	}
	out = append(out, daddrIn(r.deny4, drop), daddrIn(r.deny6, drop))
	switch in.policy.Mode {
	case ModeAllowAll:
		out = append(out, []expr.Any{accept})
	case ModeCustom:
		out = append(out,
			[]expr.Any{ // ct state established,related accept
				&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
					Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
					Xor:  binaryutil.NativeEndian.PutUint32(0)},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
				accept,
			},
			daddrIn(r.allow4, accept), daddrIn(r.allow6, accept),
			daddrIn(r.dns4, accept), daddrIn(r.dns6, accept),
		)
	}
	// deny-all and the end of custom fall through to the chain's drop policy.
	return out
}

// daddrIn matches packets of the set's family whose destination is in set.
func daddrIn(set *nftables.Set, verdict *expr.Verdict) []expr.Any {
	proto, off, n := byte(unix.NFPROTO_IPV4), uint32(16), uint32(4)
	if set.KeyType == nftables.TypeIP6Addr {
		proto, off, n = unix.NFPROTO_IPV6, 24, 16
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
		verdict,
	}
}

// intervalElems turns a set into interval set elements, per family. An
// interval ending at the family's last address has no end element: the
// kernel reads it as open-ended. The set's ranges are sorted, disjoint and
// not adjacent, as the kernel wants them.
func intervalElems(set *netipx.IPSet) (v4, v6 []nftables.SetElement) {
	for _, r := range set.Ranges() {
		elems := []nftables.SetElement{{Key: r.From().AsSlice()}}
		if end := r.To().Next(); end.IsValid() {
			elems = append(elems, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
		}
		if r.From().Is4() {
			v4 = append(v4, elems...)
		} else {
			v6 = append(v6, elems...)
		}
	}
	return v4, v6
}

// allowResolved adds resolved addresses to the sandbox's allow sets with a
// fresh timeout. Add, delete, add in one batch refreshes the timeout of an
// address already present (a plain add would keep the old one) and cannot
// fail on a missing element.
func allowResolved(nsFd int, addrs []netip.Addr, ttl time.Duration) error {
	if len(addrs) == 0 {
		return nil
	}
	ttl = min(max(ttl, minDNSTimeout), maxDNSTimeout)
	c, err := nftables.New(nftables.WithNetNSFd(nsFd))
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	r := newRules()
	var e4, e6 []nftables.SetElement
	for _, a := range addrs {
		if a.Is4() {
			e4 = append(e4, nftables.SetElement{Key: a.AsSlice(), Timeout: ttl})
		} else {
			e6 = append(e6, nftables.SetElement{Key: a.AsSlice(), Timeout: ttl})
		}
	}
	for _, s := range []struct {
		set   *nftables.Set
		elems []nftables.SetElement
	}{{r.dns4, e4}, {r.dns6, e6}} {
		if len(s.elems) == 0 {
			continue
		}
		s.set.HasTimeout = true
		if err := c.SetAddElements(s.set, s.elems); err != nil {
			return err
		}
		if err := c.SetDeleteElements(s.set, s.elems); err != nil {
			return err
		}
		if err := c.SetAddElements(s.set, s.elems); err != nil {
			return err
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: allow resolved addresses: %w", err)
	}
	return nil
}

// ifname pads an interface name to IFNAMSIZ as the kernel compares it.
func ifname(n string) []byte {
	b := make([]byte, 16)
	copy(b, n)
	return b
}
