package netns

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"

	"go4.org/netipx"

	"github.com/paddock-dev/paddock/internal/dnsfilter"
	"github.com/paddock-dev/paddock/internal/netguard"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// DefaultPool is the address pool sandboxes get their /30 from.
var DefaultPool = netip.MustParsePrefix("10.213.0.0/16")

// Policy modes.
const (
	ModeAllowAll = "allow-all"
	ModeDenyAll  = "deny-all"
	ModeCustom   = "custom"
)

// Limits on a policy, so one sandbox cannot make the kernel or the resolver
// work through huge lists.
const (
	maxDomains = 256
	maxCIDRs   = 1024
)

// Default limits of each sandbox's resolver: dnsfilter's.
const (
	DefaultDNSRate        = dnsfilter.DefaultRate
	DefaultDNSBurst       = dnsfilter.DefaultBurst
	DefaultDNSMaxInFlight = dnsfilter.DefaultMaxInFlight
)

// Config configures a Manager.
type Config struct {
	// DataDir is paddock's data dir; namespaces are pinned under DataDir/netns.
	DataDir string
	// Pool is the IPv4 prefix sandboxes get a /30 from (default 10.213.0.0/16).
	Pool netip.Prefix
	// HostNS is the path of the network namespace that plays the host side
	// (veth host ends, resolver sockets, upstream DNS queries). Empty means
	// the namespace paddock runs in.
	HostNS string
	// Upstream lists the DNS servers the resolver forwards to (default: the
	// nameservers of /etc/resolv.conf).
	Upstream []netip.AddrPort
	// BlockCIDRs are refused to every sandbox, whatever its policy, on top of
	// the built-in list (a public service the operator keeps out of reach).
	// They win over AllowPrivate.
	BlockCIDRs []netip.Prefix
	// AllowPrivate lists parts of netguard.Private (RFC 1918, 100.64/10,
	// 198.18/15 ...) that sandboxes may reach, as their policy says: those
	// ranges are refused by default in every mode. It never opens
	// netguard.Reserved (link-local, metadata), loopback, the host's own
	// addresses, the pool or BlockCIDRs.
	AllowPrivate []netip.Prefix
	// DNSRate and DNSBurst bound the queries one sandbox's resolver answers
	// (a token bucket: DNSRate per second, DNSBurst at once); DNSMaxInFlight
	// bounds the queries it has upstream at once. Over either, a query gets
	// REFUSED. Defaults: DefaultDNSRate, DefaultDNSBurst,
	// DefaultDNSMaxInFlight.
	DNSRate        float64
	DNSBurst       int
	DNSMaxInFlight int
	// NAT makes allowed egress routable past the host: New sets
	// net.ipv4.ip_forward=1 in the host-side namespace and (re)programs
	// table "ip paddock-nat" there, masquerading the pool on every interface
	// that is not one of this instance's veths. Each sandbox's egress policy
	// still decides first. Off (the default), New removes that table if an
	// earlier run left it and leaves ip_forward as it finds it. One
	// NAT-enabled paddock per host namespace: the table name is fixed.
	NAT bool
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// withDefaults fills the zero fields of c.
func (c Config) withDefaults() (Config, error) {
	if !c.Pool.IsValid() {
		c.Pool = DefaultPool
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.DNSRate == 0 {
		c.DNSRate = DefaultDNSRate
	}
	if c.DNSBurst == 0 {
		c.DNSBurst = DefaultDNSBurst
	}
	if c.DNSMaxInFlight == 0 {
		c.DNSMaxInFlight = DefaultDNSMaxInFlight
	}
	if len(c.Upstream) == 0 {
		ups, err := dnsfilter.Nameservers("/etc/resolv.conf")
		if err != nil {
			return c, err
		}
		c.Upstream = ups
	}
	return c, nil
}

// Validate reports whether c (after defaults) can be used.
func (c Config) Validate() error {
	if c.DataDir == "" {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "netns: DataDir is required")
	}
	p := c.Pool
	if !p.IsValid() || !p.Addr().Is4() || p.Bits() > 30 || p.Masked() != p {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "netns: pool %v must be a masked IPv4 prefix of /30 or larger", p)
	}
	if len(c.Upstream) == 0 {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "netns: no upstream DNS server")
	}
	for _, u := range c.Upstream {
		if !u.IsValid() || u.Port() == 0 {
			return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "netns: invalid upstream DNS server %v", u)
		}
	}
	for _, b := range c.BlockCIDRs {
		if !b.IsValid() {
			return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "netns: invalid BlockCIDRs entry %v", b)
		}
	}
	for _, a := range c.AllowPrivate {
		if !a.IsValid() {
			return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "netns: invalid AllowPrivate entry %v", a)
		}
	}
	if c.DNSRate < 0 || c.DNSBurst < 0 || c.DNSMaxInFlight < 0 {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "netns: DNS limits must not be negative")
	}
	return nil
}

