package netguard

import (
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	pool := []netip.Prefix{netip.MustParsePrefix("10.213.0.0/16")}
	strict := Guard{Deny: pool}
	lax := Guard{AllowPrivate: true, Deny: pool}
	listed := Guard{Allow: []netip.Prefix{netip.MustParsePrefix("192.168.7.0/24")}}
	blocked := Guard{AllowPrivate: true, Deny: []netip.Prefix{netip.MustParsePrefix("93.184.216.0/24")}}
	tests := []struct {
		name string
		g    Guard
		addr string
		ok   bool
	}{
		{"public v4", strict, "93.184.216.34", true},
		{"public v6", strict, "2606:2800:220:1::248", true},
		{"metadata", strict, "169.254.169.254", false},
		{"metadata with private allowed", lax, "169.254.169.254", false},
		{"mapped metadata", lax, "::ffff:169.254.169.254", false},
		{"alibaba metadata with private allowed", lax, "100.100.100.200", false},
		{"azure host endpoint", lax, "168.63.129.16", false},
		{"ec2 v6 metadata", lax, "fd00:ec2::254", false},
		{"gcp v6 metadata", lax, "fd20:ce::254", false},
		{"link-local v6", lax, "fe80::1", false},
		{"multicast", lax, "224.0.0.1", false},
		{"class E", lax, "240.0.0.1", false},
		{"broadcast", lax, "255.255.255.255", false},
		{"this network", lax, "0.0.0.0", false},
		{"unspecified v6", lax, "::", false},
		{"sandbox pool with private allowed", lax, "10.213.0.2", false},
		{"nat64 of metadata", lax, "64:ff9b::a9fe:a9fe", false},
		{"loopback", strict, "127.0.0.1", false},
		{"loopback v6", strict, "::1", false},
		{"mapped loopback", strict, "::ffff:127.0.0.1", false},
		{"rfc1918 10", strict, "10.1.2.3", false},
		{"rfc1918 172", strict, "172.20.0.1", false},
		{"rfc1918 192", strict, "192.168.1.1", false},
		{"cgnat", strict, "100.64.0.1", false},
		{"benchmarking", strict, "198.19.255.1", false},
		{"ietf protocol assignments", strict, "192.0.0.8", false},
		{"unique local", strict, "fd12::1", false},
		{"site local", strict, "fec0::1", false},
		{"loopback with private allowed", lax, "127.0.0.1", true},
		{"rfc1918 with private allowed", lax, "10.1.2.3", true},
		{"listed private", listed, "192.168.7.9", true},
		{"unlisted private", listed, "192.168.8.9", false},
		{"operator-blocked public", blocked, "93.184.216.34", false},
		{"invalid", lax, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a netip.Addr
			if tt.addr != "" {
				a = netip.MustParseAddr(tt.addr)
			}
			err := tt.g.Check(a)
			if (err == nil) != tt.ok {
				t.Fatalf("Check(%s) = %v, want ok=%v", tt.addr, err, tt.ok)
			}
			var be *BlockedError
			if err != nil && (!errors.Is(err, ErrBlocked) || !errors.As(err, &be)) {
				t.Fatalf("Check(%s) = %v, not a *BlockedError wrapping ErrBlocked", tt.addr, err)
			}
		})
	}
}

// TestTransportRefusesBeforeConnect: a refused address sees no connection,
// whether dialled by address or by a name resolving to it.
func TestTransportRefusesBeforeConnect(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan struct{}, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- struct{}{}
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	tr := Guard{Hint: "the test's setting"}.Transport()
	t.Cleanup(tr.CloseIdleConnections)
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	for _, u := range []string{"http://127.0.0.1:" + port + "/", "http://localhost:" + port + "/"} {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := tr.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		if !errors.Is(err, ErrBlocked) || !strings.Contains(err.Error(), "the test's setting") {
			t.Errorf("GET %s: %v, want ErrBlocked naming the setting", u, err)
		}
	}
	// The listener accepts in order: once this unguarded connection is
	// accepted, any earlier one would have been too.
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	<-accepted
	if n := len(accepted); n != 0 {
		t.Errorf("the refused listener accepted %d more connections", n)
	}
}
