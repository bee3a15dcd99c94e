//go:build linux && !amd64

package agent

import (
	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/agent/seccompgen"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// SeccompFilter is the seccomp filter every sandbox process runs under:
// Docker's default profile for sandbox.Capabilities, compiled at start on this
// architecture (amd64 has it compiled in, see seccompgen).
func SeccompFilter() ([]unix.SockFilter, error) { return seccompgen.Filter(sandbox.Capabilities) }
