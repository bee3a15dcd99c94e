package volume

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/diskimg"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// linuxSystem formats and mounts images with internal/diskimg.
type linuxSystem struct{}

func newSystem() system { return linuxSystem{} }

// Mkfs is the formatter's name; its absence is reported by Available.
const Mkfs = diskimg.Mkfs

// Available says why volumes cannot work on this host ("" when they can):
// they need root, mkfs.ext4 (Debian: e2fsprogs) and loop devices.
func Available() string { return diskimg.Available() }

// format makes the volume's image: ext4 with mkfs's inode density and a
// journal (a volume outlives a crash), labelled with the volume's name.
func (linuxSystem) format(ctx context.Context, image string, size int64, label string) error {
	err := diskimg.Format(ctx, image, size, diskimg.FormatOptions{Label: label})
	if errors.Is(err, diskimg.ErrNoMkfs) {
		return sandbox.Errorf(sandbox.ErrUnsupported, "volumes_unsupported", "volumes need %s (install e2fsprogs)", Mkfs)
	}
	return err
}

func (linuxSystem) mount(image, dir string) error { return diskimg.Mount(image, dir, false) }

func (linuxSystem) unmount(dir string) error { return diskimg.Unmount(dir) }

func (linuxSystem) mounted(dir string) (map[string]bool, error) { return diskimg.Mounted(dir) }

// allocated is what a file takes on disk.
func allocated(fi fs.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return fi.Size()
}

func owner(fi fs.FileInfo) (uid, gid int, ok bool) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid), int(st.Gid), true
	}
	return 0, 0, false
}

// openDirAt opens the directory name in parent without following a symlink
// at name (parent is a host path paddock made; name is one component).
func openDirAt(parent, name string) (*os.File, error) {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return nil, fmt.Errorf("open %q in %s: not one path component", name, parent)
	}
	p, err := os.OpenFile(parent, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	fd, err := unix.Openat(int(p.Fd()), name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: filepath.Join(parent, name), Err: err}
	}
	return os.NewFile(uintptr(fd), filepath.Join(parent, name)), nil
}

func (linuxSystem) emptyDir(parent, name string) (bool, error) {
	f, err := openDirAt(parent, name)
	if err != nil {
		return false, err
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if errors.Is(err, io.EOF) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return len(names) == 0, nil
}

func (linuxSystem) chownDir(parent, name string, uid, gid int) error {
	f, err := openDirAt(parent, name)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Chown(uid, gid) // fchown: the directory just opened, not a path
}
