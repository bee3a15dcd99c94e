package kubernetes

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// fakeUpstream serves A records of names (without the trailing dot) on
// UDP and TCP of 127.0.0.1 until the test ends; other names get NXDOMAIN.
func fakeUpstream(t *testing.T, names map[string]string) netip.AddrPort {
	t.Helper()
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		q := req.Question[0]
		ip, ok := names[dns.CanonicalName(q.Name)[:len(q.Name)-1]]
		switch {
		case !ok:
			m.Rcode = dns.RcodeNameError
		case q.Qtype == dns.TypeA:
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP(ip)}}
		}
		w.WriteMsg(m)
	})
	pc, ln := loopbackDNSSockets(t)
	var wg sync.WaitGroup
	started := make(chan struct{}, 2)
	servers := []*dns.Server{
		{PacketConn: pc, Handler: handler, NotifyStartedFunc: func() { started <- struct{}{} }},
		{Listener: ln, Handler: handler, NotifyStartedFunc: func() { started <- struct{}{} }},
	}
	for _, s := range servers {
		wg.Go(func() { s.ActivateAndServe() })
	}
	<-started
	<-started
	t.Cleanup(func() {
		for _, s := range servers {
			s.Shutdown()
		}
		wg.Wait()
	})
	return netip.MustParseAddrPort(pc.LocalAddr().String())
}

// loopbackDNSSockets are a UDP and a TCP socket on one port of 127.0.0.1.
// The port is the UDP socket's pick, which another process may hold for
// TCP: a few tries.
func loopbackDNSSockets(t *testing.T) (net.PacketConn, net.Listener) {
	t.Helper()
	var err error
	for range 10 {
		var pc net.PacketConn
		if pc, err = net.ListenPacket("udp4", "127.0.0.1:0"); err != nil {
			break
		}
		var ln net.Listener
		if ln, err = net.Listen("tcp4", pc.LocalAddr().String()); err == nil {
			return pc, ln
		}
		pc.Close()
	}
	t.Fatal(err)
	return nil, nil
}

// serveLoopbackDNS serves d's resolver on a port of 127.0.0.1 and returns
// it; the driver's Close (the test's cleanup) stops it.
func serveLoopbackDNS(t *testing.T, d *Driver) string {
	t.Helper()
	pc, ln := loopbackDNSSockets(t)
	if err := d.ServeDNS(pc, ln); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return pc.LocalAddr().String()
}

func lookup(t *testing.T, server, network, name string) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	resp, _, err := c.Exchange(m, server)
	if err != nil {
		t.Fatalf("lookup %s over %s: %v", name, network, err)
	}
	return resp
}

func answerAddrs(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out
}

