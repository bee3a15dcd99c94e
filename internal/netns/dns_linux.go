package netns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/netutil"
	"golang.org/x/time/rate"
)

// upstreamTimeout bounds one upstream exchange.
const upstreamTimeout = 2 * time.Second

const (
	// maxDNSInFlightTotal caps the queries all resolvers have upstream at
	// once: each holds a socket and a goroutine in paddock.
	maxDNSInFlightTotal = 1024
	// maxDNSTCPConns caps one resolver's open TCP connections (each an fd
	// in paddock); more wait in the kernel's accept queue.
	maxDNSTCPConns = 16
)

// resolver is one sandbox's DNS server, bound to the host end of its veth.
// Start happens in startResolver; Close stops its goroutines and waits.
type resolver struct {
	m      *Manager
	id     string
	nsFd   int // the sandbox's namespace (owned by the Manager's entry)
	log    *slog.Logger
	policy atomic.Pointer[Policy]
	limit  *rate.Limiter
	slots  chan struct{} // one per query upstream: Config.DNSMaxInFlight
	udp    *dns.Server
	tcp    *dns.Server
	wg     sync.WaitGroup
}

func (m *Manager) startResolver(id string, addr netip.Addr, nsFd int, p Policy) (*resolver, error) {
	r := &resolver{m: m, id: id, nsFd: nsFd, log: m.log.With("sandbox", id),
		limit: rate.NewLimiter(rate.Limit(m.cfg.DNSRate), m.cfg.DNSBurst),
		slots: make(chan struct{}, m.cfg.DNSMaxInFlight)}
	r.policy.Store(&p)
	ap := netip.AddrPortFrom(addr, 53).String()
	var pc net.PacketConn
	var ln net.Listener
	// Sockets belong to the namespace they are created in: create them in
	// the host-side namespace, on the veth's address only.
	// No IP_FREEBIND on purpose: binding fails unless the address is local
	// to the namespace the socket lands in, which catches a socket created
	// in the wrong namespace. MPTCP off: plain DNS over TCP.
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	err := m.inHost(func() error {
		var err error
		if pc, err = lc.ListenPacket(context.Background(), "udp4", ap); err != nil {
			return err
		}
		if ln, err = lc.Listen(context.Background(), "tcp4", ap); err != nil {
			pc.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("resolver listen on %s: %w", ap, err)
	}
	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	r.udp = &dns.Server{PacketConn: pc, Handler: r, NotifyStartedFunc: notify}
	r.tcp = &dns.Server{Listener: netutil.LimitListener(ln, maxDNSTCPConns), Handler: r, NotifyStartedFunc: notify,
		ReadTimeout: 5 * time.Second}
	for _, s := range []*dns.Server{r.udp, r.tcp} {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			if err := s.ActivateAndServe(); err != nil {
				r.log.Warn("netns: resolver stopped", "err", err)
			}
		}()
	}
	// Wait until both serve, so Close never races a server that has not
	// started (miekg/dns refuses to shut those down).
	<-started
	<-started
	return r, nil
}

// Close stops the resolver and waits for its goroutines.
func (r *resolver) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), upstreamTimeout+time.Second)
	defer cancel()
	r.udp.ShutdownContext(ctx)
	r.tcp.ShutdownContext(ctx)
	r.wg.Wait()
}

func (r *resolver) setPolicy(p Policy) { r.policy.Store(&p) }

// acquire takes one of the resolver's and one of the Manager's upstream
// slots, without waiting: a sandbox that floods gets REFUSED, it does not
// queue work in paddock.
func (r *resolver) acquire() (release func(), ok bool) {
	select {
	case r.slots <- struct{}{}:
	default:
		return nil, false
	}
	select {
	case r.m.dnsSlots <- struct{}{}:
	default:
		<-r.slots
		return nil, false
	}
	return func() { <-r.m.dnsSlots; <-r.slots }, true
}

// blocked reports whether the sandbox may not reach a: the Manager's
// blocked ranges (host, pool, reserved, private but what the operator
// allows, BlockCIDRs) and the policy's DenyCIDRs.
func (r *resolver) blocked(p *Policy) func(netip.Addr) bool {
	set := r.m.blocked.Load()
	return func(a netip.Addr) bool {
		a = a.Unmap()
		if set.Contains(a) {
			return true
		}
		for _, d := range p.DenyCIDRs {
			if d.Contains(a) {
				return true
			}
		}
		return false
	}
}

