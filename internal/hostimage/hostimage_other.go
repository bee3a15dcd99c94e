//go:build !linux

package hostimage

import (
	goruntime "runtime"

	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Build is unsupported off Linux: the image shares the host's Linux userland.
func Build(dataDir string) (*runtime.Rootfs, error) {
	return nil, sandbox.Errorf(sandbox.ErrUnsupported, "unsupported_os",
		"the host image is unsupported on this OS (%s): Linux only", goruntime.GOOS)
}
