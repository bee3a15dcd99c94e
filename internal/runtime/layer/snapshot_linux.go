package layer

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Snapshot is a driver's runtime.Snapshotter over the sandbox whose host
// dir is dir: it copies (never moves) the upper dir to dst with Copy, so
// the sandbox goes on running on it, mounting a stopped sandbox's disk
// read-only for the copy. freeze is the driver's way to stop the
// sandbox's writes for the copy, so the layer is one instant of its
// filesystem; it runs once the layer is known to exist and returns what
// undoes it, or nil when there is nothing to undo (a stopped sandbox, or
// a freeze that failed and leaves the copy live); its error ends the
// snapshot. The caller holds the sandbox's lock.
func Snapshot(ctx context.Context, id, dir, dst string, maxBytes int64, freeze func() (thaw func(), err error)) (int64, error) {
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return 0, sandbox.Errorf(sandbox.ErrNotFound, "not_found", "sandbox %s not found", id)
	}
	unmount, err := MountForRead(dir)
	if err != nil {
		return 0, fmt.Errorf("snapshot sandbox %s: %w", id, err)
	}
	defer unmount()
	upper := UpperDir(dir)
	if _, err := os.Lstat(upper); errors.Is(err, fs.ErrNotExist) {
		return 0, sandbox.Errorf(sandbox.ErrNotFound, "not_found", "sandbox %s not found", id)
	}
	thaw, err := freeze()
	if err != nil {
		return 0, err
	}
	if thaw != nil {
		defer thaw()
	}
	n, err := Copy(ctx, upper, dst, maxBytes)
	if err != nil {
		return 0, fmt.Errorf("snapshot sandbox %s: %w", id, err)
	}
	return n, nil
}
