package daemon

import (
	"net/netip"
	"slices"
	"testing"
)

// TestKubernetesDNSConfig: the resolver's config follows the flags: none
// without a listener, the listener's port for the Pods behind the
// Service, the given upstream servers.
func TestKubernetesDNSConfig(t *testing.T) {
	if dc, err := (KubernetesConfig{}).dnsConfig(); dc != nil || err != nil {
		t.Errorf("no listener: %+v, %v; want none", dc, err)
	}
	up := []netip.AddrPort{netip.MustParseAddrPort("10.96.0.10:53")}
	kc := KubernetesConfig{DNSListen: ":5353", DNSAddress: netip.MustParseAddr("10.96.0.20"), DNSUpstream: up,
		DNSNamespace: "paddock", DNSPodLabels: map[string]string{"app": "paddock"}}
	dc, err := kc.dnsConfig()
	if err != nil {
		t.Fatal(err)
	}
	if dc.Address != kc.DNSAddress || dc.PeerPort != 5353 || dc.PeerNamespace != "paddock" || dc.PeerLabels["app"] != "paddock" || !slices.Equal(dc.Upstream, up) {
		t.Errorf("dns config %+v", dc)
	}
	kc.DNSListen = "no-port"
	if _, err := kc.dnsConfig(); err == nil {
		t.Error("a listen address without a port was accepted")
	}
}
