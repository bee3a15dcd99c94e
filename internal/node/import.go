package node

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/paddock-dev/paddock/internal/atomicfile"
)

// importedSuffix names the record directory once its files are imported.
const importedSuffix = ".imported"

// importFileRecords moves the JSON records an older paddock kept under
// dir into to, then renames dir to dir+".imported" so that they are not
// imported again (a sandbox deleted later would come back). Running
// sandboxes of that paddock are thus re-adopted by reconcile as if their
// records had always been in to. A crash between the saves and the rename
// imports the same records again on the next start, which replaces them
// with themselves.
func importFileRecords(ctx context.Context, dir string, to Records) (int, error) {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	} else if err != nil {
		return 0, fmt.Errorf("node: import records: %w", err)
	}
	from := &fileStore{dir: dir}
	recs, err := from.LoadAll(ctx)
	if err != nil {
		return 0, fmt.Errorf("node: import records: %w", err)
	}
	for _, sb := range recs {
		if err := to.Save(ctx, sb); err != nil {
			return 0, fmt.Errorf("node: import record %s: %w", sb.ID, err)
		}
	}
	dst := dir + importedSuffix
	if _, err := os.Stat(dst); err == nil {
		// An earlier import's leftovers: keep both.
		dst += "-" + strconv.FormatInt(int64(os.Getpid()), 10) + "-" + strconv.Itoa(len(recs))
	}
	if err := os.Rename(dir, dst); err != nil {
		return 0, fmt.Errorf("node: import records: %w", err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(dir)); err != nil {
		return 0, err
	}
	return len(recs), nil
}
