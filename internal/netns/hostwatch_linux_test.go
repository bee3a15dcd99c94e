package netns

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// Listing the host's addresses never fails while veths and addresses come
// and go (as other sandboxes' creates and removals make them): the dump is
// interrupted again and again on a host with many addresses, and retried.
func TestHostListingUnderChurn(t *testing.T) {
	tb := newTestbed(t)
	hh := handleAt(t, openNS(t, tb.hostPin))
	lo, err := hh.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	// Many addresses make a dump of many messages, so that changes land
	// in the middle of it (as ~1,400 sandboxes' veths did). Private ones:
	// the watcher ignores them, and they are gone with the namespace.
	const many = 3000
	for i := range many {
		a := netip.AddrFrom4([4]byte{10, 77, byte(i >> 8), byte(i)})
		if err := hh.AddrAdd(lo, &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(a, 32))}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	wg.Go(func() { churn(ctx, t, hh) })
	for k := range 3 {
		wg.Go(func() { churnAddrs(ctx, hh, byte(k)) })
	}

	before := tb.m.dumpRetries.Load()
	deadline := time.Now().Add(3 * time.Second)
	i := 0
	for ; i < 300 && time.Now().Before(deadline); i++ {
		if _, err := tb.m.listHost(); err != nil {
			t.Fatalf("listing %d under churn: %v", i, err)
		}
	}
	t.Logf("%d listings, %d interrupted dumps retried", i, tb.m.dumpRetries.Load()-before)
}

// churn adds and removes a veth pair with an address, and an address on lo,
// until ctx ends.
func churn(ctx context.Context, t *testing.T, h *netlink.Handle) {
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Error(err)
		return
	}
	for i := 0; ctx.Err() == nil; i++ {
		name := fmt.Sprintf("churn%d", rand.IntN(1<<20))
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
			t.Errorf("add veth: %v", err)
			return
		}
		if l, err := h.LinkByName(name); err == nil {
			_ = h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 78, 0, byte(i)), Mask: net.CIDRMask(30, 32)}})
			_ = h.LinkSetUp(l)
			_ = h.LinkDel(l)
		}
		a := &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 79, 0, byte(i)}), 32))}
		_ = h.AddrAdd(lo, a)
		_ = h.AddrDel(lo, a)
	}
}

// churnAddrs adds and removes an address on lo as fast as it can, until
// ctx ends: each change interrupts a dump it lands in.
func churnAddrs(ctx context.Context, h *netlink.Handle, k byte) {
	lo, err := h.LinkByName("lo")
	if err != nil {
		return
	}
	a := &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 80, 0, k}), 32))}
	for ctx.Err() == nil {
		_ = h.AddrAdd(lo, a)
		_ = h.AddrDel(lo, a)
	}
}

// Creating sandboxes dumps no host address: a create costs the same with
// one sandbox on the host as with two thousand.
func TestSetupDumpsNoHostAddresses(t *testing.T) {
	tb := newTestbed(t)
	// Past the watcher's debounce of anything New's own changes caused.
	time.Sleep(3 * hostDebounce)
	dumps := tb.m.hostDumps.Load()
	for i := range 3 {
		tb.setup(t, fmt.Sprintf("nodump-%d", i), Policy{Mode: ModeAllowAll})
	}
	// A sandbox's own addresses (the pool's, link-local) must not make
	// the watcher dump either.
	time.Sleep(3 * hostDebounce)
	if got := tb.m.hostDumps.Load() - dumps; got != 0 {
		t.Errorf("3 setups made %d dumps of the host's addresses, want 0", got)
	}
}
