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
// another tenant.
func testEscape(t *testing.T, nd func(*testing.T) runtime.Driver) {
	d := nd(t)
	b := createBox(t, d, "escape", defaultRes)
	peer := createBox(t, d, "escape-peer", defaultRes)
	escape.Run(t, escape.Target{Driver: d.Capabilities().Name, Agent: b.c, Peer: peer.c})
}
