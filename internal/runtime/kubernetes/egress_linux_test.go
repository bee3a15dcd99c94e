package kubernetes

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// targetPort is where every egress target listens.
const targetPort = 8080

// TestEgressEnforced: a sandbox's egress, as its NetworkPolicy, holds on
// the data path of real Pods (the test cluster runs kube-network-policies).
// The targets are the test's own: two addresses of the cluster's test net
// in a network namespace the test makes (a driver never allows a private
// address, so no Pod or node address can be an allowed target), and a
// sandbox Pod labelled as the cluster's DNS, listening on 53 and on
// targetPort. Deny-all reaches none; custom reaches its CIDR and not the
// net's other address; allow-all reaches both but its DenyCIDRs; those
// two may ask the DNS on port 53 and nothing else of a Pod (its other port
// is a private address). UpdateEgress flips a running sandbox both ways.
// These Pods run on the node's plain runc: NetworkPolicy does not keep
// them from their node's own addresses; TestNodeGuard checks the handler
// "paddock", which does.
func TestEgressEnforced(t *testing.T) {
	e := testEnv(t)
	if e.c.NetworkPolicy == "" || e.c.TestNet == "" {
		t.Skip("the cluster enforces no NetworkPolicy (cluster.env names no PADDOCK_K8S_NETWORK_POLICY and PADDOCK_K8S_TEST_NET; " +
			"hack/k8s/up.sh runs kube-network-policies unless PADDOCK_K8S_NETPOL=off)")
	}
	testNet, err := netip.ParsePrefix(e.c.TestNet)
	if err != nil {
		t.Fatal(err)
	}
	podCIDR, err := netip.ParsePrefix(e.c.PodCIDR)
	if err != nil {
		t.Fatal(err)
	}
	allowed := testNet.Masked().Addr().Next().Next() // .2
	other := allowed.Next()                          // .3

	d := e.newDriver(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	create := func(id string, p *sandbox.NetworkPolicy) *agent.Client {
		t.Helper()
		c, err := d.Create(ctx, runtime.Spec{ID: id, Image: sandbox.HostImage, Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 128, PIDs: 64}, Egress: p})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(); d.Destroy(context.Background(), id) })
		return c
	}

	// The DNS stand-in: NetworkPolicy names the cluster's DNS by label.
	const dnsID = "k8s-egress-dns"
	dns := create(dnsID, nil)
	if _, err := dns.Start(ctx, agent.CommandRequest{Cmd: "python3", Args: []string{"-c", listenScript, "53", fmt.Sprint(targetPort)}}); err != nil {
		t.Fatal(err)
	}
	patch := []byte(`{"metadata":{"labels":{"k8s-app":"kube-dns"}}}`)
	if _, err := e.c.Client.CoreV1().Pods(d.cfg.Namespace).Patch(ctx, podName(dnsID), types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	dnsIP, err := d.Address(ctx, dnsID)
	if err != nil {
		t.Fatal(err)
	}
	// After the first Pod: the host's end needs the bridge's address.
	newEgressTarget(t, podCIDR, e.c.PodGateway(t), allowed, other)
	var (
		toAllowed = netip.AddrPortFrom(allowed, targetPort).String()
		toOther   = netip.AddrPortFrom(other, targetPort).String()
		toDNS     = netip.AddrPortFrom(dnsIP, 53).String()
		toPod     = netip.AddrPortFrom(dnsIP, targetPort).String()
		targets   = []string{toAllowed, toOther, toDNS, toPod}
	)
	// The host (root: not subject to the Pods' policies) reaches every
	// target: what a sandbox does not reach, a policy refused.
	for _, to := range targets {
		waitListening(t, to)
	}

	none := map[string]bool{toAllowed: false, toOther: false, toDNS: false, toPod: false}
	with := func(m map[string]bool, open ...string) map[string]bool {
		m = maps.Clone(m)
		for _, to := range open {
			m[to] = true
		}
		return m
	}
	pfx := func(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, 32) }
	cases := []struct {
		name   string
		policy *sandbox.NetworkPolicy
		want   map[string]bool
	}{
		{"deny-all", nil, none},
		{"custom", &sandbox.NetworkPolicy{Mode: modeCustom, AllowCIDRs: []netip.Prefix{pfx(allowed)}}, with(none, toAllowed, toDNS)},
		{"allow-all", &sandbox.NetworkPolicy{Mode: modeAllowAll, DenyCIDRs: []netip.Prefix{pfx(other)}}, with(none, toAllowed, toDNS)},
		{"allow-all without deny", &sandbox.NetworkPolicy{Mode: modeAllowAll}, with(none, toAllowed, toOther, toDNS)},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := create(fmt.Sprintf("k8s-egress-%d", i), tc.policy)
			reaches(t, c, targets, tc.want)
		})
	}

	// In place: the same running sandbox, its policy patched.
	t.Run("update", func(t *testing.T) {
		const id = "k8s-egress-update"
		c := create(id, nil)
		reaches(t, c, targets, none)
		if err := d.UpdateEgress(ctx, id, &sandbox.NetworkPolicy{Mode: modeCustom, AllowCIDRs: []netip.Prefix{pfx(allowed)}}); err != nil {
			t.Fatal(err)
		}
		reaches(t, c, targets, with(none, toAllowed, toDNS))
		if err := d.UpdateEgress(ctx, id, nil); err != nil {
			t.Fatal(err)
		}
		reaches(t, c, targets, none)
	})
}

