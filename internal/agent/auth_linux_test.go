//go:build linux

package agent

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// TestTCPCredential: an agent serving over TCP with a token answers a
// client that carries it, refuses one that does not or carries another,
// and leaves its own port out of the sandbox's ports.
func TestTCPCredential(t *testing.T) {
	e := startServer(t, func(c *ServerConfig) { c.Token = testToken })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	e.srv.cfg.OwnPort = port
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- e.srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	addr := ln.Addr().String()
	for _, tc := range []struct {
		name   string
		client *Client
		ok     bool
	}{
		{"right token", TCPClient(addr, testToken), true},
		{"wrong token", TCPClient(addr, testToken+"x"), false},
		{"no token", NewClient(func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer tc.client.Close()
			_, err := tc.client.Ping(testCtx(t))
			if tc.ok && err != nil {
				t.Fatalf("ping: %v", err)
			}
			if !tc.ok {
				if err == nil {
					t.Fatal("ping answered without the credential")
				}
				if _, err := tc.client.Start(testCtx(t), CommandRequest{Cmd: "true"}); err == nil {
					t.Fatal("a command started without the credential")
				}
				var se *sandbox.Error
				if !errors.As(err, &se) || se.Code != "unauthorized" {
					t.Errorf("error %v, want code unauthorized", err)
				}
			}
		})
	}
	// The unix socket of the same server needs the token too: the check is
	// the server's, not the listener's.
	if _, err := e.client.Ping(testCtx(t)); err == nil {
		t.Error("the unix client answered without the credential")
	}
	ports, err := TCPClient(addr, testToken).Ports(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ports {
		if p.Port == port {
			t.Errorf("the agent's own port %d is listed: %v", port, ports)
		}
	}
}
