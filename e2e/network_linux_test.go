package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/proxy"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/sdk"
)

// testPool is the address pool of networked e2e tests: a /24 of paddock's
// default pool, so nothing a test does routes off the machine (the host
// has no route or NAT for it beyond the veths the tests create).
var testPool = netip.MustParsePrefix("10.213.250.0/24")

// serveHTTP starts `python3 -m http.server port` detached in sb and waits
// until it listens.
func serveHTTP(t *testing.T, sb *sdk.Sandbox, port int) {
	t.Helper()
	ctx := ctxFor(t, 30*time.Second)
	if _, err := sb.RunCommand(ctx, api.CommandRequest{Cmd: "python3", Args: []string{"-m", "http.server", fmt.Sprint(port), "--bind", "0.0.0.0"},
		Cwd: "/tmp", Detached: true}); err != nil {
		t.Fatalf("start http.server: %v", err)
	}
	for range 100 { // bounded: 10 s
		ports, err := sb.Ports(ctx)
		if err != nil {
			t.Fatalf("ports: %v", err)
		}
		if slices.ContainsFunc(ports, func(p api.Port) bool { return p.Port == port }) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("port %d never listened", port)
}

// connectScript exits 0 if the sandbox can open a TCP connection to addr
// within a second, 3 otherwise.
func connectScript(addr netip.AddrPort) string {
	return fmt.Sprintf(`python3 -c "
import socket, sys
try:
    socket.create_connection(('%s', %d), timeout=1)
except Exception as e:
    print(e); sys.exit(3)
"`, addr.Addr(), addr.Port())
}

func TestNetworkProxyAndEgress(t *testing.T) {
	s := startStack(t, newDataDir(t), stackOptions{network: testPool})
	sb := s.create(t, api.CreateSandboxRequest{Ports: []api.PortSpec{{Port: 3000}, {Port: 3001, Public: true}}})
	addr, err := netip.ParseAddr(sb.Address)
	if err != nil || !testPool.Contains(addr) {
		t.Fatalf("sandbox address %q is not in %v", sb.Address, testPool)
	}
	if sb.NetworkPolicy == nil || sb.NetworkPolicy.Mode != "allow-all" {
		t.Errorf("default policy %+v, want allow-all", sb.NetworkPolicy)
	}
	if len(sb.Routes) != 2 || sb.Routes[0].Subdomain != "3000-"+sb.ID || !sb.Routes[1].Public {
		t.Errorf("routes %+v", sb.Routes)
	}
	var hostAddr netip.Addr
	for _, n := range s.net.List() {
		if n.ID == sb.ID {
			hostAddr = n.HostAddr
			if out, _ := sh(t, sb, "cat /etc/resolv.conf"); strings.TrimSpace(out) != "nameserver "+n.DNS.String() {
				t.Errorf("resolv.conf = %q, want nameserver %s", out, n.DNS)
			}
			// The hostname resolves locally, never through the upstream.
			if out, code := sh(t, sb, `python3 -c "import socket; print(socket.gethostbyname(socket.gethostname()))"`); code != 0 || strings.TrimSpace(out) != "127.0.1.1" {
				t.Errorf("own hostname resolves to %q (exit %d), want 127.0.1.1", out, code)
			}
		}
	}
	if !hostAddr.IsValid() {
		t.Fatal("the netns manager does not list the sandbox")
	}

	serveHTTP(t, sb, 3000)
	serveHTTP(t, sb, 3001)
	ctx := ctxFor(t, time.Minute)
	signed, err := sb.SignedURL(ctx, 3000, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	su, err := url.Parse(signed.URL)
	if err != nil || su.Host != "3000-"+sb.ID+".localhost:"+portOf(s.http.Listener.Addr()) {
		t.Fatalf("signed URL %q (%v)", signed.URL, err)
	}
	token := su.Query().Get(proxy.TokenParam)
	if time.Until(signed.ExpiresAt) < 59*time.Minute {
		t.Errorf("expiresAt %v, want an hour from now", signed.ExpiresAt)
	}
	past := &proxy.Signer{Key: s.signer.Key, Now: func() time.Time { return time.Now().Add(-2 * time.Hour) }}
	expired := past.Sign(sb.ID, 3000, time.Hour)
	flip := byte('A')
	if token[len(token)-1] == 'A' {
		flip = 'B'
	}
	tampered := token[:len(token)-1] + string(flip)

	if err := sb.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	activityBefore := sb.LastActivityAt
	pathBase := s.http.URL + proxy.PathPrefix(sb.ID, 3000) + "/"
	hostHeader := func(port int) string { return fmt.Sprintf("%d-%s.localhost", port, sb.ID) }
	for _, tc := range []struct {
		name   string
		url    string
		host   string
		bearer string
		want   int
	}{
		{"path form, signed", pathBase + "?" + proxy.TokenParam + "=" + token, "", "", 200},
		{"host form, signed", s.http.URL + "/?" + proxy.TokenParam + "=" + token, hostHeader(3000), "", 200},
		{"host form, owner's token", s.http.URL + "/", hostHeader(3000), s.token, 200},
		{"public port, no token", s.http.URL + "/", hostHeader(3001), "", 200},
		{"path form, no token", pathBase, "", "", 401},
		{"host form, no token", s.http.URL + "/", hostHeader(3000), "", 401},
		{"expired", pathBase + "?" + proxy.TokenParam + "=" + expired, "", "", 403},
		{"tampered", pathBase + "?" + proxy.TokenParam + "=" + tampered, "", "", 403},
		{"undeclared port", s.http.URL + "/", fmt.Sprintf("4000-%s.localhost", sb.ID), s.token, 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, tc.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.host != "" {
				req.Host = tc.host
			}
			if tc.bearer != "" {
				req.Header.Set("Authorization", "Bearer "+tc.bearer)
			}
			resp, err := s.http.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case tc.want == 200 && (resp.StatusCode != 200 || !strings.Contains(string(body), "Directory listing")):
				t.Errorf("status %d, body %.200q; want the sandbox's directory listing", resp.StatusCode, body)
			case tc.want != 200 && (resp.StatusCode/100 != tc.want/100 || strings.Contains(string(body), "Directory listing")):
				t.Errorf("status %d, body %.200q; want %d and nothing from the sandbox", resp.StatusCode, body, tc.want)
			}
		})
	}

	// Proxied requests are sandbox activity.
	if err := sb.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if !sb.LastActivityAt.After(activityBefore) {
		t.Errorf("lastActivityAt %v did not move past %v after proxied requests", sb.LastActivityAt, activityBefore)
	}

	// From inside: the host end of the veth, another sandbox and the cloud
	// metadata address are all out of reach, whatever the policy.
	ln, err := net.Listen("tcp", netip.AddrPortFrom(hostAddr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // owned: ends when ln closes
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	other := s.create(t, api.CreateSandboxRequest{Ports: []api.PortSpec{{Port: 3000, Public: true}}})
	serveHTTP(t, other, 3000)
	otherAddr := netip.MustParseAddr(other.Address)
	for _, target := range []netip.AddrPort{
		netip.MustParseAddrPort(ln.Addr().String()),
		netip.AddrPortFrom(otherAddr, 3000),
		netip.MustParseAddrPort("169.254.169.254:80"),
	} {
		if out, code := sh(t, sb, connectScript(target)); code != 3 {
			t.Errorf("sandbox reached %v (exit %d, %q); want refused", target, code, out)
		}
	}
	// The host (the proxy) does reach the other sandbox: what refused the
	// sandbox was its policy, not a dead server.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.http.URL+"/", nil)
	req.Host = fmt.Sprintf("3000-%s.localhost", other.ID)
	if resp, err := s.http.Client().Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("proxy to the other sandbox: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// A policy change reaches the running sandbox: deny-all makes its
	// resolver refuse lookups at once (never asking upstream).
	if err := sb.SetNetworkPolicy(ctx, api.NetworkPolicy{Mode: "deny-all"}); err != nil {
		t.Fatal(err)
	}
	if sb.NetworkPolicy == nil || sb.NetworkPolicy.Mode != "deny-all" {
		t.Errorf("policy after update: %+v", sb.NetworkPolicy)
	}
	for _, n := range s.net.List() {
		if n.ID == sb.ID && n.Policy.Mode != "deny-all" {
			t.Errorf("netns still enforces %s", n.Policy.Mode)
		}
	}
	start := time.Now()
	if out, code := sh(t, sb, `python3 -c "import socket; socket.getaddrinfo('example.test', 80)"`); code == 0 {
		t.Errorf("lookup succeeded under deny-all: %q", out)
	}
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("refused lookup took %s; want a fast REFUSED", took)
	}

	st, err := sb.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.NetworkRxBytes == 0 || st.NetworkTxBytes == 0 {
		t.Errorf("network bytes rx %d tx %d after proxied traffic; want > 0", st.NetworkRxBytes, st.NetworkTxBytes)
	}
}

// TestNetworkLoop creates and destroys sandboxes with networks through
// node and the runc driver, one at a time; the data dir's leak check then
// proves no veth, pinned namespace or mount is left.
func TestNetworkLoop(t *testing.T) {
	n, limit := 200, 3*time.Minute
	if testing.Short() {
		n = 20
	}
	s := startStack(t, newDataDir(t), stackOptions{network: testPool})
	ctx := context.Background()
	small := sandbox.Resources{VCPUs: 0.5, MemoryMB: 64, PIDs: 64}
	deadline := time.Now().Add(limit)
	for i := range n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d sandboxes in %s", i, n, limit)
		}
		sb, err := s.mgr.Create(ctx, sandbox.CreateRequest{Resources: small, Ports: []sandbox.Port{{Port: 3000}}})
		if err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
		if err := s.mgr.Delete(ctx, sb.ID); err != nil {
			t.Fatalf("delete %d: %v", i, err)
		}
	}
	if left := s.net.List(); len(left) != 0 {
		t.Errorf("networks left: %v", left)
	}
}