// listenScript serves a line on each TCP port of its arguments, on every
// address, until killed.
const listenScript = `
import socket, sys, threading
def serve(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(16)
    while True:
        c, _ = s.accept()
        c.sendall(b"paddock-egress\n")
        c.close()
for p in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(p),)).start()
`

// probeScript dials each ip:port of its arguments at once and prints
// "ip:port open" when the connection is made and the target's line read,
// else "ip:port closed". A dropped SYN costs the 3 s timeout.
const probeScript = `
import socket, sys, concurrent.futures as cf
def probe(t):
    h, p = t.rsplit(":", 1)
    try:
        with socket.create_connection((h, int(p)), timeout=3) as s:
            return t + (" open" if s.recv(64).startswith(b"paddock-egress") else " closed")
    except OSError:
        return t + " closed"
with cf.ThreadPoolExecutor(len(sys.argv)) as ex:
    for r in ex.map(probe, sys.argv[1:]):
        print(r)
`

// reaches waits until the sandbox reaches exactly the targets want says
// (the agent learns of a new Pod or policy within moments), failing t if
// it does not within 30 s. Every round dials anew: a policy decides new
// connections.
func reaches(t *testing.T, c *agent.Client, targets []string, want map[string]bool) {
	t.Helper()
	var got map[string]bool
	for deadline := time.Now().Add(30 * time.Second); ; {
		if got = probe(t, c, targets); maps.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	var diff []string
	for _, to := range slices.Sorted(maps.Keys(want)) {
		if got[to] != want[to] {
			diff = append(diff, fmt.Sprintf("%s reached=%v want %v", to, got[to], want[to]))
		}
	}
	t.Errorf("after 30 s the sandbox's egress still differs: %s", strings.Join(diff, "; "))
}

// nodeListener serves the target's line at a port of addr, a host
// address, until the test ends, and returns addr:port.
func nodeListener(t *testing.T, addr netip.Addr) string {
	t.Helper()
	ln, err := net.Listen("tcp4", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() { serveLine(ln) })
	return ln.Addr().String()
}

// serveLine writes the targets' line to each connection ln accepts, until
// ln is closed.
func serveLine(ln net.Listener) {
	for {
		conn, err := ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		conn.Write([]byte("paddock-egress\n"))
		conn.Close()
	}
}

// probe dials targets from the sandbox at once: whether each answered.
func probe(t *testing.T, c *agent.Client, targets []string) map[string]bool {
	t.Helper()
	out := sh(t, c, "python3 -c '"+probeScript+"' "+strings.Join(targets, " "), false)
	got := map[string]bool{}
	for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		to, state, _ := strings.Cut(line, " ")
		got[to] = state == "open"
	}
	return got
}

// waitListening waits until the host connects to addr and reads the
// target's line.
func waitListening(t *testing.T, addr string) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		var conn net.Conn
		if conn, err = net.DialTimeout("tcp", addr, time.Second); err != nil {
			continue
		}
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 64)
		n, rerr := conn.Read(buf)
		conn.Close()
		if strings.HasPrefix(string(buf[:n]), "paddock-egress") {
			return
		}
		err = fmt.Errorf("read %q: %v", buf[:n], rerr)
	}
	t.Fatalf("the host cannot reach the target %s: %v", addr, err)
}

// newEgressTarget listens on targetPort of addrs in a network namespace
// the test makes (newTargetNetns), until the test ends.
func newEgressTarget(t *testing.T, podCIDR netip.Prefix, gateway netip.Addr, addrs ...netip.Addr) {
	t.Helper()
	var lns []net.Listener
	err := newTargetNetns(t, "pdeg", podCIDR, gateway, addrs, func() (err error) {
		lns, err = listenTargets(addrs)
		return err
	})
	serveTargets(t, lns, err)
}

