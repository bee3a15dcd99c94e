package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/crashpoint"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// A layer is hostile input. Everything is written through an os.Root opened
// on the layer's own temp directory, so no name can resolve outside it, and
// on top of that no entry may pass through a symlink at all: symlinks from a
// layer are stored, never followed on the host (they resolve inside the
// sandbox, against the sandbox's own root).
//
// Rejected (the layer, and the pull, fail with ErrInvalid "invalid_layer"):
//   - a name or hardlink target with a ".." component, or longer than
//     PATH_MAX (no process could open it by its path; and a name of a
//     million components would be a million directories);
//   - a name whose parent is a symlink or not a directory (link/passwd after
//     link -> /etc);
//   - a hardlink to anything but a regular file written earlier in the same
//     layer (hardlinks to a lower layer's files cannot be made: the layers
//     are separate directories);
//   - a stream that is not a tar archive or does not hash to its diff ID.
//
// Neutralised:
//   - absolute names and hardlink targets are taken relative to the layer
//     root, as Docker and containerd do (/etc/x is the image's /etc/x);
//   - character and block devices and fifos are skipped and logged: the
//     runtime gives the sandbox its own /dev, and a device node from a layer
//     could be a 0/0 char device forging an overlay whiteout;
//   - extended attributes are ignored, so a layer cannot set
//     trusted.overlay.* and forge overlay metadata (a cost: file capabilities
//     in security.capability are dropped too);
//   - unknown entry types are skipped and logged.
//
//   - setuid and setgid bits of files are dropped: layer directories sit on
//     the host, and a host user who reached a tenant's setuid-root file
//     there must not be able to run it (inside sandboxes no_new_privs ignores
//     those bits anyway).
//
// Kept: owners, modes (a directory's setgid and sticky bits included),
// symlink targets verbatim, file mtimes.
//
// Docker's whiteouts become overlayfs's own form, so the layer directories
// stack as lowerdirs: .wh.<name> becomes a 0/0 character device <name> (our
// own marker, made with mknod here, never copied from a layer) and
// .wh..wh..opq sets trusted.overlay.opaque=y on its directory.
//
// Size: the uncompressed stream and the sum of the declared file sizes are
// each capped at maxBytes (ErrTooLarge "layer_too_large"); the stream's size
// is returned as the layer's size.

const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
)

func invalidLayer(format string, args ...any) error {
	return sandbox.Errorf(sandbox.ErrInvalid, "invalid_layer", "invalid image layer: "+format, args...)
}

// cappedReader fails once more than max bytes went through it.
type cappedReader struct {
	r   io.Reader
	n   int64
	max int64
	// srcErr is the source's own failure (a download cut short), which
	// is no fault of the layer; nil while the source only ended cleanly.
	srcErr error
}

func (c *cappedReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n > c.max {
		return n, sandbox.Errorf(sandbox.ErrTooLarge, "layer_too_large", "image layer is larger than the %d-byte limit", c.max)
	}
	if err != nil && err != io.EOF && c.srcErr == nil {
		c.srcErr = err
	}
	return n, err
}

type unpacker struct {
	src  *cappedReader
	root *os.Root
	log  *slog.Logger
	// dirs are names already checked to be real directories (no symlink on
	// the way), cleared whenever anything is removed.
	dirs map[string]bool
}

// unpackLayer unpacks the uncompressed tar stream r into dir, which must be
// a new empty directory, and returns the stream's size.
func unpackLayer(ctx context.Context, dir string, r io.Reader, maxBytes int64, log *slog.Logger) (int64, error) {
	// MkdirTemp made it 0700; a tar entry for "./" may change it again.
	if err := os.Chmod(dir, 0o755); err != nil {
		return 0, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return 0, err
	}
	defer root.Close()
	cr := &cappedReader{r: r, max: maxBytes}
	tr := tar.NewReader(cr)
	u := &unpacker{src: cr, root: root, log: log, dirs: map[string]bool{".": true}}
	var declared int64
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		hdr, err := tr.Next()
		crashpoint.Hit("image/layer/entry")
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, u.streamError(err)
		}
		if hdr.Typeflag == tar.TypeReg {
			if hdr.Size < 0 {
				return 0, invalidLayer("%q has a negative size", hdr.Name)
			}
			// Sparse entries expand beyond the stream: cap what is written.
			if declared += hdr.Size; declared > maxBytes {
				return 0, sandbox.Errorf(sandbox.ErrTooLarge, "layer_too_large", "image layer is larger than the %d-byte limit", maxBytes)
			}
		}
		if err := u.entry(tr, hdr); err != nil {
			var se *sandbox.Error
			if errors.As(err, &se) {
				return 0, err
			}
			return 0, fmt.Errorf("%s: %w", hdr.Name, err)
		}
	}
	// Whatever follows the end of the archive still counts against the cap
	// and is part of what the diff ID hashes.
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return 0, u.streamError(err)
	}
	return cr.n, nil
}