// Policy is a sandbox's egress policy.
type Policy struct {
	Mode         string         `json:"mode"`
	AllowDomains []string       `json:"allowDomains,omitempty"`
	AllowCIDRs   []netip.Prefix `json:"allowCIDRs,omitempty"`
	DenyCIDRs    []netip.Prefix `json:"denyCIDRs,omitempty"`
}

// Validate reports whether p is well formed. Domains are lowercase host
// names, optionally with a leading "*." (subdomains only).
func (p Policy) Validate() error {
	switch p.Mode {
	case ModeAllowAll, ModeDenyAll, ModeCustom:
	default:
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_policy", "network policy mode %q is not one of allow-all, deny-all, custom", p.Mode)
	}
	if p.Mode != ModeCustom && (len(p.AllowDomains) > 0 || len(p.AllowCIDRs) > 0) {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_policy", "allowDomains and allowCIDRs need mode custom, not %s", p.Mode)
	}
	if len(p.AllowDomains) > maxDomains {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_policy", "at most %d allowed domains", maxDomains)
	}
	if len(p.AllowCIDRs)+len(p.DenyCIDRs) > maxCIDRs {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_policy", "at most %d CIDRs", maxCIDRs)
	}
	for _, d := range p.AllowDomains {
		if !validDomain(d) {
			return sandbox.Errorf(sandbox.ErrInvalid, "invalid_policy", "invalid domain %q: want a lowercase host name, optionally with a leading \"*.\"", d)
		}
	}
	for _, c := range slices.Concat(p.AllowCIDRs, p.DenyCIDRs) {
		if !c.IsValid() || c.Addr().Zone() != "" {
			return sandbox.Errorf(sandbox.ErrInvalid, "invalid_policy", "invalid CIDR %v", c)
		}
	}
	return nil
}

// validDomain checks d is a lowercase DNS host name with an optional leading
// "*." wildcard label.
func validDomain(d string) bool {
	d = strings.TrimPrefix(d, "*.")
	if d == "" || len(d) > 253 || strings.HasSuffix(d, ".") {
		return false
	}
	for label := range strings.SplitSeq(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' && r != '_' {
				return false
			}
		}
	}
	return true
}

// allowsName reports whether the policy lets the sandbox resolve name
// (lowercase, no trailing dot).
func (p *Policy) allowsName(name string) bool {
	return dnsfilter.AllowsName(p.Mode, p.AllowDomains, name)
}

// Network is a sandbox's network as Setup made it.
type Network struct {
	ID string `json:"id"`
	// NSPath is the pinned namespace: the OCI network namespace path.
	NSPath string `json:"nsPath"`
	// HostIf is the host end of the veth.
	HostIf string `json:"hostIf"`
	// HostAddr is the host end's address, the sandbox's gateway.
	HostAddr netip.Addr `json:"hostAddr"`
	// SandboxAddr is eth0's address inside the sandbox.
	SandboxAddr netip.Addr `json:"sandboxAddr"`
	// DNS is the resolver the sandbox's resolv.conf must name.
	DNS netip.Addr `json:"dns"`
	// Policy is the egress policy in force.
	Policy Policy `json:"policy"`
}

// hostIfName derives the host end's name: "pd", 4 hex digits of the
// instance's tag (from its data dir), 8 of sha256(id) — 14 characters,
// within IFNAMSIZ, stable across restarts. The tag keeps two paddock
// instances (or a test and a server) on one host from taking each other's
// veths for orphans.
func hostIfName(tag, id string) string {
	sum := sha256.Sum256([]byte(id))
	return "pd" + tag + hex.EncodeToString(sum[:4])
}

// instanceTag is the 4 hex digits hostIfName puts after "pd".
func instanceTag(dataDir string) string {
	sum := sha256.Sum256([]byte(filepath.Clean(dataDir)))
	return hex.EncodeToString(sum[:2])
}

