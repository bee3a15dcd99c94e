//go:build !linux

package netns

import (
	"context"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Manager is unavailable off Linux: network namespaces, veth and nftables
// are Linux features.
type Manager struct{}

func errUnsupported() error {
	return sandbox.Errorf(sandbox.ErrUnsupported, "unsupported_os", "netns: sandbox networking is unsupported on this OS")
}

// New returns an "unsupported on this OS" error.
func New(Config) (*Manager, error) { return nil, errUnsupported() }

// Close does nothing.
func (m *Manager) Close() error { return nil }

// Setup returns an "unsupported on this OS" error.
func (m *Manager) Setup(context.Context, string, Policy) (*Network, error) {
	return nil, errUnsupported()
}

// Update returns an "unsupported on this OS" error.
func (m *Manager) Update(context.Context, string, Policy) error { return errUnsupported() }

// Teardown returns an "unsupported on this OS" error.
func (m *Manager) Teardown(context.Context, string) error { return errUnsupported() }

// List returns nothing.
func (m *Manager) List() []Network { return nil }

// Stats returns an "unsupported on this OS" error.
func (m *Manager) Stats(string) (rxBytes, txBytes uint64, err error) { return 0, 0, errUnsupported() }

// ForUserNS returns an "unsupported on this OS" error.
func ForUserNS(nsPath, sysfs string, sysctls map[string]string) error { return errUnsupported() }

// GuardNode returns an "unsupported on this OS" error.
func GuardNode(podNS string, g NodeGuard) error { return errUnsupported() }