// streamError keeps a size error's kind and makes any other tar error an
// invalid layer, unless it is the download failing. A stream that ends
// inside a tar block is the layer's fault when the source itself ended
// cleanly (archive/tar says io.ErrUnexpectedEOF either way).
func (u *unpacker) streamError(err error) error {
	var se *sandbox.Error
	if errors.As(err, &se) {
		return err
	}
	if errors.Is(err, tar.ErrHeader) || errors.Is(err, tar.ErrFieldTooLong) || errors.Is(err, tar.ErrInsecurePath) ||
		(errors.Is(err, io.ErrUnexpectedEOF) && u.src.srcErr == nil) {
		return fmt.Errorf("%w: %w", invalidLayer("not a valid tar stream"), err)
	}
	return err
}

// cleanName turns an archive name into a path relative to the layer root:
// "." for the root itself. Absolute names are neutralised, ".." rejected.
func cleanName(name string) (string, error) {
	if name == "" {
		return "", invalidLayer("empty name")
	}
	if strings.ContainsRune(name, 0) {
		return "", invalidLayer("name with a NUL byte")
	}
	if len(name) > unix.PathMax {
		return "", invalidLayer("a name of %d bytes, longer than PATH_MAX", len(name))
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", invalidLayer("%q leaves the layer", name)
		}
	}
	return path.Clean(strings.TrimLeft(name, "/")), nil
}

func (u *unpacker) entry(tr *tar.Reader, hdr *tar.Header) error {
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if hdr.Uid < 0 || hdr.Gid < 0 {
		return invalidLayer("%q has a negative owner", hdr.Name)
	}
	parent, base := path.Dir(name), path.Base(name)

	switch {
	case base == whiteoutOpaque:
		if err := u.ensureDir(parent); err != nil {
			return err
		}
		return u.withDir(parent, func(fd int) error {
			return unix.Fsetxattr(fd, "trusted.overlay.opaque", []byte("y"), 0)
		})
	case strings.HasPrefix(base, whiteoutMeta):
		// AUFS bookkeeping (.wh..wh.plnk...): meaningless to overlayfs.
		u.log.Debug("image layer: skipping whiteout metadata", "path", name)
		return nil
	case strings.HasPrefix(base, whiteoutPrefix):
		target := base[len(whiteoutPrefix):]
		if target == "" || target == "." {
			return invalidLayer("whiteout %q names nothing", hdr.Name)
		}
		if err := u.ensureDir(parent); err != nil {
			return err
		}
		if err := u.removeExisting(path.Join(parent, target)); err != nil {
			return err
		}
		return u.withDir(parent, func(fd int) error {
			return unix.Mknodat(fd, target, unix.S_IFCHR, int(unix.Mkdev(0, 0)))
		})
	}

	if name == "." {
		if hdr.Typeflag != tar.TypeDir {
			return invalidLayer("the layer root %q is not a directory", hdr.Name)
		}
		return u.setDir(".", hdr)
	}
	if err := u.ensureDir(parent); err != nil {
		return err
	}
	mode := hdr.FileInfo().Mode()

	switch hdr.Typeflag {
	case tar.TypeDir:
		fi, err := u.root.Lstat(name)
		switch {
		case err == nil && fi.IsDir():
			// A later entry for an existing directory only changes its
			// attributes: its contents (and opaque mark) stay.
		case err == nil:
			if err := u.removeExisting(name); err != nil {
				return err
			}
			fallthrough
		case errors.Is(err, fs.ErrNotExist):
			if err := u.root.Mkdir(name, 0o700); err != nil {
				return err
			}
		default:
			return err
		}
		u.dirs[name] = true
		return u.setDir(name, hdr)

	case tar.TypeReg:
		if err := u.removeExisting(name); err != nil {
			return err
		}
		// O_EXCL: the name was just cleared, so this creates a new file and
		// never opens through a symlink.
		f, err := u.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, tr); err != nil {
			f.Close()
			return u.streamError(err)
		}
		if err := f.Chown(hdr.Uid, hdr.Gid); err != nil {
			f.Close()
			return err
		}
		if err := f.Chmod(mode &^ (fs.ModeSetuid | fs.ModeSetgid)); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		return u.root.Chtimes(name, hdr.ModTime, hdr.ModTime)

	case tar.TypeSymlink:
		if len(hdr.Linkname) >= unix.PathMax {
			return invalidLayer("symlink %q: a target of %d bytes, longer than PATH_MAX", hdr.Name, len(hdr.Linkname))
		}
		if err := u.removeExisting(name); err != nil {
			return err
		}
		if err := u.root.Symlink(hdr.Linkname, name); err != nil {
			return err
		}
		return u.root.Lchown(name, hdr.Uid, hdr.Gid)

	case tar.TypeLink:
		target, err := cleanName(hdr.Linkname)
		if err != nil {
			return err
		}
		if target == name {
			return invalidLayer("hardlink %q to itself", hdr.Name)
		}
		// Its directories must be real ones from this layer: Lstat through
		// os.Root would still follow a symlink among them.
		dirErr := u.checkDirs(path.Dir(target))
		fi, err := u.root.Lstat(target)
		if dirErr != nil || err != nil || !fi.Mode().IsRegular() {
			return invalidLayer("hardlink %q to %q: not a regular file earlier in this layer", hdr.Name, hdr.Linkname)
		}
		if err := u.removeExisting(name); err != nil {
			return err
		}
		return u.root.Link(target, name)

	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		u.log.Info("image layer: skipping device node or fifo", "path", name, "type", string(hdr.Typeflag))
		return nil

	case tar.TypeXGlobalHeader:
		return nil

	default:
		u.log.Info("image layer: skipping entry of unknown type", "path", name, "type", string(hdr.Typeflag))
		return nil
	}
}

