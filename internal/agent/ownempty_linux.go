package agent

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// ownIfEmpty gives the directory dir to uid:gid if it holds nothing but a
// new ext4 filesystem's lost+found. It runs at start, before any command:
// dir is a mount the driver made, opened without following a symlink at
// it, and changed through that descriptor.
func ownIfEmpty(dir string, uid, gid int) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	f := os.NewFile(uintptr(fd), dir)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat %s: %w", dir, err)
	}
	if int(st.Uid) == uid && int(st.Gid) == gid {
		return nil
	}
	for {
		names, err := f.Readdirnames(16)
		for _, n := range names {
			if n != "lost+found" {
				return nil // in use: it keeps its owner
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", dir, err)
		}
	}
	if err := unix.Fchown(fd, uid, gid); err != nil {
		return fmt.Errorf("chown %s: %w", dir, err)
	}
	return nil
}