func resolvedOf(t *testing.T, np *networkingv1.NetworkPolicy) []netip.Addr {
	t.Helper()
	var out []netip.Addr
	if err := json.Unmarshal([]byte(np.Annotations[annotationResolved]), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// allowedBlocks is every ipBlock CIDR the policy allows, in order.
func allowedBlocks(np *networkingv1.NetworkPolicy) []string {
	var out []string
	for _, r := range np.Spec.Egress {
		for _, p := range r.To {
			if p.IPBlock != nil && len(r.Ports) == 0 {
				out = append(out, p.IPBlock.CIDR)
			}
		}
	}
	return out
}

var testDNS = DNSConfig{Address: netip.MustParseAddr("198.51.100.53"), PeerNamespace: "paddock",
	PeerLabels: map[string]string{"app.kubernetes.io/name": "paddock"}, PeerPort: 5353}

// TestEgressPolicyWithResolver: with a resolver, domains are accepted,
// every mode but deny-all may ask the resolver (at its address, and the
// Pods behind it) and not the cluster's DNS, custom allows the resolved
// addresses besides its CIDRs, and the policy rides along as annotations.
// Pods name the resolver as their only nameserver.
func TestEgressPolicyWithResolver(t *testing.T) {
	d := testDriver(t, func(c *Config) {
		dc := testDNS
		dc.Upstream = []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:53")}
		c.DNS = &dc
	})
	meta := d.meta("n-1")
	pfx := netip.MustParsePrefix
	resolved := []netip.Addr{netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("2001:db8::7"), netip.MustParseAddr("203.0.113.8")}
	for _, tc := range []struct {
		name   string
		policy *sandbox.NetworkPolicy
		blocks []string
		dns    bool
	}{
		{name: "deny-all"},
		{name: "allow-all", policy: &sandbox.NetworkPolicy{Mode: modeAllowAll}, blocks: []string{"0.0.0.0/0", "::/0"}, dns: true},
		{name: "custom CIDRs", policy: &sandbox.NetworkPolicy{Mode: modeCustom, AllowCIDRs: []netip.Prefix{pfx("203.0.113.0/24")}},
			blocks: []string{"203.0.113.0/24"}, dns: true},
		{name: "domains", policy: &sandbox.NetworkPolicy{Mode: modeCustom, AllowDomains: []string{"example.com"}, AllowCIDRs: []netip.Prefix{pfx("192.0.2.0/24")}},
			blocks: []string{"192.0.2.0/24", "203.0.113.7/32", "2001:db8::7/128", "203.0.113.8/32"}, dns: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			np, err := egressPolicy(meta, tc.policy, d.cfg.DNS, resolved)
			if err != nil {
				t.Fatal(err)
			}
			if got := allowedBlocks(np); !slices.Equal(got, tc.blocks) {
				t.Errorf("allowed blocks %v, want %v", got, tc.blocks)
			}
			var got *sandbox.NetworkPolicy
			if err := json.Unmarshal([]byte(np.Annotations[annotationEgress]), &got); err != nil || !equalPolicy(got, tc.policy) {
				t.Errorf("annotation %s = %q (%v), want the policy %+v", annotationEgress, np.Annotations[annotationEgress], err, tc.policy)
			}
			if np.Annotations[annotationID] != "n-1" {
				t.Errorf("annotations %v lost the id", np.Annotations)
			}
			var dnsRules []networkingv1.NetworkPolicyEgressRule
			for _, r := range np.Spec.Egress {
				if len(r.Ports) > 0 {
					dnsRules = append(dnsRules, r)
				}
			}
			if !tc.dns {
				if len(dnsRules) != 0 {
					t.Errorf("DNS rules %+v, want none", dnsRules)
				}
				return
			}
			if len(dnsRules) != 1 {
				t.Fatalf("DNS rules %+v, want one", dnsRules)
			}
			r := dnsRules[0]
			if len(r.To) != 2 || r.To[0].IPBlock == nil || r.To[0].IPBlock.CIDR != "198.51.100.53/32" || r.To[1].PodSelector == nil ||
				r.To[1].PodSelector.MatchLabels["k8s-app"] != "" || r.To[1].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "paddock" {
				t.Errorf("DNS peers %+v: want the resolver's address and paddock's Pods", r.To)
			}
			var ports []int
			for _, p := range r.Ports {
				ports = append(ports, p.Port.IntValue())
			}
			if !slices.Equal(ports, []int{53, 53, 5353, 5353}) {
				t.Errorf("DNS ports %v", ports)
			}
		})
	}

	spec := runtime.Spec{ID: "n-1", Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 64}}
	pod := d.pod(spec, "registry.local/x:1", nil, spec.Resources)
	if pod.Spec.DNSPolicy != corev1.DNSNone || pod.Spec.DNSConfig == nil || !slices.Equal(pod.Spec.DNSConfig.Nameservers, []string{"198.51.100.53"}) {
		t.Errorf("pod DNS %q %+v: want None with the resolver alone", pod.Spec.DNSPolicy, pod.Spec.DNSConfig)
	}
	plain := testDriver(t, nil).pod(spec, "registry.local/x:1", nil, spec.Resources)
	if plain.Spec.DNSPolicy != "" || plain.Spec.DNSConfig != nil {
		t.Errorf("without a resolver: pod DNS %q %+v, want the cluster's default", plain.Spec.DNSPolicy, plain.Spec.DNSConfig)
	}
}

func equalPolicy(a, b *sandbox.NetworkPolicy) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func TestAddResolved(t *testing.T) {
	addr := func(n int) netip.Addr { return netip.AddrFrom4([4]byte{203, 0, 113, byte(n)}) }
	addrs := func(ns ...int) []netip.Addr {
		var out []netip.Addr
		for _, n := range ns {
			out = append(out, addr(n))
		}
		return out
	}
	for _, tc := range []struct {
		name        string
		old, add    []int
		limit       int
		want        []int
		wantChanged bool
	}{
		{"new", nil, []int{1, 2}, 8, []int{1, 2}, true},
		{"known", []int{1, 2, 3}, []int{2}, 8, []int{1, 2, 3}, false},
		{"one new moves the known ones up", []int{1, 2, 3}, []int{2, 4}, 8, []int{1, 3, 2, 4}, true},
		{"oldest dropped", []int{1, 2, 3, 4}, []int{5, 6}, 4, []int{3, 4, 5, 6}, true},
		{"known at risk is refreshed", []int{1, 2, 3, 4}, []int{1}, 4, []int{2, 3, 4, 1}, true},
		{"duplicates in the answer", nil, []int{1, 1}, 4, []int{1}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, changed := addResolved(addrs(tc.old...), addrs(tc.add...), tc.limit)
			if !slices.Equal(got, addrs(tc.want...)) || changed != tc.wantChanged {
				t.Errorf("addResolved = %v, %v; want %v, %v", got, changed, addrs(tc.want...), tc.wantChanged)
			}
		})
	}
}

