package netns

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
)

// The host's addresses are refused to every sandbox, and they change while
// sandboxes run: a new NIC, docker0, a VPN, a DHCP lease. The Manager keeps
// them current from netlink's address notifications, and rewrites every
// sandbox's rules when an address outside the static blocked ranges comes
// or goes. Between the change and the rewrite (the debounce below and one
// netlink batch per sandbox) a new address is reachable; most such
// addresses (RFC 1918, 100.64/10, link-local) are refused by the static
// ranges anyway.
const (
	// hostDebounce gathers a burst of address events into one rewrite.
	hostDebounce = 50 * time.Millisecond
	// hostResubscribeWait is the pause before subscribing again after the
	// subscription broke (the kernel drops it when its buffer overflows).
	hostResubscribeWait = time.Second
	// hostEventBuffer is the channel between netlink's reader and
	// watchHost; the socket buffer below absorbs bursts past it.
	hostEventBuffer   = 256
	hostSocketBuffers = 1 << 20
	// dumpAttempts bounds the retries of one interrupted address dump
	// (about 2 s of pauses in all).
	dumpAttempts = 100
)

// hostSub is one netlink address subscription in the host-side namespace.
type hostSub struct {
	updates chan netlink.AddrUpdate
	done    chan struct{}
}

// stop ends the subscription and waits for netlink's reader to finish.
func (s *hostSub) stop() {
	close(s.done)
	for range s.updates { // netlink closes it when its reader ends
	}
}

func (m *Manager) subscribeHost() (*hostSub, error) {
	s := &hostSub{updates: make(chan netlink.AddrUpdate, hostEventBuffer), done: make(chan struct{})}
	opts := netlink.AddrSubscribeOptions{
		ReceiveBufferSize: hostSocketBuffers,
		ErrorCallback:     func(err error) { m.log.Debug("netns: host address subscription", "err", err) },
	}
	if !m.sameNS {
		ns := vnetns.NsHandle(m.hostNS.Fd())
		opts.Namespace = &ns
	}
	if err := netlink.AddrSubscribeWithOptions(s.updates, s.done, opts); err != nil {
		return nil, err
	}
	return s, nil
}

// refreshHost reads the host-side addresses and, if those outside the
// static ranges changed, swaps m.blocked. Only New and watchHost call it.
func (m *Manager) refreshHost() (changed bool, err error) {
	host, err := m.listHost()
	if err != nil {
		return false, err
	}
	if m.blocked.Load() != nil && slices.Equal(host, m.hostAddrs) {
		return false, nil
	}
	set, err := withBlocked(m.static, nil, host)
	if err != nil {
		return false, fmt.Errorf("netns: blocked set: %w", err)
	}
	m.hostAddrs = host
	m.blocked.Store(set)
	return true, nil
}

// listHost dumps the host-side addresses outside the static ranges, sorted.
// A dump is interrupted (netlink.ErrDumpInterrupted) whenever an address
// changes while the kernel sends it, which on a host with a thousand
// sandboxes being created and removed is most of the time: it is retried,
// with a short pause, up to dumpAttempts times.
func (m *Manager) listHost() ([]netip.Addr, error) {
	var (
		addrs []netlink.Addr
		err   error
	)
	for i := range dumpAttempts {
		addrs, err = m.host.AddrList(nil, netlink.FAMILY_ALL)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
		m.dumpRetries.Add(1)
		time.Sleep(min(time.Duration(i+1)*time.Millisecond, 20*time.Millisecond))
	}
	if err != nil {
		return nil, fmt.Errorf("netns: list host addresses: %w", err)
	}
	m.hostDumps.Add(1)
	var host []netip.Addr
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			if ip = ip.Unmap(); !m.static.Contains(ip) {
				host = append(host, ip)
			}
		}
	}
	slices.SortFunc(host, netip.Addr.Compare)
	return slices.Compact(host), nil
}

// relevant reports whether an address event may change the blocked set:
// the pool's addresses (every Setup adds one), link-local ones and the rest
// of the static ranges never do.
func (m *Manager) relevant(u netlink.AddrUpdate) bool {
	ip, ok := netip.AddrFromSlice(u.LinkAddress.IP)
	return ok && !m.static.Contains(ip.Unmap())
}

// watchHost follows the host-side addresses until Close, starting with
// sub, and rewrites the sandboxes' rules when they change.
func (m *Manager) watchHost(sub *hostSub) {
	defer close(m.watchDone)
	debounce := time.NewTimer(0)
	<-debounce.C
	pending := false
	for {
		select {
		case <-m.stopWatch:
			sub.stop()
			return
		case u, ok := <-sub.updates:
			if !ok {
				// The kernel dropped the subscription (buffer overflow):
				// subscribe again and read everything afresh.
				m.log.Warn("netns: host address subscription lost; subscribing again")
				sub.stop()
				if sub = m.resubscribe(); sub == nil {
					return
				}
				pending = true
				debounce.Reset(0)
				continue
			}
			if m.relevant(u) && !pending {
				pending = true
				debounce.Reset(hostDebounce)
			}
		case <-debounce.C:
			pending = false
			changed, err := m.refreshHost()
			if err != nil {
				// Not dropped: the change that asked for this refresh
				// is still unread. Try again after a pause.
				m.log.Warn("netns: host addresses; retrying", "err", err)
				pending = true
				debounce.Reset(hostResubscribeWait)
				continue
			}
			if changed {
				m.log.Info("netns: host addresses changed; updating every sandbox's rules", "addresses", len(m.hostAddrs))
				m.reprogramAll()
			}
		}
	}
}

// resubscribe subscribes until it works or Close; nil means Close.
func (m *Manager) resubscribe() *hostSub {
	for {
		sub, err := m.subscribeHost()
		if err == nil {
			return sub
		}
		m.log.Warn("netns: subscribe to host addresses", "err", err)
		select {
		case <-m.stopWatch:
			return nil
		case <-time.After(hostResubscribeWait):
		}
	}
}

// reprogramAll rewrites the rules of every live network.
func (m *Manager) reprogramAll() {
	m.mu.Lock()
	ents := make([]*entry, 0, len(m.nets))
	for _, e := range m.nets {
		ents = append(ents, e)
	}
	m.mu.Unlock()
	for _, e := range ents {
		e.mu.Lock()
		if !e.gone && e.ns != nil && e.net.ID != "" {
			if err := m.reprogram(e); err != nil {
				m.log.Warn("netns: update rules for new host addresses", "sandbox", e.net.ID, "err", err)
			}
		}
		e.mu.Unlock()
	}
}
