package runc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/opencontainers/runc/libcontainer"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

var _ runtime.Snapshotter = (*Driver)(nil)

// opaqueXattr marks an overlay directory that hides the lower layers' one.
const opaqueXattr = "trusted.overlay.opaque"

// Snapshot implements runtime.Snapshotter. It copies (never moves) the
// upper dir, so the sandbox goes on running on it. A running sandbox is
// frozen (cgroup freezer) for the copy, so the layer is one instant of its
// filesystem; a sandbox whose freeze fails is copied live, and a file
// written meanwhile may be torn.
func (d *Driver) Snapshot(ctx context.Context, id, dst string, maxBytes int64) (int64, error) {
	if err := checkID(id); err != nil {
		return 0, err
	}
	unlock := d.lock(id)
	defer unlock()
	upper := filepath.Join(d.hostDir(id), upperName)
	if _, err := os.Lstat(upper); errors.Is(err, fs.ErrNotExist) {
		return 0, sandbox.Errorf(sandbox.ErrNotFound, "not_found", "sandbox %s not found", id)
	}
	c, err := d.load(id)
	if err != nil {
		return 0, err
	}
	if c != nil {
		if st, err := c.Status(); err == nil && st == libcontainer.Running {
			if err := c.Pause(); err != nil {
				d.log.Warn("snapshot: freeze failed, copying a live sandbox", "sandbox", id, "err", err)
			} else {
				defer func() {
					if err := c.Resume(); err != nil {
						d.log.Error("snapshot: thaw", "sandbox", id, "err", err)
					}
				}()
			}
		}
	}
	n, err := copyLayer(ctx, upper, dst, maxBytes)
	if err != nil {
		return 0, fmt.Errorf("snapshot sandbox %s: %w", id, err)
	}
	return n, nil
}

// copier copies a hostile directory tree through file descriptors only:
// every entry is opened relative to its parent with O_NOFOLLOW, so no
// symlink (or a path component swapped for one) the sandbox made is ever
// followed on the host.
type copier struct {
	ctx      context.Context
	max, n   int64
	srcLabel string // for errors
}

// copyLayer copies src (an overlay upper dir) into dst in the overlay form
// a lowerdir needs, leaving out paddock's own files: the agent's mountpoint
// and state, and empty placeholders the driver made for its binds.
// Regular files, directories, symlinks, fifos and whiteouts (0/0 char
// devices) are copied with their mode, owner and times, and directories
// with their opaque xattr; sockets, other devices, hard-link sharing and
// other xattrs are not.
func copyLayer(ctx context.Context, src, dst string, maxBytes int64) (int64, error) {
	sfd, err := unix.Open(src, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", src, err)
	}
	defer unix.Close(sfd)
	dfd, err := unix.Open(dst, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", dst, err)
	}
	defer unix.Close(dfd)
	c := &copier{ctx: ctx, max: maxBytes, srcLabel: src}
	if err := c.dir(sfd, dfd, ""); err != nil {
		return 0, err
	}
	return c.n, nil
}

// skip reports paddock's own entries, which must not become image content.
func skip(rel string, st *unix.Stat_t) bool {
	switch rel {
	case agent.BinaryPath[1:], agent.StateDir[1:], ".paddock":
		return true
	case "etc/" + resolvConfName, "etc/" + hostsName:
		return st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size == 0
	}
	return false
}

func (c *copier) dir(sfd, dfd int, rel string) error {
	dup, err := unix.Dup(sfd)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(dup), c.srcLabel)
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return fmt.Errorf("read dir /%s: %w", rel, err)
	}
	for _, name := range names {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		if err := c.entry(sfd, dfd, name, path.Join(rel, name)); err != nil {
			return err
		}
	}
	return nil
}

