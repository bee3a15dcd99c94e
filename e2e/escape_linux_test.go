package e2e

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/escape"
	"github.com/paddock-dev/paddock/internal/escape/wire"
	"github.com/paddock-dev/paddock/internal/netns"
)

// TestEscape runs the escape battery (internal/escape) in a sandbox of the
// whole stack, with what only the stack has as targets: another tenant's
// sandbox serving a port and its resolver, host listeners on the veths,
// both agents' sockets and the data dir's files. Each target is first shown
// reachable from where it should be, so a refusal means isolation, not a
// dead target. After the battery (kill(-1) with sudo included) the stack,
// the other sandbox and its server still work.
func TestEscape(t *testing.T) {
	dir := newDataDir(t)
	s := startStack(t, dir, stackOptions{network: testPool})
	ctx := ctxFor(t, 5*time.Minute)
	target := s.create(t, api.CreateSandboxRequest{})
	peer := s.create(t, api.CreateSandboxRequest{Ports: []api.PortSpec{{Port: 3000, Public: true}}})
	serveHTTP(t, peer, 3000)

	nets := map[string]netns.Network{}
	for _, n := range s.net.List() {
		nets[n.ID] = n
	}
	tn, pn := nets[target.ID], nets[peer.ID]
	if !tn.HostAddr.IsValid() || !pn.HostAddr.IsValid() {
		t.Fatalf("the netns manager lacks a sandbox: %+v", nets)
	}
	peerServer := netip.AddrPortFrom(netip.MustParseAddr(peer.Address), 3000)
	peerResolver := netip.AddrPortFrom(pn.DNS, 53)
	connect := []netip.AddrPort{peerServer, peerResolver}
	for _, a := range []netip.Addr{tn.HostAddr, pn.HostAddr} {
		connect = append(connect, hostListener(t, a))
	}
	for _, a := range connect {
		c, err := net.DialTimeout("tcp", a.String(), 2*time.Second)
		if err != nil {
			t.Fatalf("control: the host cannot reach %v: %v", a, err)
		}
		c.Close()
	}

	// The runc driver's host dir of a sandbox: <data>/runc/<id>.
	var sockets []string
	for _, id := range []string{target.ID, peer.ID} {
		p := filepath.Join(dir, "runc", id, "a.sock")
		c, err := net.DialTimeout("unix", p, 2*time.Second)
		if err != nil {
			t.Fatalf("control: the host cannot reach the agent socket %s: %v", p, err)
		}
		c.Close()
		sockets = append(sockets, p)
	}
	hostFiles := []string{filepath.Join(dir, "paddock.db"),
		filepath.Join(dir, "runc", target.ID, "agent.out"), filepath.Join(dir, "runc", peer.ID, "agent.out")}
	for _, f := range hostFiles {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("control: host file: %v", err)
		}
	}

	tc, err := s.mgr.Agent(ctx, target.ID)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := s.mgr.Agent(ctx, peer.ID)
	if err != nil {
		t.Fatal(err)
	}
	// Control: the peer's resolver answers the peer, so its silence to the
	// target is the network's doing.
	if err := escape.Install(ctx, pc); err != nil {
		t.Fatal(err)
	}
	rs, err := escape.RunProbe(ctx, pc, false, "-only", "dns-query", "-dns", peerResolver.String())
	if err != nil || len(rs) != 1 || rs[0].Status != wire.Escaped {
		t.Fatalf("control: the peer's own resolver does not answer it: %+v %v", rs, err)
	}

	escape.Run(t, escape.Target{
		Driver:    "runc", // the stack's driver, whose data dir layout the targets above name
		Agent:     tc,
		Peer:      pc,
		HostFiles: hostFiles,
		Connect:   connect,
		DNS:       []netip.AddrPort{peerResolver},
		Sockets:   sockets,
	})

	// Everything around the target survived it.
	if out, code := sh(t, peer, "echo alive"); code != 0 || out != "alive\n" {
		t.Errorf("the peer sandbox after the battery: %q exit %d", out, code)
	}
	if out, code := sh(t, target, "echo alive"); code != 0 || out != "alive\n" {
		t.Errorf("the target sandbox after the battery: %q exit %d", out, code)
	}
	if c, err := net.DialTimeout("tcp", peerServer.String(), 2*time.Second); err != nil {
		t.Errorf("the peer's server after the battery: %v", err)
	} else {
		c.Close()
	}
	if err := peer.Refresh(ctx); err != nil || peer.Status != api.StatusRunning {
		t.Errorf("the API after the battery: %v, peer %s", err, peer.Status)
	}
}

// hostListener listens on a host address until the test ends and returns
// where.
func hostListener(t *testing.T, a netip.Addr) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", netip.AddrPortFrom(a, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() { // owned: ends when ln closes
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}
