package netns

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/paddock-dev/paddock/internal/dnsfilter"
	"golang.org/x/net/netutil"
	"golang.org/x/time/rate"
)

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
	ctx, cancel := context.WithTimeout(context.Background(), dnsfilter.UpstreamTimeout+time.Second)
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
	name := dnsfilter.QueryName(req)
	if name == "" {
		reply(dns.RcodeFormatError)
		return
	}
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
	ctx, cancel := context.WithTimeout(context.Background(), 2*dnsfilter.UpstreamTimeout)
	defer cancel()
	resp, err := r.m.up.Exchange(ctx, req, network)
	if err != nil {
		// Debug: the names are the sandbox's, and so is a flood of them.
		r.log.Debug("netns: dns upstream failed", "name", name, "err", err)
		reply(dns.RcodeServerFailure)
		return
	}
	addrs, ttl, dropped, allBlocked := dnsfilter.FilterAnswer(resp, r.blocked(p))
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
