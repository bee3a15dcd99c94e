//go:build !linux

package image

import (
	"context"
	"io"
	"runtime"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// WriteLayerTar is Linux-only: overlayfs whiteouts are Linux device nodes
// and xattrs.
func WriteLayerTar(ctx context.Context, w io.Writer, dir string) error {
	return sandbox.Errorf(sandbox.ErrUnsupported, "unsupported_os",
		"snapshot layers can only be exported on Linux, not %s", runtime.GOOS)
}
