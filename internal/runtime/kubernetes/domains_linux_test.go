package kubernetes

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// TestEgressByDomain: a sandbox whose policy allows a domain resolves it
// through the driver's resolver and then reaches its address, which its
// NetworkPolicy allowed first; it resolves no other name and reaches no
// other address; UpdateEgress gives a running sandbox a domain policy.
// The upstream DNS is the test's (allowed.test and other.test, on
// loopback); the resolver and the targets listen in a network namespace
// the test makes, on addresses of the cluster's test net (routed there as
// in TestEgressEnforced): not on a node address, which Pods may not reach.
func TestEgressByDomain(t *testing.T) {
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
	resolverAddr := other.Next()                     // .4

	up := fakeUpstream(t, map[string]string{"allowed.test": allowed.String(), "other.test": other.String()})
	d := e.newDriver(t, func(c *Config) {
		c.DNS = &DNSConfig{Address: resolverAddr, Upstream: []netip.AddrPort{up}}
	})
	e.c.EnsureBridge(t, d.cfg.Namespace)
	newDomainTargets(t, d, podCIDR, e.c.PodGateway(t), resolverAddr, allowed, other)
	var (
		toAllowed = netip.AddrPortFrom(allowed, targetPort).String()
		toOther   = netip.AddrPortFrom(other, targetPort).String()
		targets   = []string{toAllowed, toOther}
		none      = map[string]bool{toAllowed: false, toOther: false}
		onlyTo    = func(to string) map[string]bool {
			return map[string]bool{toAllowed: to == toAllowed, toOther: to == toOther}
		}
	)
	for _, to := range targets {
		waitListening(t, to)
	}

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

	t.Run("accepted", func(t *testing.T) {
		// The API server's validation of what the resolver writes: the
		// peers behind a Service, IPv6 addresses.
		dc := testDNS
		resolved := []netip.Addr{allowed, netip.MustParseAddr("2001:db8::2")}
		np, err := egressPolicy(d.meta("k8s-domains-0"), &sandbox.NetworkPolicy{Mode: modeCustom, AllowDomains: []string{"allowed.test"}}, &dc, resolved)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.c.Client.NetworkingV1().NetworkPolicies(d.cfg.Namespace).Create(ctx, np, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
			t.Error(err)
		}
	})

	t.Run("stale", func(t *testing.T) {
		// The API server refuses the resolver's write made on a read that
		// a policy change has since replaced: the name is then judged by
		// the new policy.
		const id = "k8s-domains-stale"
		np, err := egressPolicy(d.meta(id), &sandbox.NetworkPolicy{Mode: modeCustom, AllowDomains: []string{"allowed.test"}}, d.cfg.DNS, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.c.Client.NetworkingV1().NetworkPolicies(d.cfg.Namespace).Create(ctx, np, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Destroy(context.Background(), id) })
		read, _, err := d.egressOf(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.UpdateEgress(ctx, id, &sandbox.NetworkPolicy{Mode: modeCustom, AllowDomains: []string{"other.test"}}); err != nil {
			t.Fatal(err)
		}
		if err := d.allowResolved(ctx, id, "allowed.test", read, []netip.Addr{allowed}); !errors.Is(err, errNameNotAllowed) {
			t.Errorf("a write on a stale read = %v, want errNameNotAllowed", err)
		}
		// On a fresh read (what a query makes), the new policy's name.
		if read, _, err = d.egressOf(ctx, id); err != nil {
			t.Fatal(err)
		}
		if err := d.allowResolved(ctx, id, "other.test", read, []netip.Addr{other}); err != nil {
			t.Fatal(err)
		}
		now, _, err := d.egressOf(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if got := allowedBlocks(now); len(got) != 1 || got[0] != other.String()+"/32" {
			t.Errorf("allowed blocks %v, want %s alone", got, other)
		}
	})

	t.Run("create", func(t *testing.T) {
		c := create("k8s-domains-1", &sandbox.NetworkPolicy{Mode: modeCustom, AllowDomains: []string{"allowed.test"}})
		// Before any lookup, no address is allowed: the NetworkPolicy
		// holds only what the resolver answered.
		reaches(t, c, targets, none)
		// Twice: the first adds the address to the NetworkPolicy, the
		// second finds it there (the log has both times).
		if got := resolve(t, c, "allowed.test", "other.test", "allowed.test"); got["allowed.test"] != allowed.String() || got["other.test"] != "" {
			t.Fatalf("lookups from the sandbox: %v; want allowed.test %s and other.test unresolved", got, allowed)
		}
		reaches(t, c, targets, onlyTo(toAllowed))
	})

	t.Run("update", func(t *testing.T) {
		c := create("k8s-domains-2", nil)
		if got := resolve(t, c, "allowed.test"); got["allowed.test"] != "" {
			t.Errorf("a deny-all sandbox resolved allowed.test: %v", got)
		}
		if err := d.UpdateEgress(ctx, "k8s-domains-2", &sandbox.NetworkPolicy{Mode: modeCustom, AllowDomains: []string{"other.test"}}); err != nil {
			t.Fatal(err)
		}
		// The policy reaches the resolver at once (it reads the object);
		// the network plugin may take a moment to open its port.
		// A lookup the plugin still drops costs glibc's timeouts: one name
		// a round.
		var got map[string]string
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
			if got = resolve(t, c, "other.test"); got["other.test"] != "" {
				break
			}
		}
		if got["other.test"] != other.String() {
			t.Fatalf("other.test after the update: %v; want %s", got, other)
		}
		if got := resolve(t, c, "allowed.test"); got["allowed.test"] != "" {
			t.Errorf("allowed.test resolved after the update: %v", got)
		}
		reaches(t, c, targets, onlyTo(toOther))
	})
}

// resolveScript looks up each name of its arguments through the Pod's
// resolver (glibc: its resolv.conf) and prints "name address ms", the
// address "-" when the lookup fails.
const resolveScript = `
import socket, sys, time
for n in sys.argv[1:]:
    start = time.monotonic()
    try:
        a = socket.gethostbyname(n)
    except OSError:
        a = "-"
    print(n, a, "%.1f" % ((time.monotonic() - start) * 1000))
`

// resolve looks up names in the sandbox: each name's address, "" if the
// lookup failed.
func resolve(t *testing.T, c *agent.Client, names ...string) map[string]string {
	t.Helper()
	out := sh(t, c, "python3 -c '"+resolveScript+"' "+strings.Join(names, " "), false)
	got := map[string]string{}
	for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			t.Fatalf("resolve: %q", out)
		}
		t.Logf("lookup of %s in the sandbox: %s in %s ms", f[0], f[1], f[2])
		if f[1] != "-" {
			got[f[0]] = f[1]
		}
	}
	return got
}

