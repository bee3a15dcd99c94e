//go:build !linux

package image

import (
	"context"
	"io"
	"log/slog"
	"runtime"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// unpackLayer is Linux-only: overlayfs whiteouts are Linux device nodes and
// xattrs.
func unpackLayer(ctx context.Context, dir string, r io.Reader, maxBytes int64, log *slog.Logger) (int64, error) {
	return 0, sandbox.Errorf(sandbox.ErrUnsupported, "unsupported_os",
		"image layers can only be unpacked on Linux, not %s", runtime.GOOS)
}
