// Package runc is paddock's default sandbox driver: it runs each sandbox as a
// container through runc's libcontainer, in-process (no runc binary), with
// pid, mount, ipc, uts, net and cgroup namespaces, cgroup limits, a read-only
// base image under a per-sandbox overlayfs upper layer, exactly the agent's
// capability set and no_new_privs. The container's init is paddock-agent,
// which installs its own seccomp filter.
//
// The driver is a runtime.Snapshotter: it copies a sandbox's upper dir, with
// the sandbox frozen, into a new layer without following anything in it
// (snapshot_linux.go).
//
// Programs that link this package must call Init first thing in main (and
// test binaries in TestMain): libcontainer re-executes the calling binary
// with the argument "init" to set up each container.
package runc

import (
	"log/slog"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Config configures the driver.
type Config struct {
	// DataDir holds images, per-sandbox dirs (DataDir/runc/<id>) and the
	// libcontainer state (DataDir/runc/.state). Keep it short: unix socket
	// paths are limited, though the driver copes with long ones.
	DataDir string
	// AgentPath is the static paddock-agent binary (see agentbin.Path).
	AgentPath string
	// Logger receives driver logs; nil means slog.Default().
	Logger *slog.Logger
}

// Validate reports a missing or malformed setting.
func (c Config) Validate() error {
	switch {
	case c.DataDir == "":
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "runc driver: DataDir is required")
	case c.AgentPath == "":
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "runc driver: AgentPath is required")
	}
	return nil
}

// errUnsupported is returned by every entry point off Linux.
var errUnsupported = sandbox.Errorf(sandbox.ErrUnsupported, "unsupported_os", "the runc driver is unsupported on this OS: it needs Linux")
