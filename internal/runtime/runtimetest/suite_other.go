//go:build !linux

package runtimetest

import (
	"testing"

	"github.com/paddock-dev/paddock/internal/runtime"
)

// Harness is the driver and fixtures a test gives Run (see the Linux
// build for its fields).
type Harness struct {
	NewDriver func(t *testing.T) runtime.Driver
}

// Run skips off Linux: every driver needs Linux kernel isolation.
func Run(t *testing.T, h Harness) {
	t.Skip("runtimetest: unsupported on this OS, drivers need Linux")
}

// Escape skips off Linux, as Run does.
func Escape(t *testing.T, newDriver func(t *testing.T) runtime.Driver) {
	t.Skip("runtimetest: unsupported on this OS, drivers need Linux")
}