// ServeDNS answers one query: REFUSED past the rate or in-flight limit, or
// unless the policy allows the name; else the upstream's answer without the
// addresses the sandbox may not reach (REFUSED if that leaves none), whose
// addresses are allowed first (custom mode) so the sandbox's connect right
// after the lookup passes.
func (r *resolver) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	p := r.policy.Load()
	reply := func(rcode int) {
		m := new(dns.Msg)
		m.SetRcode(req, rcode)
		w.WriteMsg(m)
	}
	if !r.limit.Allow() {
		r.log.Debug("netns: dns refused: query rate limit")
		reply(dns.RcodeRefused)
		return
	}
	if req.Opcode != dns.OpcodeQuery || len(req.Question) != 1 {
		reply(dns.RcodeFormatError)
		return
	}
	name := strings.TrimSuffix(strings.ToLower(req.Question[0].Name), ".")
	if !p.allowsName(name) {
		r.log.Debug("netns: dns refused", "name", name)
		reply(dns.RcodeRefused)
		return
	}
	release, ok := r.acquire()
	if !ok {
		r.log.Debug("netns: dns refused: too many queries in flight", "name", name)
		reply(dns.RcodeRefused)
		return
	}
	defer release()
	network := "udp"
	if _, ok := w.LocalAddr().(*net.TCPAddr); ok {
		network = "tcp"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*upstreamTimeout)
	defer cancel()
	resp, err := r.m.up.exchange(ctx, req, network)
	if err != nil {
		// Debug: the names are the sandbox's, and so is a flood of them.
		r.log.Debug("netns: dns upstream failed", "name", name, "err", err)
		reply(dns.RcodeServerFailure)
		return
	}
	addrs, ttl, dropped, allBlocked := filterAnswer(resp, r.blocked(p))
	if dropped > 0 {
		r.log.Debug("netns: dns dropped blocked addresses", "name", name, "dropped", dropped, "kept", len(addrs))
	}
	if allBlocked {
		// Only blocked addresses (or a CNAME chain ending in them): DNS
		// rebinding into the host's networks, or a name not for sandboxes.
		reply(dns.RcodeRefused)
		return
	}
	if p.Mode == ModeCustom {
		if err := allowResolved(r.nsFd, addrs, ttl); err != nil {
			// Better no answer than one the firewall then silently drops.
			r.log.Warn("netns: dns allow addresses", "name", name, "err", err)
			reply(dns.RcodeServerFailure)
			return
		}
	}
	resp.Id = req.Id
	w.WriteMsg(resp)
}

// filterAnswer removes from resp every address blocked reports: A and AAAA
// records in the answer and additional sections, and the address hints of
// SVCB and HTTPS records (browsers connect to those). It returns the
// answer's remaining addresses with their smallest TTL, how many addresses
// it dropped, and whether the answer held addresses that were all dropped
// (then the name leads only to blocked addresses, through CNAMEs or not).
func filterAnswer(resp *dns.Msg, blocked func(netip.Addr) bool) (addrs []netip.Addr, ttl time.Duration, dropped int, allBlocked bool) {
	ttl = maxDNSTimeout
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

// upstream is every resolver's client of the upstream servers. UDP sockets
// are pooled: made in the host-side namespace once, not per query, and
// reused, each by one query at a time, for a bounded number of queries.
// Each query goes out with an ID of paddock's choosing (not the sandbox's)
// and its answer must match the question, so one sandbox cannot feed
// another an answer through a shared socket. TCP (only for truncated
// answers) dials per query.
type upstream struct {
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

func newUpstream(servers []netip.AddrPort, inHost func(func() error) error) *upstream {
	return &upstream{servers: servers, inHost: inHost, idle: map[netip.AddrPort][]*upConn{}}
}

// close closes the idle sockets; sockets in use are closed when returned.
func (u *upstream) close() {
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

func (u *upstream) dial(ctx context.Context, network string, server netip.AddrPort) (*upConn, error) {
	var conn net.Conn
	err := u.inHost(func() error {
		d := net.Dialer{Timeout: upstreamTimeout}
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
func (u *upstream) get(ctx context.Context, server netip.AddrPort) (*upConn, error) {
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
func (u *upstream) put(server netip.AddrPort, c *upConn) {
	c.uses++
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed || c.uses >= maxUsesPerSocket || len(u.idle[server]) >= maxIdlePerUpstream {
		c.c.Close()
		return
	}
	u.idle[server] = append(u.idle[server], c)
}

// exchange forwards req to the upstream servers in turn, from the host-side
// namespace, and returns the first answer, with req's ID.
func (u *upstream) exchange(ctx context.Context, req *dns.Msg, network string) (*dns.Msg, error) {
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

func (u *upstream) exchangeOne(ctx context.Context, q *dns.Msg, network string, server netip.AddrPort) (*dns.Msg, error) {
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
	cl := &dns.Client{Net: network, Timeout: upstreamTimeout}
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