// TestResolver: the resolver answers a sandbox (found by its Pod IP, here
// loopback) the names its policy allows, with the upstream's answer, after
// it added the addresses to the sandbox's NetworkPolicy; refuses other
// names, answers that lead only to refused ranges, and addresses that are
// no sandbox of its namespace; follows UpdateEgress.
func TestResolver(t *testing.T) {
	up := fakeUpstream(t, map[string]string{"allowed.test": "198.51.100.2", "other.test": "198.51.100.3",
		"www.wild.test": "198.51.100.4", "private.test": "10.1.2.3"})
	cs := fake.NewClientset()
	d := testDriver(t, func(c *Config) {
		c.Client = cs
		c.DNS = &DNSConfig{Address: netip.MustParseAddr("127.0.0.1"), Upstream: []netip.AddrPort{up}}
	})
	server := serveLoopbackDNS(t, d)
	ctx := t.Context()
	const id = "sbx-dns"
	policy := &sandbox.NetworkPolicy{Mode: modeCustom, AllowDomains: []string{"allowed.test", "*.wild.test", "private.test"}}
	np, err := egressPolicy(d.meta(id), policy, d.cfg.DNS, nil)
	if err != nil {
		t.Fatal(err)
	}
	nps := cs.NetworkingV1().NetworkPolicies("sandboxes")
	if _, err := nps.Create(ctx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: d.meta(id), Status: corev1.PodStatus{PodIP: "127.0.0.1"}}
	if _, err := cs.CoreV1().Pods("sandboxes").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	current := func() *networkingv1.NetworkPolicy {
		t.Helper()
		np, err := nps.Get(ctx, podName(id), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return np
	}

	for _, network := range []string{"udp", "tcp"} {
		resp := lookup(t, server, network, "Allowed.Test")
		if resp.Rcode != dns.RcodeSuccess || !slices.Equal(answerAddrs(resp), []string{"198.51.100.2"}) {
			t.Fatalf("allowed.test over %s: %s", network, resp)
		}
	}
	if got := allowedBlocks(current()); !slices.Equal(got, []string{"198.51.100.2/32"}) {
		t.Errorf("allowed blocks after the lookup: %v", got)
	}
	if resp := lookup(t, server, "udp", "a.www.wild.test"); resp.Rcode != dns.RcodeNameError {
		t.Errorf("a name the upstream lacks: %s", dns.RcodeToString[resp.Rcode])
	}
	if resp := lookup(t, server, "udp", "www.wild.test"); !slices.Equal(answerAddrs(resp), []string{"198.51.100.4"}) {
		t.Errorf("www.wild.test: %s", resp)
	}
	for _, name := range []string{"other.test", "wild.test", "private.test"} {
		if resp := lookup(t, server, "udp", name); resp.Rcode != dns.RcodeRefused {
			t.Errorf("%s: %s, want REFUSED", name, dns.RcodeToString[resp.Rcode])
		}
	}
	if got := resolvedOf(t, current()); !slices.Equal(got, []netip.Addr{netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("198.51.100.4")}) {
		t.Errorf("resolved %v", got)
	}

	// A new policy: the resolved addresses start anew, and the names follow.
	if err := d.UpdateEgress(ctx, id, &sandbox.NetworkPolicy{Mode: modeCustom, AllowDomains: []string{"other.test"}}); err != nil {
		t.Fatal(err)
	}
	if got := allowedBlocks(current()); len(got) != 0 {
		t.Errorf("allowed blocks after the update: %v", got)
	}
	if resp := lookup(t, server, "udp", "allowed.test"); resp.Rcode != dns.RcodeRefused {
		t.Errorf("allowed.test after the update: %s, want REFUSED", dns.RcodeToString[resp.Rcode])
	}
	if resp := lookup(t, server, "udp", "other.test"); !slices.Equal(answerAddrs(resp), []string{"198.51.100.3"}) {
		t.Errorf("other.test after the update: %s", resp)
	}
	if got := allowedBlocks(current()); !slices.Equal(got, []string{"198.51.100.3/32"}) {
		t.Errorf("allowed blocks: %v", got)
	}
	// allow-all resolves every name and writes nothing.
	if err := d.UpdateEgress(ctx, id, &sandbox.NetworkPolicy{Mode: modeAllowAll}); err != nil {
		t.Fatal(err)
	}
	if resp := lookup(t, server, "udp", "allowed.test"); !slices.Equal(answerAddrs(resp), []string{"198.51.100.2"}) {
		t.Errorf("allowed.test under allow-all: %s", resp)
	}
	if got := resolvedOf(t, current()); len(got) != 0 {
		t.Errorf("allow-all resolved %v", got)
	}
	if err := d.UpdateEgress(ctx, id, nil); err != nil {
		t.Fatal(err)
	}
	if resp := lookup(t, server, "udp", "allowed.test"); resp.Rcode != dns.RcodeRefused {
		t.Errorf("deny-all: %s, want REFUSED", dns.RcodeToString[resp.Rcode])
	}

	// A Pod of another namespace or without paddock's labels is no
	// sandbox: a second driver, whose cache has not seen the address.
	d2 := testDriver(t, func(c *Config) {
		c.Client = cs
		c.Namespace = "elsewhere"
		c.DNS = &DNSConfig{Address: netip.MustParseAddr("127.0.0.1"), Upstream: []netip.AddrPort{up}}
	})
	if resp := lookup(t, serveLoopbackDNS(t, d2), "udp", "allowed.test"); resp.Rcode != dns.RcodeRefused {
		t.Errorf("a query of no sandbox of the namespace: %s, want REFUSED", dns.RcodeToString[resp.Rcode])
	}
}

// TestAllowResolvedConflict: a write that loses to a concurrent change
// reads the object again and decides on the policy it now holds.
func TestAllowResolvedConflict(t *testing.T) {
	cs := fake.NewClientset()
	d := testDriver(t, func(c *Config) {
		c.Client = cs
		c.DNS = &DNSConfig{Address: netip.MustParseAddr("127.0.0.1"), Upstream: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:53")}}
	})
	ctx := context.Background()
	const id = "sbx-race"
	allowed := &sandbox.NetworkPolicy{Mode: modeCustom, AllowDomains: []string{"allowed.test"}}
	np, err := egressPolicy(d.meta(id), allowed, d.cfg.DNS, nil)
	if err != nil {
		t.Fatal(err)
	}
	nps := cs.NetworkingV1().NetworkPolicies("sandboxes")
	if _, err := nps.Create(ctx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	addrs := []netip.Addr{netip.MustParseAddr("198.51.100.2")}

	// One conflict, the policy unchanged: the second write lands.
	conflicts := 1
	cs.PrependReactor("patch", "networkpolicies", func(k8stesting.Action) (bool, k8sruntime.Object, error) {
		if conflicts == 0 {
			return false, nil, nil
		}
		conflicts--
		return true, nil, apierrors.NewConflict(schema.GroupResource{Group: "networking.k8s.io", Resource: "networkpolicies"}, podName(id), errors.New("changed"))
	})
	read, _, err := d.egressOf(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.allowResolved(ctx, id, "allowed.test", read, addrs); err != nil {
		t.Fatal(err)
	}
	got, _ := nps.Get(ctx, podName(id), metav1.GetOptions{})
	if !slices.Equal(allowedBlocks(got), []string{"198.51.100.2/32"}) {
		t.Errorf("allowed blocks %v", allowedBlocks(got))
	}

	// The policy changed meanwhile (a write with the old read conflicts):
	// the name is refused, and nothing is added.
	if err := d.UpdateEgress(ctx, id, &sandbox.NetworkPolicy{Mode: modeCustom, AllowDomains: []string{"other.test"}}); err != nil {
		t.Fatal(err)
	}
	conflicts = 1
	if err := d.allowResolved(ctx, id, "allowed.test", read, []netip.Addr{netip.MustParseAddr("198.51.100.9")}); !errors.Is(err, errNameNotAllowed) {
		t.Errorf("allowResolved after the policy changed = %v, want errNameNotAllowed", err)
	}
	if got, _ := nps.Get(ctx, podName(id), metav1.GetOptions{}); len(allowedBlocks(got)) != 0 {
		t.Errorf("allowed blocks %v, want none", allowedBlocks(got))
	}
}