// isOurIfName matches names hostIfName makes for this instance's tag.
func isOurIfName(tag, n string) bool {
	if len(n) != 14 || !strings.HasPrefix(n, "pd"+tag) {
		return false
	}
	for _, c := range n[6:] {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// slotAddrs returns the host and sandbox addresses of slot n of pool.
func slotAddrs(pool netip.Prefix, n int) (host, sb netip.Addr) {
	b := pool.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(n) * 4
	base := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	host = base.Next()
	return host, host.Next()
}

// slotOf returns the slot of a sandbox or host address in pool, or -1.
func slotOf(pool netip.Prefix, a netip.Addr) int {
	if !a.Is4() || !pool.Contains(a) {
		return -1
	}
	p, b := pool.Addr().As4(), a.As4()
	pv := uint32(p[0])<<24 | uint32(p[1])<<16 | uint32(p[2])<<8 | uint32(p[3])
	bv := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	return int((bv - pv) / 4)
}

// poolSlots is how many /30s pool holds.
func poolSlots(pool netip.Prefix) int { return 1 << (32 - pool.Bits() - 2) }

// hardBlocked are refused to every sandbox whatever the operator allows, on
// top of the host's addresses and the pool: netguard.Reserved (link-local,
// metadata, multicast, broadcast, NAT64), loopback off lo, and IPv4-mapped
// IPv6 (the kernel would send those as IPv4, around the IPv6 rules).
var hardBlocked = slices.Concat(netguard.Reserved, []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("::ffff:0:0/96"),
})

// staticBlocked is what the configuration refuses to every sandbox: the
// pool, hardBlocked, netguard.Private but AllowPrivate, and BlockCIDRs
// (which win over AllowPrivate). The host's addresses come on top (they
// change while paddock runs).
func (c Config) staticBlocked() (*netipx.IPSet, error) {
	var b netipx.IPSetBuilder
	for _, p := range netguard.Private {
		b.AddPrefix(p)
	}
	for _, p := range c.AllowPrivate {
		b.RemovePrefix(p)
	}
	for _, p := range slices.Concat(hardBlocked, []netip.Prefix{c.Pool}, c.BlockCIDRs) {
		b.AddPrefix(p)
	}
	return b.IPSet()
}

// withBlocked returns base plus the prefixes ps and the addresses as.
func withBlocked(base *netipx.IPSet, ps []netip.Prefix, as []netip.Addr) (*netipx.IPSet, error) {
	if len(ps) == 0 && len(as) == 0 {
		return base, nil
	}
	var b netipx.IPSetBuilder
	b.AddSet(base)
	for _, p := range ps {
		b.AddPrefix(p)
	}
	for _, a := range as {
		b.Add(a)
	}
	return b.IPSet()
}

// ValidSysctl reports whether key is a network sysctl by dotted name
// (net.ipv4.ip_unprivileged_port_start), the ones a network namespace
// holds; names with a slash (an interface name with a dot) are not.
func ValidSysctl(key string) bool {
	rest, ok := strings.CutPrefix(key, "net.")
	if !ok {
		return false
	}
	for part := range strings.SplitSeq(rest, ".") {
		if part == "" || strings.TrimFunc(part, func(r rune) bool {
			return r == '_' || r == '-' || '0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z'
		}) != "" {
			return false
		}
	}
	return true
}

// GuardTable is the table GuardNode programs in a Pod's network namespace.
const GuardTable = "paddock-node"

// NodeGuard says what GuardNode refuses a Kubernetes Pod (cmd/paddock-runc
// installs it in each Pod's network namespace). NetworkPolicy decides the
// traffic a network plugin forwards, but a Pod's connections to its own
// node's addresses are delivered, not forwarded, and most plugins let them
// through: the guard drops them inside the Pod's namespace instead. Its
// output chain, of table inet paddock-node (policy accept: everything else
// is NetworkPolicy's), accepts in order loopback, established and related
// packets (answers to the kubelet's probes and to paddock's connections
// into the Pod), ICMPv6 neighbour discovery and MLD, and Allow; then it
// drops every destination the node delivers to itself (the addresses of
// all its interfaces, v4 and v6, its local routes and broadcast addresses,
// read when GuardNode runs) but NotNode, and, whatever NotNode says,
// hardBlocked: link-local (169.254/16 and fe80::/10: the clouds' metadata),
// the other metadata addresses and reserved ranges of netguard.Reserved,
// loopback off lo and IPv4-mapped IPv6. The cluster's Pod and Service
// ranges are not refused (NetworkPolicy decides about them) unless the
// node has an address in them (a bridge's gateway, kube-proxy IPVS's
// kube-ipvs0: list the Service range in NotNode then).
//
// The guard holds against processes without CAP_NET_ADMIN over the Pod's
// network namespace, that is in the user namespace that owns it: a Pod's
// containers in a user namespace of their own (hostUsers: false) have
// none, whatever they hold in theirs.
type NodeGuard struct {
	// NodeNS is the node's network namespace; "" is the caller's.
	NodeNS string
	// Allow are accepted (TCP and UDP) although they are the node's or
	// link-local: a node-local DNS cache (169.254.20.10:53, and the
	// cluster DNS's Service address where the cache listens on it too).
	Allow []netip.AddrPort
	// NotNode are ranges whose addresses on the node are not taken for
	// the node's (the Service range under kube-proxy's IPVS mode, which
	// puts every Service address on the node). They never open
	// hardBlocked.
	NotNode []netip.Prefix
}

// Validate reports an invalid address, port or prefix.
func (g NodeGuard) Validate() error {
	for _, a := range g.Allow {
		if !a.IsValid() || a.Port() == 0 || a.Addr().Zone() != "" {
			return fmt.Errorf("netns: node guard: invalid allowed address %v", a)
		}
	}
	for _, p := range g.NotNode {
		if !p.IsValid() || p.Addr().Zone() != "" {
			return fmt.Errorf("netns: node guard: invalid prefix %v", p)
		}
	}
	return nil
}
