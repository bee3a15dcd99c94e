//go:build !linux

package runc

import (
	"context"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/runtime"
)

// Init does nothing off Linux.
func Init() {}

// Driver is unavailable off Linux; New always fails.
type Driver struct{}

var _ runtime.Driver = (*Driver)(nil)

// New fails: the runc driver needs Linux.
func New(cfg Config) (*Driver, error) { return nil, errUnsupported }

func (d *Driver) Capabilities() runtime.Capabilities { return runtime.Capabilities{Name: "runc"} }
func (d *Driver) Create(ctx context.Context, spec runtime.Spec) (*agent.Client, error) {
	return nil, errUnsupported
}
func (d *Driver) Agent(ctx context.Context, id string) (*agent.Client, error) {
	return nil, errUnsupported
}
func (d *Driver) Stats(ctx context.Context, id string) (runtime.Stats, error) {
	return runtime.Stats{}, errUnsupported
}
func (d *Driver) Stop(ctx context.Context, id string) error        { return errUnsupported }
func (d *Driver) Destroy(ctx context.Context, id string) error     { return errUnsupported }
func (d *Driver) List(ctx context.Context) ([]runtime.Info, error) { return nil, errUnsupported }
func (d *Driver) Close() error                                     { return nil }