// newTargetNetns makes a network namespace joined to the host by a veth
// pair (named prefix and 8 random hex digits): the host routes addrs to
// it (from gateway, its address on the Pods' bridge), and it holds addrs
// and routes podCIDR back through the host, which answers its ARP for the
// Pods (proxy ARP on the host's end); it has no other route. inside runs
// on a thread in the namespace, to open its sockets there. Everything goes
// with the test: the namespace with its sockets, the pair with its routes.
func newTargetNetns(t *testing.T, prefix string, podCIDR netip.Prefix, gateway netip.Addr, addrs []netip.Addr, inside func() error) error {
	t.Helper()
	return onNewNetns(t, func(host, ns netns.NsHandle) error {
		suffix := make([]byte, 4)
		rand.Read(suffix)
		name := prefix + hex.EncodeToString(suffix) // 12 bytes, under IFNAMSIZ
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p", PeerNamespace: netlink.NsFd(int(ns))}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("veth %s: %w", name, err)
		}
		t.Cleanup(func() {
			if l, err := netlink.LinkByName(name); err == nil {
				if err := netlink.LinkDel(l); err != nil {
					t.Errorf("delete veth %s: %v", name, err)
				}
			}
		})
		hostEnd, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+name+"/proxy_arp", []byte("1"), 0o644); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(hostEnd); err != nil {
			return err
		}
		for _, a := range addrs {
			r := &netlink.Route{LinkIndex: hostEnd.Attrs().Index, Dst: ipNet(netip.PrefixFrom(a, 32)), Src: gateway.AsSlice()}
			if err := netlink.RouteAdd(r); err != nil {
				return fmt.Errorf("route %s: %w", a, err)
			}
		}

		h, err := netlink.NewHandleAt(ns)
		if err != nil {
			return err
		}
		defer h.Close()
		lo, err := h.LinkByName("lo")
		if err != nil {
			return err
		}
		inner, err := h.LinkByName(name + "p")
		if err != nil {
			return err
		}
		for _, l := range []netlink.Link{lo, inner} {
			if err := h.LinkSetUp(l); err != nil {
				return err
			}
		}
		for _, a := range addrs {
			if err := h.AddrAdd(inner, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(a, 32))}); err != nil {
				return fmt.Errorf("address %s: %w", a, err)
			}
		}
		if err := h.RouteAdd(&netlink.Route{LinkIndex: inner.Attrs().Index, Dst: ipNet(podCIDR)}); err != nil {
			return fmt.Errorf("route %s: %w", podCIDR, err)
		}

		// Sockets stay in the namespace they were made in; onNewNetns
		// puts the thread back.
		if err := netns.Set(ns); err != nil {
			return err
		}
		return inside()
	})
}

// listenTargets listens on targetPort of addrs, returning the listeners
// made so far with any error.
func listenTargets(addrs []netip.Addr) ([]net.Listener, error) {
	var lns []net.Listener
	for _, a := range addrs {
		ln, err := net.Listen("tcp4", netip.AddrPortFrom(a, targetPort).String())
		if err != nil {
			return lns, err
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// serveTargets serves lns (serveLine) until the test ends, or fails the
// test on err (closing lns).
func serveTargets(t *testing.T, lns []net.Listener, err error) {
	t.Helper()
	var wg sync.WaitGroup
	t.Cleanup(func() {
		for _, ln := range lns {
			ln.Close()
		}
		wg.Wait()
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, ln := range lns {
		wg.Go(func() { serveLine(ln) })
	}
}

// onNewNetns makes a network namespace and runs fn on a thread locked in
// the host's, with handles to both; fn may move the thread, which is put
// back after it (or, if that fails, left locked, so that it dies with its
// goroutine). The namespace lives while something holds it (fn's sockets,
// its veth end) and until the test ends.
func onNewNetns(t *testing.T, fn func(host, ns netns.NsHandle) error) error {
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		host, err := netns.Get()
		if err != nil {
			errc <- err
			return // the thread dies locked
		}
		defer host.Close()
		ns, err := netns.New() // and joins it
		if err != nil {
			errc <- err
			return
		}
		t.Cleanup(func() { ns.Close() })
		if err := netns.Set(host); err != nil {
			errc <- err
			return
		}
		err = fn(host, ns)
		if serr := netns.Set(host); serr != nil {
			errc <- errors.Join(err, fmt.Errorf("back to the host's network namespace: %w", serr))
			return
		}
		goruntime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
