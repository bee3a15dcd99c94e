package userns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Probe checks, in a scratch directory it makes (and removes) in dir, all
// that sandboxes with user namespaces need from this kernel and from dir's
// filesystem: a user namespace with a mapping from base, owned by base,
// idmapped mounts of dir's filesystem, and an overlay whose layers are
// such mounts, made as the range's root, that shows stored ids shifted and
// stores new files with container-relative ids. It takes a few
// milliseconds. The error says which step failed.
func Probe(dir string, base uint32) (err error) {
	tmp, err := os.MkdirTemp(dir, ".userns-probe-")
	if err != nil {
		return err
	}
	defer func() {
		if rerr := os.RemoveAll(tmp); rerr != nil && err == nil {
			err = rerr
		}
	}()
	ns, err := New(base)
	if err != nil {
		return fmt.Errorf("user namespaces: %w", err)
	}
	defer ns.Close()
	p := func(rel string) string { return filepath.Join(tmp, rel) }
	for _, d := range []string{"lower", "rw", "rw/upper", "rw/work", "merged"} {
		if err := os.Mkdir(p(d), 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(p("lower/f"), nil, 0o644); err != nil {
		return err
	}
	if err := os.Lchown(p("lower/f"), 1000, 1000); err != nil {
		return err
	}
	fsType := "the filesystem of " + dir
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) == nil {
		fsType = FSName(st.Type) + " (" + dir + ")"
	}
	// Idmapped mounts alone first, for a message that names the step.
	fd, err := Clone(p("lower"), ns)
	if err != nil {
		return fmt.Errorf("idmapped mounts on %s: %w", fsType, err)
	}
	unix.Close(fd)
	o := Overlay{Lowers: []string{p("lower")}, Upper: p("rw/upper"), Work: p("rw/work"), Flags: unix.MS_NODEV, Stage: p("stage")}
	if err := o.Mount(p("merged"), ns); err != nil {
		return fmt.Errorf("overlayfs over idmapped layers on %s: %w", fsType, err)
	}
	defer func() {
		if uerr := unix.Unmount(p("merged"), 0); uerr != nil && err == nil {
			err = uerr
		}
	}()
	if uid, err := owner(p("merged/f")); err != nil || uid != base+1000 {
		return fmt.Errorf("overlayfs over idmapped layers: a file stored as uid 1000 shows as %d (%v), want %d", uid, err, base+1000)
	}
	err = As(base+1000, func() error { return os.WriteFile(p("merged/g"), nil, 0o644) })
	if err != nil {
		return fmt.Errorf("overlayfs over idmapped layers: write: %w", err)
	}
	if uid, err := owner(p("rw/upper/g")); err != nil || uid != 1000 {
		return fmt.Errorf("overlayfs over idmapped layers: a file made by uid %d is stored as %d (%v), want 1000", base+1000, uid, err)
	}
	return nil
}

func owner(path string) (uint32, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, errors.New("no stat")
	}
	return st.Uid, nil
}

// FSName names a filesystem by its statfs magic, for messages.
func FSName(magic int64) string {
	switch magic {
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlay"
	case unix.NFS_SUPER_MAGIC:
		return "nfs"
	}
	return "filesystem 0x" + strconv.FormatInt(magic, 16)
}
