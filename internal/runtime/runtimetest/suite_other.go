//go:build !linux

package runtimetest

import (
	"testing"

	"github.com/paddock-dev/paddock/internal/runtime"
)

// Run skips off Linux: every driver needs Linux kernel isolation.
func Run(t *testing.T, newDriver func(t *testing.T) runtime.Driver) {
	t.Skip("runtimetest: unsupported on this OS, drivers need Linux")
}

// Escape skips off Linux, as Run does.
func Escape(t *testing.T, newDriver func(t *testing.T) runtime.Driver) {
	t.Skip("runtimetest: unsupported on this OS, drivers need Linux")
}
