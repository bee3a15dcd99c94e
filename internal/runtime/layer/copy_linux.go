package layer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/crashpoint"
	"github.com/paddock-dev/paddock/internal/runtime/ocispec"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// OpaqueXattr marks an overlay directory that hides the lower layers' one.
const OpaqueXattr = "trusted.overlay.opaque"

// copyCrashpoint is the crash tests' point at each entry a copy makes
// (internal/crashpoint). It keeps the name it had when the copy was the
// runc driver's alone, which the crash tests arm.
const copyCrashpoint = "runc/snapshot/entry"

// Bounds of one snapshot copy besides its byte cap. A sandbox makes its
// upper dir any shape it likes: the copy holds two descriptors per level
// and one record per entry, so both are capped, well past what real trees
// (node_modules included) need.
const (
	maxCopyDepth   = 512
	maxCopyEntries = 1 << 20
)

// copier copies a hostile directory tree through file descriptors only:
// every entry is opened relative to its parent with O_NOFOLLOW, so no
// symlink (or a path component swapped for one) the sandbox made is ever
// followed on the host. It walks with an explicit stack, never recursion,
// reading each directory in batches.
type copier struct {
	ctx      context.Context
	max, n   int64
	entries  int
	srcLabel string // for errors
	buf      []byte // file copy buffer, reused
}

// dirFrame is a directory being copied: its source (read in batches) and
// copy, and what to apply to the copy once its children are done.
type dirFrame struct {
	src   *os.File // the source directory, for Readdirnames; owns its fd
	sfd   int      // src's descriptor
	dfd   int      // the copy's descriptor
	pdfd  int      // the copy's parent's descriptor (-1 for the root)
	name  string   // the copy's name in its parent
	rel   string   // path below the layer root, for errors and skip
	st    unix.Stat_t
	names []string // names read but not yet copied
	eof   bool
}

func (f *dirFrame) close() {
	f.src.Close()
	unix.Close(f.dfd)
}

// Copy copies src (an overlay upper dir) into dst in the overlay form
// a lowerdir needs, leaving out paddock's own files: the agent's mountpoint
// and state, and empty placeholders the driver made for its binds.
// Regular files (holes kept, set-id bits dropped), directories, symlinks,
// fifos and whiteouts (0/0 char devices) are copied with their mode, owner
// and times, and directories with their opaque xattr; sockets, other
// devices, hard-link sharing and other xattrs are not.
func Copy(ctx context.Context, src, dst string, maxBytes int64) (int64, error) {
	sfd, err := unix.Open(src, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", src, err)
	}
	dfd, err := unix.Open(dst, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(sfd)
		return 0, fmt.Errorf("open %s: %w", dst, err)
	}
	c := &copier{ctx: ctx, max: maxBytes, srcLabel: src}
	root := &dirFrame{src: os.NewFile(uintptr(sfd), src), sfd: sfd, dfd: dfd, pdfd: -1}
	if err := c.walk(root); err != nil {
		return 0, err
	}
	return c.n, nil
}

// walk copies the tree below root, depth first, with at most maxCopyDepth
// directories open.
func (c *copier) walk(root *dirFrame) error {
	stack := []*dirFrame{root}
	defer func() {
		for _, f := range stack {
			f.close()
		}
	}()
	for len(stack) > 0 {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		top := stack[len(stack)-1]
		if len(top.names) == 0 && !top.eof {
			names, err := top.src.Readdirnames(256)
			if err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("read dir /%s: %w", top.rel, err)
			}
			top.names, top.eof = names, len(names) == 0
			continue
		}
		if len(top.names) == 0 {
			// Every child is copied: the directory's own metadata last.
			stack = stack[:len(stack)-1]
			err := c.finishDir(top)
			top.close()
			if err != nil {
				return err
			}
			continue
		}
		name := top.names[0]
		top.names = top.names[1:]
		if c.entries++; c.entries > maxCopyEntries {
			return sandbox.Errorf(sandbox.ErrTooLarge, "snapshot_too_large", "the sandbox's changes hold more than %d files", maxCopyEntries)
		}
		child, err := c.entry(top, name, path.Join(top.rel, name))
		crashpoint.Hit(copyCrashpoint)
		if err != nil {
			return err
		}
		if child != nil {
			if len(stack) >= maxCopyDepth {
				child.close()
				return sandbox.Errorf(sandbox.ErrTooLarge, "snapshot_too_large", "the sandbox's changes nest directories deeper than %d levels", maxCopyDepth)
			}
			stack = append(stack, child)
		}
	}
	return nil
}

// skip reports paddock's own entries, which must not become image content.
func skip(rel string, st *unix.Stat_t) bool {
	switch rel {
	case agent.BinaryPath[1:], agent.StateDir[1:], ".paddock":
		return true
	case "etc/" + ocispec.ResolvConfName, "etc/" + ocispec.HostsName:
		return st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size == 0
	}
	return false
}

// finishDir gives a copied directory its owner, then mode (chown clears
// set-id bits), then times, once its children no longer change it. The
// layer root keeps the mode the store gave it.
func (c *copier) finishDir(f *dirFrame) error {
	if f.pdfd < 0 {
		return nil
	}
	if err := unix.Fchown(f.dfd, int(f.st.Uid), int(f.st.Gid)); err != nil {
		return fmt.Errorf("chown /%s: %w", f.rel, err)
	}
	if err := unix.Fchmod(f.dfd, f.st.Mode&0o7777); err != nil {
		return fmt.Errorf("chmod /%s: %w", f.rel, err)
	}
	times := []unix.Timespec{f.st.Atim, f.st.Mtim}
	return unix.UtimesNanoAt(f.pdfd, f.name, times, unix.AT_SYMLINK_NOFOLLOW)
}

