//go:build !linux

package image

import (
	"runtime"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Host is unsupported off Linux: the image shares the host's Linux userland.
func Host(dataDir string) (*Rootfs, error) {
	return nil, sandbox.Errorf(sandbox.ErrUnsupported, "unsupported_os",
		"the host image is unsupported on this OS (%s): Linux only", runtime.GOOS)
}