// newDomainTargets makes the network namespace TestEgressByDomain's
// targets live in (newTargetNetns, holding dnsAddr and addrs): addrs
// serve the targets' line on targetPort, and d's resolver serves on port
// 53 of dnsAddr. Everything goes with the test.
func newDomainTargets(t *testing.T, d *Driver, podCIDR netip.Prefix, gateway, dnsAddr netip.Addr, addrs ...netip.Addr) {
	t.Helper()
	var (
		lns []net.Listener
		pc  net.PacketConn
		dln net.Listener
	)
	all := append([]netip.Addr{dnsAddr}, addrs...)
	err := newTargetNetns(t, "pddn", podCIDR, gateway, all, func() (err error) {
		if lns, err = listenTargets(addrs); err != nil {
			return err
		}
		dnsAt := netip.AddrPortFrom(dnsAddr, 53).String()
		if pc, err = net.ListenPacket("udp4", dnsAt); err != nil {
			return err
		}
		dln, err = net.Listen("tcp4", dnsAt)
		return err
	})
	if err != nil && pc != nil {
		pc.Close()
	}
	serveTargets(t, lns, err)
	// The driver's Close (newDriver's cleanup) stops the resolver and
	// closes its sockets.
	if err := d.ServeDNS(pc, dln); err != nil {
		t.Fatal(err)
	}
}
