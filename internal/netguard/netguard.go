// Package netguard names the address ranges that are not the public
// internet and decides which addresses paddock may connect to on a tenant's
// behalf.
//
// Two tiers:
//
//   - Reserved: never reached for a tenant, whatever the operator allows:
//     "this network", link-local (the cloud metadata services of AWS, GCP,
//     Azure, OCI, DigitalOcean, OpenStack live at 169.254.169.254), the
//     metadata and host endpoints that sit elsewhere (Alibaba's
//     100.100.100.200, Azure's 168.63.129.16, EC2's and GCP's IPv6 ones),
//     multicast, 240/4 and broadcast, and NAT64 prefixes (which reach any
//     IPv4 address, reserved ones included).
//   - Private: networks that are not the internet and loopback: RFC 1918,
//     carrier-grade NAT (100.64/10: Tailscale, many VPNs and clouds' internal
//     services), benchmarking (198.18/15: fake-IP proxies), IETF protocol
//     assignments (192.0.0.0/24), unique-local and site-local IPv6. Refused
//     unless the operator allows them, as a whole or by prefix.
//
// A Guard applies them to host-side fetches (sources, image pulls): its
// Control runs right before connect(2) on the resolved address, so what is
// checked is what is dialled and a DNS answer cannot steer around it.
// Sandbox egress (package netns) refuses the same ranges with nftables
// inside each sandbox's namespace.
package netguard

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// Reserved are never reachable for a tenant; see the package comment.
var Reserved = prefixes(
	"0.0.0.0/8",          // "this network"
	"169.254.0.0/16",     // link-local; metadata of most clouds at 169.254.169.254
	"100.100.100.200/32", // Alibaba Cloud metadata
	"168.63.129.16/32",   // Azure host endpoint (WireServer, agent, health)
	"224.0.0.0/4",        // multicast
	"240.0.0.0/4",        // reserved, and 255.255.255.255
	"::/128",             // unspecified
	"fe80::/10",          // link-local
	"ff00::/8",           // multicast
	"64:ff9b::/96",       // NAT64, well-known prefix
	"64:ff9b:1::/48",     // NAT64, local use
	"fd00:ec2::254/128",  // EC2 metadata over IPv6
	"fd20:ce::254/128",   // GCP metadata over IPv6
)

// Private are refused unless allowed; see the package comment.
var Private = prefixes(
	"127.0.0.0/8",    // loopback
	"::1/128",        // loopback
	"10.0.0.0/8",     // RFC 1918
	"172.16.0.0/12",  // RFC 1918
	"192.168.0.0/16", // RFC 1918
	"100.64.0.0/10",  // carrier-grade NAT
	"198.18.0.0/15",  // benchmarking
	"192.0.0.0/24",   // IETF protocol assignments
	"fc00::/7",       // unique local
	"fec0::/10",      // site-local (deprecated)
	"100::/64",       // discard-only
)

// In reports whether addr (IPv4-mapped IPv6 counts as IPv4) is in one of ps.
func In(ps []netip.Prefix, addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range ps {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// ErrBlocked is what every refusal of a Guard wraps.
var ErrBlocked = errors.New("address refused by paddock's network guard")

// BlockedError is a refused connection: the address and why.
type BlockedError struct {
	Addr   string
	Reason string
}

func (e *BlockedError) Error() string {
	return "connection to " + e.Addr + " refused: " + e.Reason
}

func (e *BlockedError) Unwrap() error { return ErrBlocked }

// Guard decides which addresses a host-side fetch may connect to. The zero
// value refuses Reserved and Private ranges and lets the rest through.
type Guard struct {
	// AllowPrivate lets fetches reach every Private range (a LAN server,
	// tests on loopback). Reserved and Deny still win.
	AllowPrivate bool
	// Allow lists prefixes reachable though Private (a company's git server
	// or registry). Reserved and Deny still win.
	Allow []netip.Prefix
	// Deny lists prefixes never reachable: the sandbox pool (a fetch must
	// not be served by a sandbox) and the operator's blocked ranges.
	Deny []netip.Prefix
	// Hint names the setting that allows private addresses, for the error
	// message (e.g. "paddock serve --source-allow-private").
	Hint string
}

// Validate reports a prefix that is not one.
func (g Guard) Validate() error {
	for _, ps := range [][]netip.Prefix{g.Allow, g.Deny} {
		for _, p := range ps {
			if !p.IsValid() {
				return fmt.Errorf("netguard: invalid prefix %v", p)
			}
		}
	}
	return nil
}

// Check returns a *BlockedError when addr may not be reached.
func (g Guard) Check(addr netip.Addr) error {
	addr = addr.Unmap()
	switch {
	case !addr.IsValid():
		return &BlockedError{Addr: "an invalid address", Reason: "not an IP address"}
	case In(g.Deny, addr):
		return &BlockedError{Addr: addr.String(), Reason: "the address is in a denied range (the sandbox network or one the operator blocks)"}
	case In(Reserved, addr) || addr.IsLinkLocalUnicast() || addr.IsMulticast() || addr.IsUnspecified():
		return &BlockedError{Addr: addr.String(), Reason: "link-local, metadata, multicast and reserved addresses are never reachable"}
	case g.AllowPrivate || In(g.Allow, addr):
		return nil
	case In(Private, addr) || addr.IsLoopback() || addr.IsPrivate():
		reason := "loopback and private addresses are not allowed"
		if g.Hint != "" {
			reason += " (" + g.Hint + ")"
		}
		return &BlockedError{Addr: addr.String(), Reason: reason}
	}
	return nil
}

// Control is a net.Dialer Control: it runs right before connect(2) with the
// resolved address, so no DNS rebinding happens between check and use.
func (g Guard) Control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &BlockedError{Addr: address, Reason: "not an IP address and port"}
	}
	return g.Check(ap.Addr())
}

// Transport returns an HTTP transport whose every connection, redirects
// included, passes Control. It uses no proxy from the environment: the
// proxy would be dialled instead of the target and make the guard moot.
func (g Guard) Transport() *http.Transport {
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: g.Control}
	return &http.Transport{
		Proxy:                  nil,
		DialContext:            d.DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           16,
		IdleConnTimeout:        60 * time.Second,
		TLSHandshakeTimeout:    15 * time.Second,
		ResponseHeaderTimeout:  2 * time.Minute,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 64 << 10,
	}
}