// entry copies one entry of the directory p. For a directory it makes the
// copy and returns its frame, whose children the walk copies next.
func (c *copier) entry(p *dirFrame, name, rel string) (*dirFrame, error) {
	sfd, dfd := p.sfd, p.dfd
	var st unix.Stat_t
	if err := unix.Fstatat(sfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, fmt.Errorf("lstat /%s: %w", rel, err)
	}
	if skip(rel, &st) {
		return nil, nil
	}
	perm := st.Mode & 0o7777
	times := []unix.Timespec{st.Atim, st.Mtim}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if err := unix.Mkdirat(dfd, name, 0o700); err != nil {
			return nil, fmt.Errorf("mkdir /%s: %w", rel, err)
		}
		csfd, err := unix.Openat(sfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("open /%s: %w", rel, err)
		}
		cdfd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			unix.Close(csfd)
			return nil, fmt.Errorf("open copy of /%s: %w", rel, err)
		}
		child := &dirFrame{src: os.NewFile(uintptr(csfd), rel), sfd: csfd, dfd: cdfd, pdfd: dfd, name: name, rel: rel, st: st}
		buf := make([]byte, 8)
		if n, err := unix.Fgetxattr(csfd, OpaqueXattr, buf); err == nil {
			if err := unix.Fsetxattr(cdfd, OpaqueXattr, buf[:n], 0); err != nil {
				child.close()
				return nil, fmt.Errorf("opaque /%s: %w", rel, err)
			}
		}
		return child, nil
	case unix.S_IFREG:
		return nil, c.file(sfd, dfd, name, rel, &st)
	case unix.S_IFLNK:
		buf := make([]byte, unix.PathMax)
		n, err := unix.Readlinkat(sfd, name, buf)
		if err != nil {
			return nil, fmt.Errorf("readlink /%s: %w", rel, err)
		}
		if err := unix.Symlinkat(string(buf[:n]), dfd, name); err != nil {
			return nil, fmt.Errorf("symlink /%s: %w", rel, err)
		}
	case unix.S_IFCHR:
		if st.Rdev != 0 {
			return nil, nil // a real device: sandboxes cannot make one, and a layer must not carry one
		}
		if err := unix.Mknodat(dfd, name, unix.S_IFCHR, 0); err != nil {
			return nil, fmt.Errorf("whiteout /%s: %w", rel, err)
		}
	case unix.S_IFIFO:
		if err := unix.Mknodat(dfd, name, unix.S_IFIFO|0o600, 0); err != nil {
			return nil, fmt.Errorf("mkfifo /%s: %w", rel, err)
		}
		perm &^= unix.S_ISUID | unix.S_ISGID
	default:
		return nil, nil // sockets and block devices mean nothing in a layer
	}
	// Everything below is a node this copier just made in dst, which only
	// paddock writes: still never followed.
	if err := unix.Fchownat(dfd, name, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, fmt.Errorf("chown /%s: %w", rel, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		if err := unix.Fchmodat(dfd, name, perm, 0); err != nil {
			return nil, fmt.Errorf("chmod /%s: %w", rel, err)
		}
	}
	return nil, unix.UtimesNanoAt(dfd, name, times, unix.AT_SYMLINK_NOFOLLOW)
}

// file copies a regular file, at most the size lstat saw, keeping its
// holes: only the data extents are read and written (SEEK_DATA/SEEK_HOLE),
// and only they count against the cap, so a sparse 8 GiB file costs the
// layer what it costs the sandbox. Set-id bits are dropped: a layer sits
// in a host directory, and a host user who found a tenant's setuid-root
// file there must not run it (inside sandboxes no_new_privs ignores them
// anyway). O_NONBLOCK keeps an entry swapped for a fifo since the lstat
// from blocking the open, and the fstat check refuses anything but the
// file seen.
func (c *copier) file(sfd, dfd int, name, rel string, st *unix.Stat_t) error {
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
	if err := c.copyData(in, out, st.Size); err != nil {
		return fmt.Errorf("copy /%s: %w", rel, err)
	}
	if err := out.Chown(int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("chown /%s: %w", rel, err)
	}
	if err := out.Chmod(fs.FileMode(st.Mode&0o777) | modeBits(st.Mode&^(unix.S_ISUID|unix.S_ISGID))); err != nil {
		return fmt.Errorf("chmod /%s: %w", rel, err)
	}
	if err := unix.Futimes(ofd, []unix.Timeval{unix.NsecToTimeval(unix.TimespecToNsec(st.Atim)), unix.NsecToTimeval(unix.TimespecToNsec(st.Mtim))}); err != nil {
		return fmt.Errorf("times /%s: %w", rel, err)
	}
	return out.Close()
}

// copyData copies the data extents of in's first size bytes into out at
// the same offsets and sizes out to size, so holes stay holes. A file that
// shrank meanwhile keeps what there was.
func (c *copier) copyData(in, out *os.File, size int64) error {
	if c.buf == nil {
		c.buf = make([]byte, 1<<20)
	}
	for off := int64(0); off < size; {
		data, err := unix.Seek(int(in.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			return err
		}
		if data >= size {
			break
		}
		hole, err := unix.Seek(int(in.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		end := min(hole, size)
		if c.max > 0 && c.n+(end-data) > c.max {
			return sandbox.Errorf(sandbox.ErrTooLarge, "snapshot_too_large", "the sandbox's changes exceed the layer cap of %d bytes", c.max)
		}
		n, err := io.CopyBuffer(io.NewOffsetWriter(out, data), io.NewSectionReader(in, data, end-data), c.buf)
		c.n += n
		if err != nil {
			return err
		}
		if n < end-data {
			break // the file shrank
		}
		off = end
	}
	return out.Truncate(size)
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