func (c *copier) entry(sfd, dfd int, name, rel string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(sfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("lstat /%s: %w", rel, err)
	}
	if skip(rel, &st) {
		return nil
	}
	perm := st.Mode & 0o7777
	times := []unix.Timespec{st.Atim, st.Mtim}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if err := unix.Mkdirat(dfd, name, 0o700); err != nil {
			return fmt.Errorf("mkdir /%s: %w", rel, err)
		}
		csfd, err := unix.Openat(sfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open /%s: %w", rel, err)
		}
		defer unix.Close(csfd)
		cdfd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open copy of /%s: %w", rel, err)
		}
		defer unix.Close(cdfd)
		buf := make([]byte, 8)
		if n, err := unix.Fgetxattr(csfd, opaqueXattr, buf); err == nil {
			if err := unix.Fsetxattr(cdfd, opaqueXattr, buf[:n], 0); err != nil {
				return fmt.Errorf("opaque /%s: %w", rel, err)
			}
		}
		if err := c.dir(csfd, cdfd, rel); err != nil {
			return err
		}
		// Owner, then mode (chown clears set-id bits), then times, once
		// the children no longer change the directory.
		if err := unix.Fchown(cdfd, int(st.Uid), int(st.Gid)); err != nil {
			return fmt.Errorf("chown /%s: %w", rel, err)
		}
		if err := unix.Fchmod(cdfd, perm); err != nil {
			return fmt.Errorf("chmod /%s: %w", rel, err)
		}
		return unix.UtimesNanoAt(dfd, name, times, unix.AT_SYMLINK_NOFOLLOW)
	case unix.S_IFREG:
		return c.file(sfd, dfd, name, rel, &st)
	case unix.S_IFLNK:
		buf := make([]byte, unix.PathMax)
		n, err := unix.Readlinkat(sfd, name, buf)
		if err != nil {
			return fmt.Errorf("readlink /%s: %w", rel, err)
		}
		if err := unix.Symlinkat(string(buf[:n]), dfd, name); err != nil {
			return fmt.Errorf("symlink /%s: %w", rel, err)
		}
	case unix.S_IFCHR:
		if st.Rdev != 0 {
			return nil // a real device: sandboxes cannot make one, and a layer must not carry one
		}
		if err := unix.Mknodat(dfd, name, unix.S_IFCHR, 0); err != nil {
			return fmt.Errorf("whiteout /%s: %w", rel, err)
		}
	case unix.S_IFIFO:
		if err := unix.Mknodat(dfd, name, unix.S_IFIFO|0o600, 0); err != nil {
			return fmt.Errorf("mkfifo /%s: %w", rel, err)
		}
	default:
		return nil // sockets and block devices mean nothing in a layer
	}
	// Everything below is a node this copier just made in dst, which only
	// paddock writes: still never followed.
	if err := unix.Fchownat(dfd, name, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown /%s: %w", rel, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		if err := unix.Fchmodat(dfd, name, perm, 0); err != nil {
			return fmt.Errorf("chmod /%s: %w", rel, err)
		}
	}
	return unix.UtimesNanoAt(dfd, name, times, unix.AT_SYMLINK_NOFOLLOW)
}

// file copies a regular file, at most the size lstat saw. O_NONBLOCK keeps
// an entry swapped for a fifo since the lstat from blocking the open, and
// the fstat check refuses anything but the file seen.
func (c *copier) file(sfd, dfd int, name, rel string, st *unix.Stat_t) error {
	if c.max > 0 && c.n+st.Size > c.max {
		return sandbox.Errorf(sandbox.ErrTooLarge, "snapshot_too_large", "the sandbox's changes exceed the layer cap of %d bytes", c.max)
	}
	ifd, err := unix.Openat(sfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /%s: %w", rel, err)
	}
	in := os.NewFile(uintptr(ifd), rel)
	defer in.Close()
	var fst unix.Stat_t
	if err := unix.Fstat(ifd, &fst); err != nil {
		return fmt.Errorf("stat /%s: %w", rel, err)
	}
	if fst.Mode&unix.S_IFMT != unix.S_IFREG || fst.Ino != st.Ino || fst.Dev != st.Dev {
		return fmt.Errorf("/%s changed during the snapshot", rel)
	}
	ofd, err := unix.Openat(dfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create copy of /%s: %w", rel, err)
	}
	out := os.NewFile(uintptr(ofd), rel)
	defer out.Close()
	n, err := io.CopyN(out, in, st.Size)
	c.n += n
	if err != nil && !errors.Is(err, io.EOF) { // EOF: the file shrank; keep what there was
		return fmt.Errorf("copy /%s: %w", rel, err)
	}
	if err := out.Chown(int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("chown /%s: %w", rel, err)
	}
	if err := out.Chmod(fs.FileMode(st.Mode&0o777) | modeBits(st.Mode)); err != nil {
		return fmt.Errorf("chmod /%s: %w", rel, err)
	}
	if err := unix.Futimes(ofd, []unix.Timeval{unix.NsecToTimeval(unix.TimespecToNsec(st.Atim)), unix.NsecToTimeval(unix.TimespecToNsec(st.Mtim))}); err != nil {
		return fmt.Errorf("times /%s: %w", rel, err)
	}
	return out.Close()
}

// modeBits converts the set-id and sticky bits of a stat mode to fs.FileMode.
func modeBits(m uint32) fs.FileMode {
	var out fs.FileMode
	if m&unix.S_ISUID != 0 {
		out |= fs.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		out |= fs.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		out |= fs.ModeSticky
	}
	return out
}
