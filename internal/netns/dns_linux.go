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
)

// upstreamTimeout bounds one upstream exchange.
const upstreamTimeout = 2 * time.Second

// resolver is one sandbox's DNS server, bound to the host end of its veth.
// Start happens in startResolver; Close stops its goroutines and waits.
type resolver struct {
	m      *Manager
	id     string
	nsFd   int // the sandbox's namespace (owned by the Manager's entry)
	log    *slog.Logger
	policy atomic.Pointer[Policy]
	udp    *dns.Server
	tcp    *dns.Server
	wg     sync.WaitGroup
}

func (m *Manager) startResolver(id string, addr netip.Addr, nsFd int, p Policy) (*resolver, error) {
	r := &resolver{m: m, id: id, nsFd: nsFd, log: m.log.With("sandbox", id)}
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
	r.tcp = &dns.Server{Listener: ln, Handler: r, NotifyStartedFunc: notify, ReadTimeout: 5 * time.Second}
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

// ServeDNS answers one query: REFUSED unless the policy allows the name,
// else the upstream's answer, whose addresses are allowed first (custom
// mode) so the sandbox's connect right after the lookup passes.
func (r *resolver) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	p := r.policy.Load()
	reply := func(rcode int) {
		m := new(dns.Msg)
		m.SetRcode(req, rcode)
		w.WriteMsg(m)
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
	network := "udp"
	if _, ok := w.LocalAddr().(*net.TCPAddr); ok {
		network = "tcp"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*upstreamTimeout)
	defer cancel()
	resp, err := r.m.exchange(ctx, req, network)
	if err != nil {
		r.log.Warn("netns: dns upstream failed", "name", name, "err", err)
		reply(dns.RcodeServerFailure)
		return
	}
	if p.Mode == ModeCustom {
		var addrs []netip.Addr
		ttl := maxDNSTimeout
		for _, rr := range resp.Answer {
			var a netip.Addr
			switch rr := rr.(type) {
			case *dns.A:
				a, _ = netip.AddrFromSlice(rr.A.To4())
			case *dns.AAAA:
				a, _ = netip.AddrFromSlice(rr.AAAA)
			default:
				continue
			}
			addrs = append(addrs, a)
			ttl = min(ttl, time.Duration(rr.Header().Ttl)*time.Second)
		}
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

// exchange forwards req to the upstream servers in turn, from the host-side
// namespace.
func (m *Manager) exchange(ctx context.Context, req *dns.Msg, network string) (*dns.Msg, error) {
	var errs []error
	for _, up := range m.cfg.Upstream {
		var conn net.Conn
		err := m.inHost(func() error {
			d := net.Dialer{Timeout: upstreamTimeout}
			var err error
			conn, err = d.DialContext(ctx, network, up.String())
			return err
		})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c := &dns.Client{Net: network, Timeout: upstreamTimeout}
		resp, _, err := c.ExchangeWithConnContext(ctx, req, &dns.Conn{Conn: conn})
		conn.Close()
		if err == nil {
			return resp, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", up, err))
	}
	return nil, errors.Join(errs...)
}
