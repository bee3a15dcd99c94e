// Package dnsfilter is what paddock's sandbox resolvers share, whichever
// driver runs them (package netns for runc and gVisor sandboxes, the
// kubernetes driver for Pods): which names a policy lets a sandbox
// resolve, the filtering of an answer's addresses, and the client of the
// upstream servers. A resolver keeps its own listener, limits and the
// enforcement of the addresses it lets through.
package dnsfilter

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Policy modes AllowsName knows (sandbox.NetworkPolicy's).
const (
	ModeAllowAll = "allow-all"
	ModeCustom   = "custom"
)

// Default limits of a sandbox's resolver: generous for package managers
// (a lookup or two per connection), far below what would strain paddock or
// the upstream servers. Rate and Burst make a token bucket of queries
// answered; MaxInFlight bounds the queries upstream at once.
const (
	DefaultRate        = 100
	DefaultBurst       = 200
	DefaultMaxInFlight = 32
)

// UpstreamTimeout bounds one upstream exchange.
const UpstreamTimeout = 2 * time.Second

// MaxTTL is the longest TTL FilterAnswer reports: an address is allowed
// at most this long after its lookup.
const MaxTTL = 24 * time.Hour

// AllowsName reports whether a policy of mode with the allowed domains
// lets a sandbox resolve name (lowercase, no trailing dot): allow-all any
// name, custom the domains (exact, or "*.suffix" for the subdomains of
// suffix, not suffix itself), any other mode none.
func AllowsName(mode string, domains []string, name string) bool {
	switch mode {
	case ModeAllowAll:
		return true
	case ModeCustom:
		for _, d := range domains {
			if suffix, ok := strings.CutPrefix(d, "*."); ok {
				if strings.HasSuffix(name, "."+suffix) {
					return true
				}
			} else if name == d {
				return true
			}
		}
	}
	return false
}

// QueryName is the name req asks about, lowercase without the trailing
// dot, as AllowsName takes it; "" unless req is a query of one question.
func QueryName(req *dns.Msg) string {
	if req.Opcode != dns.OpcodeQuery || len(req.Question) != 1 {
		return ""
	}
	return strings.TrimSuffix(strings.ToLower(req.Question[0].Name), ".")
}

// Nameservers reads the nameservers of a resolv.conf file, on port 53.
func Nameservers(path string) ([]netip.AddrPort, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("default upstream DNS: %w", err)
	}
	defer f.Close()
	var out []netip.AddrPort
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			if a, err := netip.ParseAddr(fields[1]); err == nil {
				out = append(out, netip.AddrPortFrom(a.WithZone(""), 53))
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return out, nil
}

// FilterAnswer removes from resp every address blocked reports: A and AAAA
// records in the answer and additional sections, and the address hints of
// SVCB and HTTPS records (browsers connect to those). It returns the
// answer's remaining addresses with their smallest TTL, how many addresses
// it dropped, and whether the answer held addresses that were all dropped
// (then the name leads only to blocked addresses, through CNAMEs or not).
func FilterAnswer(resp *dns.Msg, blocked func(netip.Addr) bool) (addrs []netip.Addr, ttl time.Duration, dropped int, allBlocked bool) {
	ttl = MaxTTL
	answerDropped := 0
	keep := func(rrs []dns.RR, answer bool) []dns.RR {
		out := rrs[:0]
		for _, rr := range rrs {
			var a netip.Addr
			switch rr := rr.(type) {
			case *dns.A:
				a, _ = netip.AddrFromSlice(rr.A.To4())
			case *dns.AAAA:
				a, _ = netip.AddrFromSlice(rr.AAAA)
			case *dns.SVCB:
				rr.Value, dropped = filterHints(rr.Value, blocked, dropped)
				out = append(out, rr)
				continue
			case *dns.HTTPS:
				rr.Value, dropped = filterHints(rr.Value, blocked, dropped)
				out = append(out, rr)
				continue
			default:
				out = append(out, rr)
				continue
			}
			if !a.IsValid() || blocked(a) {
				dropped++
				if answer {
					answerDropped++
				}
				continue
			}
			out = append(out, rr)
			if answer {
				addrs = append(addrs, a)
				ttl = min(ttl, time.Duration(rr.Header().Ttl)*time.Second)
			}
		}
		return out
	}
	resp.Answer = keep(resp.Answer, true)
	resp.Extra = keep(resp.Extra, false)
	return addrs, ttl, dropped, answerDropped > 0 && len(addrs) == 0
}

// filterHints removes blocked addresses from the ipv4hint and ipv6hint of
// an SVCB or HTTPS record, and a hint left empty (the format wants at least
// one address), adding what it removed to dropped.
func filterHints(kvs []dns.SVCBKeyValue, blocked func(netip.Addr) bool, dropped int) ([]dns.SVCBKeyValue, int) {
	keep := func(ips []net.IP) []net.IP {
		var out []net.IP
		for _, ip := range ips {
			if a, ok := netip.AddrFromSlice(ip); !ok || blocked(a) {
				dropped++
				continue
			}
			out = append(out, ip)
		}
		return out
	}
	out := kvs[:0]
	for _, kv := range kvs {
		switch kv := kv.(type) {
		case *dns.SVCBIPv4Hint:
			if kv.Hint = keep(kv.Hint); len(kv.Hint) == 0 {
				continue
			}
		case *dns.SVCBIPv6Hint:
			if kv.Hint = keep(kv.Hint); len(kv.Hint) == 0 {
				continue
			}
		}
		out = append(out, kv)
	}
	return out, dropped
}

// Bounds of the upstream socket pool.
const (
	// maxIdlePerUpstream sockets wait for reuse per upstream server.
	maxIdlePerUpstream = 32
	// maxUsesPerSocket retires a socket after that many queries, so its
	// source port changes now and then (a fixed port makes spoofed answers
	// easier to land).
	maxUsesPerSocket = 100
)

// Upstream is every resolver's client of the upstream servers. UDP sockets
// are pooled: made in the host-side namespace once, not per query, and
// reused, each by one query at a time, for a bounded number of queries.
// Each query goes out with an ID of paddock's choosing (not the sandbox's)
// and its answer must match the question, so one sandbox cannot feed
// another an answer through a shared socket. TCP (only for truncated
// answers) dials per query.
type Upstream struct {
	servers []netip.AddrPort
	inHost  func(func() error) error

	mu     sync.Mutex
	idle   map[netip.AddrPort][]*upConn // guarded by mu
	closed bool                         // guarded by mu
}

type upConn struct {
	c    *dns.Conn
	uses int
}

// NewUpstream returns a client of servers. inHost, when not nil, runs
// each dial (the network namespace a socket is made in is its thread's);
// nil dials from the calling thread.
func NewUpstream(servers []netip.AddrPort, inHost func(func() error) error) *Upstream {
	if inHost == nil {
		inHost = func(fn func() error) error { return fn() }
	}
	return &Upstream{servers: servers, inHost: inHost, idle: map[netip.AddrPort][]*upConn{}}
}

// Close closes the idle sockets; sockets in use are closed when returned.
func (u *Upstream) Close() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.closed = true
	for s, conns := range u.idle {
		for _, c := range conns {
			c.c.Close()
		}
		delete(u.idle, s)
	}
}

