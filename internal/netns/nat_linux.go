package netns

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// natTableName is the table Config.NAT programs in the host-side namespace.
// It is the only object paddock owns there, so it can be replaced or removed
// as a whole without reading anyone else's rules.
const natTableName = "paddock-nat"

// ipForwardPath is read and written from a thread in the host-side
// namespace: /proc/sys/net follows the namespace of the thread that opens it.
const ipForwardPath = "/proc/sys/net/ipv4/ip_forward"

// applyNAT makes the host-side namespace forward and masquerade the pool
// (Config.NAT), or removes what an earlier run with NAT left (no NAT).
func (m *Manager) applyNAT() error {
	if !m.cfg.NAT {
		return m.disableNAT()
	}
	if err := programNAT(int(m.hostNS.Fd()), m.cfg.Pool, m.tag); err != nil {
		return fmt.Errorf("netns: NAT: %w", err)
	}
	// Forwarding after the table: the forward chain is in place (dropping
	// new connections into the pool) before the namespace starts routing.
	changed, err := m.enableForwarding()
	if err != nil {
		return fmt.Errorf("netns: NAT: enable net.ipv4.ip_forward: %w", err)
	}
	if changed {
		m.log.Info("netns: NAT on: set net.ipv4.ip_forward=1 in the host namespace")
	}
	m.log.Info("netns: NAT on", "table", "ip "+natTableName, "pool", m.cfg.Pool)
	return nil
}

// disableNAT removes table ip paddock-nat if a previous run left it.
// net.ipv4.ip_forward stays as it is: paddock cannot know whether it was
// 1 before that run turned NAT on, or whether something else now relies on it.
func (m *Manager) disableNAT() error {
	removed, err := removeNAT(int(m.hostNS.Fd()))
	if err != nil {
		return fmt.Errorf("netns: remove NAT table left by an earlier run: %w", err)
	}
	if removed {
		m.log.Warn("netns: NAT off: removed table ip "+natTableName+" left by an earlier run; net.ipv4.ip_forward left as is",
			"table", "ip "+natTableName)
	}
	return nil
}

// enableForwarding sets net.ipv4.ip_forward=1 in the host-side namespace,
// writing only when it is not already on.
func (m *Manager) enableForwarding() (changed bool, err error) {
	err = m.inHost(func() error {
		b, err := os.ReadFile(ipForwardPath)
		if err != nil {
			return err
		}
		if string(bytes.TrimSpace(b)) == "1" {
			return nil
		}
		changed = true
		return os.WriteFile(ipForwardPath, []byte("1\n"), 0o644)
	})
	return changed, err
}

// natTable returns the objects of table ip paddock-nat.
func natTable() (t *nftables.Table, post, fwd *nftables.Chain) {
	t = &nftables.Table{Family: nftables.TableFamilyIPv4, Name: natTableName}
	// Accept, not drop, as the forward chain's policy: the host forwards
	// other traffic too (containers, VPNs) and that is not paddock's to block.
	accept := nftables.ChainPolicyAccept
	post = &nftables.Chain{Table: t, Name: "postrouting", Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource}
	fwd = &nftables.Chain{Table: t, Name: "forward", Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept}
	return t, post, fwd
}

// programNAT replaces table ip paddock-nat in the namespace nsFd in one
// batch: add (a no-op if it exists), delete, add again, then the chains. The
// kernel applies the batch atomically, so a re-run (restart, changed pool)
// never leaves two copies of a rule nor a moment without the table.
//
// The table holds, for the pool and this instance's veths ("pd"+tag+...):
//
//	postrouting (nat): ip saddr <pool> oifname != "pd<tag>*" masquerade
//	forward (filter, policy accept):
//	  iifname "pd<tag>*" ip saddr <pool> oifname != "pd<tag>*" accept
//	  ip daddr <pool> ct state established,related accept
//	  ip daddr <pool> drop
//	  iifname "pd<tag>*" drop
//
// The two drops exist because ip_forward=1 would otherwise let anyone who
// routes the pool via this host (a LAN neighbour) open connections to
// sandbox ports directly, around the port proxy's authentication, and let
// a sandbox reach another sandbox through the forward path. An accept here
// does not override another table's forward chain: a base chain with a drop
// policy on the same hook (Docker's FORWARD) still drops the pool's traffic
// unless the operator allows it there.
func programNAT(nsFd int, pool netip.Prefix, tag string) error {
	c, err := nftables.New(nftables.WithNetNSFd(nsFd))
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t, post, fwd := natTable()
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	c.AddChain(post)
	c.AddChain(fwd)

	accept := &expr.Verdict{Kind: expr.VerdictAccept}
	drop := &expr.Verdict{Kind: expr.VerdictDrop}
	ours := []byte("pd" + tag) // a prefix compare: nft's "pd<tag>*"
	fromOurs := ifPrefix(expr.MetaKeyIIFNAME, expr.CmpOpEq, ours)
	toOutside := ifPrefix(expr.MetaKeyOIFNAME, expr.CmpOpNeq, ours)
	src, dst := inPrefix(12, pool), inPrefix(16, pool)

	c.AddRule(&nftables.Rule{Table: t, Chain: post,
		Exprs: slices.Concat(src, toOutside, []expr.Any{&expr.Masq{}})})
	for _, exprs := range [][]expr.Any{
		slices.Concat(fromOurs, src, toOutside, []expr.Any{accept}),
		slices.Concat(ctEstablished(), dst, []expr.Any{accept}),
		slices.Concat(dst, []expr.Any{drop}),
		slices.Concat(fromOurs, []expr.Any{drop}),
	} {
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: exprs})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: apply table ip %s: %w", natTableName, err)
	}
	return nil
}

// removeNAT deletes table ip paddock-nat from the namespace nsFd if it
// exists. It lists first so that, with NAT off and nothing left over, the
// host's ruleset is not even written to.
func removeNAT(nsFd int) (removed bool, err error) {
	c, err := nftables.New(nftables.WithNetNSFd(nsFd))
	if err != nil {
		return false, fmt.Errorf("nftables: %w", err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return false, fmt.Errorf("nftables: list tables: %w", err)
	}
	if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == natTableName }) {
		return false, nil
	}
	t, _, _ := natTable()
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil // removed by someone else in between
		}
		return false, fmt.Errorf("nftables: delete table ip %s: %w", natTableName, err)
	}
	return true, nil
}

// ifPrefix compares the first len(prefix) bytes of an interface name, the
// way nft compiles a trailing "*" wildcard.
func ifPrefix(key expr.MetaKey, op expr.CmpOp, prefix []byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: prefix},
	}
}

// inPrefix matches an IPv4 header address (offset 12: source, 16:
// destination) inside p.
func inPrefix(offset uint32, p netip.Prefix) []expr.Any {
	m := make([]byte, 4)
	for i := range p.Bits() {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: m, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()},
	}
}

// ctEstablished matches ct state established,related.
func ctEstablished() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
	}
}