// setDir gives a directory the entry's owner and mode.
func (u *unpacker) setDir(name string, hdr *tar.Header) error {
	if err := u.root.Lchown(name, hdr.Uid, hdr.Gid); err != nil {
		return err
	}
	// name is a real directory (Lstat or Mkdir just said so), so Chmod's
	// following of a final symlink never applies.
	return u.root.Chmod(name, hdr.FileInfo().Mode())
}

// ensureDir makes dir and its parents exist as real directories, creating
// missing ones (root-owned, 0755: archives often omit parent entries) and
// refusing any component that is a symlink or a file.
func (u *unpacker) ensureDir(dir string) error {
	return u.walkDirs(dir, true)
}

// checkDirs is ensureDir without creating anything.
func (u *unpacker) checkDirs(dir string) error {
	return u.walkDirs(dir, false)
}

// walkDirs goes down dir one component at a time from a handle on the
// directory above, so a chain of n directories costs O(n) calls: os.Root
// resolves every name from the top, and checking each prefix by its full
// name cost O(n²), minutes for one entry a few thousand levels deep.
func (u *unpacker) walkDirs(dir string, create bool) error {
	if u.dirs[dir] {
		return nil
	}
	d := u.root
	defer func() {
		if d != u.root {
			d.Close()
		}
	}()
	p := ""
	for _, c := range strings.Split(dir, "/") {
		p = path.Join(p, c)
		if !u.dirs[p] {
			fi, err := d.Lstat(c)
			switch {
			case errors.Is(err, fs.ErrNotExist) && create:
				if err := d.Mkdir(c, 0o755); err != nil {
					return err
				}
				if err := d.Chmod(c, 0o755); err != nil { // past the umask
					return err
				}
			case err != nil:
				return invalidLayer("%q: %v", p, err)
			case fi.Mode()&fs.ModeSymlink != 0:
				return invalidLayer("%q goes through the symlink %q", dir, p)
			case !fi.IsDir():
				return invalidLayer("%q goes through the non-directory %q", dir, p)
			}
			u.dirs[p] = true
		}
		// A real directory (checked above, and the layer dir is paddock's
		// own), so opening it follows nothing.
		next, err := d.OpenRoot(c)
		if err != nil {
			return err
		}
		if d != u.root {
			d.Close()
		}
		d = next
	}
	return nil
}

// removeExisting clears name so a later entry replaces an earlier one, as
// in any tar extraction.
func (u *unpacker) removeExisting(name string) error {
	fi, err := u.root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	if fi.IsDir() {
		u.dirs = map[string]bool{".": true}
		return u.root.RemoveAll(name)
	}
	return u.root.Remove(name)
}

// withDir runs fn on an fd of the (checked, symlink-free) directory dir, for
// the calls os.Root does not offer.
func (u *unpacker) withDir(dir string, fn func(fd int) error) error {
	f, err := u.root.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	conn, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var opErr error
	if err := conn.Control(func(fd uintptr) { opErr = fn(int(fd)) }); err != nil {
		return err
	}
	return opErr
}
