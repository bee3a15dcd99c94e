//go:build !linux

package agent

import (
	"fmt"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// InstallSeccomp is only available on Linux.
func InstallSeccomp() error {
	return fmt.Errorf("seccomp: %w on this OS", sandbox.ErrUnsupported)
}
