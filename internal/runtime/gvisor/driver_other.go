//go:build !linux

package gvisor

import (
	"context"
	"log/slog"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Config configures the driver (see the Linux build).
type Config struct {
	DataDir, AgentPath, Runsc, Platform string
	DiskReserve                         int64
	Logger                              *slog.Logger
}

// Driver is unavailable off Linux.
type Driver struct{}

var errUnsupported = sandbox.Errorf(sandbox.ErrUnsupported, "unsupported_os", "the gvisor driver is unsupported on this OS: it needs Linux")

// New fails off Linux.
func New(Config) (*Driver, error) { return nil, errUnsupported }

func (*Driver) Capabilities() runtime.Capabilities { return runtime.Capabilities{Name: "gvisor"} }
func (*Driver) Create(context.Context, runtime.Spec) (*agent.Client, error) {
	return nil, errUnsupported
}
func (*Driver) Agent(context.Context, string) (*agent.Client, error) { return nil, errUnsupported }
func (*Driver) Stats(context.Context, string) (runtime.Stats, error) {
	return runtime.Stats{}, errUnsupported
}
func (*Driver) Stop(context.Context, string) error           { return errUnsupported }
func (*Driver) Destroy(context.Context, string) error        { return errUnsupported }
func (*Driver) List(context.Context) ([]runtime.Info, error) { return nil, errUnsupported }
func (*Driver) Close() error                                 { return nil }