func (u *Upstream) dial(ctx context.Context, network string, server netip.AddrPort) (*upConn, error) {
	var conn net.Conn
	err := u.inHost(func() error {
		d := net.Dialer{Timeout: UpstreamTimeout}
		var err error
		conn, err = d.DialContext(ctx, network, server.String())
		return err
	})
	if err != nil {
		return nil, err
	}
	return &upConn{c: &dns.Conn{Conn: conn}}, nil
}

// get returns an idle UDP socket to server, or a new one.
func (u *Upstream) get(ctx context.Context, server netip.AddrPort) (*upConn, error) {
	u.mu.Lock()
	if conns := u.idle[server]; len(conns) > 0 {
		c := conns[len(conns)-1]
		u.idle[server] = conns[:len(conns)-1]
		u.mu.Unlock()
		return c, nil
	}
	u.mu.Unlock()
	return u.dial(ctx, "udp", server)
}

// put gives a UDP socket that answered back to the pool, or closes it.
func (u *Upstream) put(server netip.AddrPort, c *upConn) {
	c.uses++
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed || c.uses >= maxUsesPerSocket || len(u.idle[server]) >= maxIdlePerUpstream {
		c.c.Close()
		return
	}
	u.idle[server] = append(u.idle[server], c)
}

// Exchange forwards req to the upstream servers in turn, (through inHost), and returns the first answer, with req's ID.
func (u *Upstream) Exchange(ctx context.Context, req *dns.Msg, network string) (*dns.Msg, error) {
	q := req.Copy()
	var errs []error
	for _, server := range u.servers {
		q.Id = dns.Id()
		resp, err := u.exchangeOne(ctx, q, network, server)
		if err == nil {
			resp.Id = req.Id
			return resp, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", server, err))
	}
	return nil, errors.Join(errs...)
}

func (u *Upstream) exchangeOne(ctx context.Context, q *dns.Msg, network string, server netip.AddrPort) (*dns.Msg, error) {
	var c *upConn
	var err error
	if network == "udp" {
		c, err = u.get(ctx, server)
	} else {
		c, err = u.dial(ctx, network, server)
	}
	if err != nil {
		return nil, err
	}
	cl := &dns.Client{Net: network, Timeout: UpstreamTimeout}
	resp, _, err := cl.ExchangeWithConnContext(ctx, q, c.c)
	if err == nil && !sameQuestion(q, resp) {
		err = errors.New("the answer is for another question")
	}
	if err != nil || network != "udp" {
		// A socket that failed may still receive the late answer: never
		// reuse it.
		c.c.Close()
		return resp, err
	}
	u.put(server, c)
	return resp, nil
}

// sameQuestion reports whether resp answers q's question (names compared
// without case: resolvers may randomize it).
func sameQuestion(q, resp *dns.Msg) bool {
	if len(q.Question) != 1 || len(resp.Question) != 1 {
		return false
	}
	a, b := q.Question[0], resp.Question[0]
	return a.Qtype == b.Qtype && a.Qclass == b.Qclass && strings.EqualFold(a.Name, b.Name)
}
