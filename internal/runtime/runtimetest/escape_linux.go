package runtimetest

import (
	"testing"

	"github.com/paddock-dev/paddock/internal/escape"
	"github.com/paddock-dev/paddock/internal/runtime"
)

// Escape runs the escape battery alone against the driver, for a driver's
// TestEscape (`go test -run Escape`); Run includes it as a subtest.
func Escape(t *testing.T, newDriver func(t *testing.T) runtime.Driver) {
	testEscape(t, newDriver)
}

// testEscape runs the escape battery (internal/escape) in a sandbox of the
// driver, as the user and with sudo, with a second sandbox beside it as
// another tenant. A sandbox with a network of its own (a Pod) must not
// connect to a listener of the host's on its gateway (tcp-connect).
func testEscape(t *testing.T, nd func(*testing.T) runtime.Driver) {
	d := nd(t)
	b := createBox(t, d, "escape", defaultRes)
	peer := createBox(t, d, "escape-peer", defaultRes)
	tg := escape.Target{Driver: d.Capabilities().Name, Agent: b.c, Peer: peer.c}
	if node, ok := hostAddrToward(t, b); ok {
		accepted := make(chan string, 16)
		tg.Connect = append(tg.Connect, hostListener(t, node, accepted))
		defer func() {
			select {
			case to := <-accepted:
				t.Errorf("the host's listener on %s accepted a connection from the sandbox", to)
			default:
			}
		}()
	}
	escape.Run(t, tg)
}
