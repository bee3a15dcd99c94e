package kubernetes

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/netns"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// TestNodeGuard: through the runtime handler "paddock" (cmd/paddock-runc)
// no sandbox reaches its node, whatever its egress: not the node's
// listeners on the Pods' gateway, nor on an address of another of its
// interfaces (one of the test net's, which the Pods route to the node and
// a policy may allow), while an allow-all sandbox still reaches the test
// net's targets off the node. The guard is table inet paddock-node in the
// Pod's network namespace, with the link-local ranges and the node's
// addresses, and the sandbox's root can neither flush it nor add iptables
// rules. Pods of the node's plain runc handler are not guarded (as README
// says): a deny-all one reaches both listeners, which also shows that the
// probes would see them.
func TestNodeGuard(t *testing.T) {
	e := testEnv(t)
	if e.c.TestNet == "" {
		t.Skip("cluster.env names no PADDOCK_K8S_TEST_NET (hack/k8s/up.sh routes it to the node)")
	}
	testNet, err := netip.ParsePrefix(e.c.TestNet)
	if err != nil {
		t.Fatal(err)
	}
	podCIDR, err := netip.ParsePrefix(e.c.PodCIDR)
	if err != nil {
		t.Fatal(err)
	}
	rc := e.runtimeClass(t, "paddock")
	guarded := e.newDriver(t, func(c *Config) { c.RuntimeClass = rc })
	plain := e.newDriver(t)
	// The gateway is the node's once the bridge is up; the other address
	// before any Pod here starts, since the guard takes the node's
	// addresses of the moment a Pod's container is created.
	e.c.EnsureBridge(t, guarded.cfg.Namespace)
	gateway := e.c.PodGateway(t)
	other := testNet.Masked().Addr().Next().Next().Next().Next() // .4: not TestEgressEnforced's .2 and .3
	hostAddress(t, other)
	offNode := testNet.Masked().Addr().Next().Next() // .2
	newEgressTarget(t, podCIDR, gateway, offNode)
	var (
		toGateway = nodeListener(t, gateway)
		toOther   = nodeListener(t, other)
		toOffNode = netip.AddrPortFrom(offNode, targetPort).String()
		targets   = []string{toGateway, toOther, toOffNode}
	)
	waitListening(t, toOffNode)

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	create := func(d *Driver, id string, p *sandbox.NetworkPolicy) *agent.Client {
		t.Helper()
		c, err := d.Create(ctx, runtime.Spec{ID: id, Image: sandbox.HostImage, Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 128, PIDs: 64}, Egress: p})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(); d.Destroy(context.Background(), id) })
		return c
	}
	// Without an agent enforcing NetworkPolicy, deny-all reaches what is
	// off the node: the guard is no egress policy.
	unenforced := e.c.NetworkPolicy == ""
	none := map[string]bool{toGateway: false, toOther: false, toOffNode: unenforced}

	t.Run("plain runc is not guarded", func(t *testing.T) {
		const id = "k8s-guard-plain"
		c := create(plain, id, nil)
		reaches(t, c, targets, map[string]bool{toGateway: true, toOther: true, toOffNode: unenforced})
		if out, err := guardTable(t, e, id); err == nil {
			t.Errorf("a Pod of the plain runc handler has the guard:\n%s", out)
		}
	})
	for _, tc := range []struct {
		name   string
		policy *sandbox.NetworkPolicy
		want   map[string]bool
	}{
		{"deny-all", nil, none},
		{"allow-all", &sandbox.NetworkPolicy{Mode: modeAllowAll}, map[string]bool{toGateway: false, toOther: false, toOffNode: true}},
		// The policy allows the node's other address: the guard still refuses it.
		{"custom", &sandbox.NetworkPolicy{Mode: modeCustom, AllowCIDRs: []netip.Prefix{testNet}}, map[string]bool{toGateway: false, toOther: false, toOffNode: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "k8s-guard-" + tc.name
			c := create(guarded, id, tc.policy)
			reaches(t, c, targets, tc.want)
			out, err := guardTable(t, e, id)
			if err != nil {
				t.Fatalf("the Pod's guard: %v\n%s", err, out)
			}
			for _, want := range []string{"169.254.0.0/16", "fe80::/10", gateway.String(), other.String()} {
				if !strings.Contains(out, want) {
					t.Errorf("the Pod's guard lacks %s:\n%s", want, out)
				}
			}
			if tc.policy != nil {
				return
			}
			// The sandbox's root tries to undo it.
			tries := sh(t, c, "for t in 'nft flush ruleset' 'nft delete table inet "+netns.GuardTable+"' 'iptables -I OUTPUT -j ACCEPT'; do "+
				"PATH=/usr/sbin:/sbin:$PATH $t >/dev/null 2>&1 && echo \"ran: $t\"; done; true", true)
			if tries != "" {
				t.Errorf("the sandbox's root changed the guard:\n%s", tries)
			}
			if after, err := guardTable(t, e, id); err != nil || after != out {
				t.Errorf("the guard after the sandbox's tries: %v\n%s", err, after)
			}
			reaches(t, c, targets, tc.want)
		})
	}
}

// guardTable lists the node guard's table in the network namespace of
// sandbox id's Pod, from the node.
func guardTable(t *testing.T, e *env, id string) (string, error) {
	t.Helper()
	pid := e.hostPID(t, id, "sandbox", true)
	if pid == 0 {
		t.Fatalf("no process of %s on this node", id)
	}
	out, err := exec.Command("nsenter", "-t", strconv.Itoa(pid), "-n", "nft", "list", "table", "inet", netns.GuardTable).CombinedOutput()
	return string(out), err
}

// hostAddress adds addr to the node, on a veth pair of the test's own
// (both ends on the node, leading nowhere), until the test ends.
func hostAddress(t *testing.T, addr netip.Addr) {
	t.Helper()
	suffix := make([]byte, 4)
	rand.Read(suffix)
	name := "pdng" + hex.EncodeToString(suffix)
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
		t.Fatalf("veth %s: %v", name, err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(name); err == nil {
			if err := netlink.LinkDel(l); err != nil {
				t.Errorf("delete veth %s: %v", name, err)
			}
		}
	})
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(addr, 32))}); err != nil {
		t.Fatal(fmt.Errorf("address %s on %s: %w", addr, name, err))
	}
	for _, n := range []string{name, name + "p"} {
		if l, err := netlink.LinkByName(n); err != nil {
			t.Fatal(err)
		} else if err := netlink.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
}
