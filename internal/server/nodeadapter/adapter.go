// Package nodeadapter lets a *node.Manager serve as the server's Sandboxes.
// The server declares the interface it needs with its own parameter types,
// so that it builds and tests without node; this package is the one place
// that converts between the two, and the wiring code (cmd/paddock, the
// end-to-end tests) uses it.
package nodeadapter

import (
	"context"

	"github.com/paddock-dev/paddock/internal/node"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/server"
)

// Adapter forwards to a *node.Manager.
type Adapter struct {
	*node.Manager
}

var _ server.Sandboxes = Adapter{}

// New wraps m.
func New(m *node.Manager) Adapter { return Adapter{Manager: m} }

// Create converts the server's parameters; the structs have the same fields.
func (a Adapter) Create(ctx context.Context, req server.CreateParams) (sandbox.Sandbox, error) {
	return a.Manager.Create(ctx, node.CreateRequest(req))
}

// List converts the server's parameters; the structs have the same fields.
func (a Adapter) List(ctx context.Context, opts server.ListParams) ([]sandbox.Sandbox, string, error) {
	return a.Manager.List(ctx, node.ListOptions(opts))
}
