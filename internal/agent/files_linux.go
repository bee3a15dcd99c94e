//go:build linux

package agent

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

func invalidPath(format string, args ...any) error {
	return sandbox.Errorf(sandbox.ErrInvalid, "invalid_path", format, args...)
}

// relPath turns an absolute, clean request path into a name inside
// s.root. Anything else is refused before it touches the filesystem.
func relPath(p string) (string, error) {
	if p == "" || strings.ContainsRune(p, 0) {
		return "", invalidPath("path %q is empty or contains NUL", p)
	}
	if !path.IsAbs(p) || path.Clean(p) != p {
		return "", invalidPath("path %q must be absolute and clean", p)
	}
	if p == "/" {
		return ".", nil
	}
	return p[1:], nil
}

// ownerFor is who owns what a request creates: root with sudo, else the
// sandbox's user.
func (s *Server) ownerFor(sudo bool) (uid, gid int) {
	if sudo {
		return 0, 0
	}
	return int(s.user.UID), int(s.user.GID)
}

// mkdirAll is mkdir -p inside root: each created directory gets mode and
// the owner; existing directories are left alone.
func mkdirAll(root *os.Root, name string, mode os.FileMode, uid, gid int) error {
	if name == "." {
		return nil
	}
	parts := strings.Split(name, "/")
	for i := range parts {
		sub := strings.Join(parts[:i+1], "/")
		err := root.Mkdir(sub, mode)
		switch {
		case err == nil:
			if err := root.Lchown(sub, uid, gid); err != nil {
				return fmt.Errorf("chown %s: %w", sub, err)
			}
			// Mkdir is subject to the umask; the caller asked for mode.
			if err := root.Chmod(sub, mode); err != nil {
				return fmt.Errorf("chmod %s: %w", sub, err)
			}
		case errors.Is(err, fs.ErrExist):
			fi, serr := root.Stat(sub)
			if serr != nil {
				return fsError(sub, serr)
			}
			if !fi.IsDir() {
				return sandbox.Errorf(sandbox.ErrConflict, "not_a_directory", "/%s exists and is not a directory", sub)
			}
		default:
			return fsError(sub, err)
		}
	}
	return nil
}

// mkdirForUser is mkdir -p done by root for the sandbox's user: each
// component is opened with RESOLVE_NO_SYMLINKS from the one before, so no
// symlink anywhere on the path is followed, and the directories it creates
// are given to the user. Existing ones are left as they are.
func (s *Server) mkdirForUser(name string, mode os.FileMode) error {
	if err := s.usable(); err != nil {
		return err
	}
	top, err := s.root.Open(".")
	if err != nil {
		return fsError(".", err)
	}
	opened := []*os.File{top} // closed at return
	defer func() {
		for _, f := range opened {
			f.Close()
		}
	}()
	if name == "." {
		return nil
	}
	cur := top
	parts := strings.Split(name, "/")
	for i, part := range parts {
		sub := strings.Join(parts[:i+1], "/")
		created := true
		if err := unix.Mkdirat(int(cur.Fd()), part, 0o700); err != nil {
			if !errors.Is(err, unix.EEXIST) {
				return fsError(sub, err)
			}
			created = false
		}
		how := unix.OpenHow{
			Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		}
		fd, err := unix.Openat2(int(cur.Fd()), part, &how)
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			// O_NOFOLLOW with O_DIRECTORY reports a symlink as ENOTDIR.
			var st unix.Stat_t
			if unix.Fstatat(int(cur.Fd()), part, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
				return invalidPath("/%s is a symlink", sub)
			}
			return sandbox.Errorf(sandbox.ErrConflict, "not_a_directory", "/%s exists and is not a directory", sub)
		}
		if err != nil {
			return fsError(sub, err)
		}
		cur = os.NewFile(uintptr(fd), "/"+sub)
		opened = append(opened, cur)
		if created {
			// chown before chmod: chown clears setgid.
			if err := unix.Fchown(fd, int(s.user.UID), int(s.user.GID)); err != nil {
				return fsError(sub, err)
			}
			if err := cur.Chmod(mode); err != nil {
				return fsError(sub, err)
			}
		}
	}
	return nil
}

// fsError maps a filesystem error on name to an API error. os.Root's
// refusals (escapes, absolute symlinks) all land on invalid_path.
func fsError(name string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return sandbox.Errorf(sandbox.ErrNotFound, "file_not_found", "/%s: not found", name)
	case errors.Is(err, syscall.ENOTDIR):
		return sandbox.Errorf(sandbox.ErrConflict, "not_a_directory", "/%s: a path component is not a directory", name)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return sandbox.Errorf(sandbox.ErrExhausted, "no_space", "/%s: %v", name, err)
	case errors.Is(err, fs.ErrPermission):
		return sandbox.Errorf(sandbox.ErrForbidden, "permission_denied", "/%s: %v", name, err)
	default:
		return invalidPath("/%s: %v", name, err)
	}
}

func (s *Server) handleMkdir(w http.ResponseWriter, r *http.Request) {
	var req MkdirRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
		s.writeError(w, r, invalidPath("decode mkdir request: %v", err))
		return
	}
	name, err := relPath(req.Path)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	mode := os.FileMode(0o755)
	if req.Mode != 0 {
		if req.Mode&^0o7777 != 0 {
			s.writeError(w, r, sandbox.Errorf(sandbox.ErrInvalid, "invalid_mode", "mode %o has bits beyond 07777", req.Mode))
			return
		}
		// What the user will own carries no setuid or setgid bit.
		mode = unixMode(req.Mode, req.Sudo && !req.ForUser)
	}
	if err := s.usable(); err != nil {
		s.writeError(w, r, err)
		return
	}
	uid, gid := s.ownerFor(req.Sudo)
	switch {
	case req.ForUser && !req.Sudo:
		err = sandbox.Errorf(sandbox.ErrInvalid, "invalid_mkdir", "forUser needs sudo")
	case req.ForUser:
		err = s.mkdirForUser(name, mode)
	default:
		err = s.as(req.Sudo, func() error { return mkdirAll(s.root, name, mode, uid, gid) })
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// unixMode converts permission plus special bits (as in tar and the API)
// to an os.FileMode. Only sudo writes keep setuid/setgid: files the agent
// (root) creates for the user must not carry privileges the user could not
// have set up alone.
func unixMode(m uint32, sudo bool) os.FileMode {
	mode := os.FileMode(m & 0o777)
	if m&0o4000 != 0 && sudo {
		mode |= os.ModeSetuid
	}
	if m&0o2000 != 0 && sudo {
		mode |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= os.ModeSticky
	}
	return mode
}

// openInRoot opens name for reading the way a process in the sandbox would:
// symlinks, absolute ones included, are followed but resolved inside the
// root (RESOLVE_IN_ROOT), so a read never leaves it; magic links such as
// /proc/self/root are refused. Writes use os.Root, which is stricter.
func (s *Server) openInRoot(name string) (*os.File, error) {
	// O_NONBLOCK so a FIFO cannot hang the open; regular files ignore it.
	return s.resolveInRoot(name, unix.O_RDONLY|unix.O_NONBLOCK)
}

// resolveInRoot opens name with flags (O_CLOEXEC added), resolved the way
// openInRoot describes: inside the root, magic links refused.
func (s *Server) resolveInRoot(name string, flags uint64) (*os.File, error) {
	dir, err := s.root.Open(".")
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	how := unix.OpenHow{
		Flags:   flags | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	fd, err := unix.Openat2(int(dir.Fd()), name, &how)
	if err != nil {
		if err == unix.ELOOP {
			return nil, invalidPath("/%s: resolves through a magic link or too many symlinks", name)
		}
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	return os.NewFile(uintptr(fd), "/"+name), nil
}

// openAs opens name for reading (see openInRoot) as root with sudo, else
// as the sandbox's user. Only the open needs the identity: the kernel
// checks access there, and reads of the open file do not look again.
func (s *Server) openAs(sudo bool, name string) (*os.File, error) {
	var f *os.File
	err := s.as(sudo, func() error {
		var err error
		f, err = s.openInRoot(name)
		if err != nil {
			return fsError(name, err)
		}
		return nil
	})
	return f, err
}

// sudoQuery reads a request's ?sudo=.
func sudoQuery(r *http.Request) (bool, error) {
	v := r.URL.Query().Get("sudo")
	if v == "" {
		return false, nil
	}
	sudo, err := strconv.ParseBool(v)
	if err != nil {
		return false, sandbox.Errorf(sandbox.ErrInvalid, "invalid_sudo", "sudo %q is not a boolean", v)
	}
	return sudo, nil
}

// pathAndSudo reads the request's path from the query parameter key (see
// relPath) and its sudo flag (see sudoQuery), in that order.
func pathAndSudo(r *http.Request, key string) (string, bool, error) {
	name, err := relPath(r.URL.Query().Get(key))
	if err != nil {
		return "", false, err
	}
	sudo, err := sudoQuery(r)
	if err != nil {
		return "", false, err
	}
	return name, sudo, nil
}

func (s *Server) handleReadFile(w http.ResponseWriter, r *http.Request) {
	name, sudo, err := pathAndSudo(r, "path")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	f, err := s.openAs(sudo, name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		s.writeError(w, r, fsError(name, err))
		return
	}
	if fi.IsDir() {
		s.writeError(w, r, sandbox.Errorf(sandbox.ErrInvalid, "is_a_directory", "/%s is a directory", name))
		return
	}
	if !fi.Mode().IsRegular() {
		s.writeError(w, r, sandbox.Errorf(sandbox.ErrInvalid, "not_a_regular_file", "/%s is not a regular file", name))
		return
	}
	var mode uint32
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		mode = st.Mode & 0o7777
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set(HeaderFileMode, strconv.FormatUint(uint64(mode), 8))
	size := fi.Size()
	if size == 0 {
		// procfs and sysfs report 0 for files with content: stream
		// to EOF without a length.
		w.WriteHeader(http.StatusOK)
		_, _ = io.Copy(w, f)
		return
	}
	// Send exactly the size we announced even if the file changes.
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.WriteHeader(http.StatusOK)
	_, _ = io.CopyN(w, f, size)
}

var errTooLarge = sandbox.Errorf(sandbox.ErrTooLarge, "too_large", "the tar stream exceeds the agent's write limit")

// capReader fails once more than n bytes were read; it bounds the
// decompressed stream, so a gzip bomb is cut off too. Like
// http.MaxBytesReader it never hands out a byte past the cap, so what is
// written stays within it.
type capReader struct {
	r io.Reader
	n int64 // bytes still allowed
}

func (c *capReader) Read(p []byte) (int, error) {
	if int64(len(p)) > c.n+1 {
		p = p[:c.n+1] // one more than allowed tells the cap from EOF
	}
	n, err := c.r.Read(p)
	if int64(n) <= c.n {
		c.n -= int64(n)
		return n, err
	}
	n, c.n = int(c.n), 0
	return n, errTooLarge
}

func (s *Server) handleWriteTar(w http.ResponseWriter, r *http.Request) {
	dir, sudo, err := pathAndSudo(r, "dir")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var res WriteResult
	err = s.as(sudo, func() error {
		var err error
		res, err = s.writeTar(r.Body, dir, sudo)
		return err
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// writeTar unpacks body into dir. Run it through s.as: without sudo the
// user's identity decides what it may create and replace.
func (s *Server) writeTar(body io.Reader, dir string, sudo bool) (WriteResult, error) {
	var res WriteResult
	if err := s.usable(); err != nil {
		return res, err
	}
	uid, gid := s.ownerFor(sudo)
	if err := mkdirAll(s.root, dir, 0o755, uid, gid); err != nil {
		return res, err
	}
	d, err := s.root.OpenRoot(dir)
	if err != nil {
		return res, fsError(dir, err)
	}
	defer d.Close()

	br := bufio.NewReaderSize(body, 64<<10)
	var in io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return res, sandbox.Errorf(sandbox.ErrInvalid, "invalid_tar", "gzip: %v", err)
		}
		defer zr.Close()
		in = zr
	}
	tr := tar.NewReader(&capReader{r: in, n: s.cfg.MaxWriteBytes})
	x := &extractor{d: d, dir: dir, sudo: sudo, uid: uid, gid: gid, files: map[string]bool{}}
	var declared int64
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if errors.Is(err, errTooLarge) {
				return res, errTooLarge
			}
			return res, sandbox.Errorf(sandbox.ErrInvalid, "invalid_tar", "read tar: %v", err)
		}
		// A sparse entry expands to its declared size, past what the
		// stream carries: the cap holds for what is written too.
		if hdr.Typeflag == tar.TypeReg {
			if declared += hdr.Size; declared > s.cfg.MaxWriteBytes {
				return res, errTooLarge
			}
		}
		n, err := x.entry(hdr, tr)
		res.Bytes += n
		if err != nil {
			return res, err
		}
		if hdr.Typeflag != tar.TypeDir && hdr.Typeflag != tar.TypeXGlobalHeader {
			res.Files++
		}
	}
	// Directory mtimes last, deepest first: creating entries in them
	// changed their mtimes.
	for _, dm := range slices.Backward(x.dirTimes) {
		_ = d.Chtimes(dm.name, dm.mtime, dm.mtime)
	}
	return res, nil
}

// extractor writes entries of one tar stream beneath d.
type extractor struct {
	d        *os.Root
	dir      string
	sudo     bool
	uid, gid int
	files    map[string]bool // regular files extracted so far, for hardlinks
	dirTimes []dirTime
}

type dirTime struct {
	name  string
	mtime time.Time
}

// entryName validates a name from the archive and returns it cleaned and
// relative to d. Every archive name is hostile until proven otherwise.
func entryName(name string) (string, error) {
	if strings.ContainsRune(name, 0) {
		return "", invalidPath("tar entry name contains NUL")
	}
	if strings.HasPrefix(name, "/") {
		return "", invalidPath("tar entry %q is absolute", name)
	}
	if slices.Contains(strings.Split(name, "/"), "..") {
		return "", invalidPath("tar entry %q contains ..", name)
	}
	// No process opens a longer path, and each component of a name costs
	// directory walks (a 1 MiB name would be half a million levels).
	if len(name) > unix.PathMax {
		return "", invalidPath("tar entry of %d bytes: longer than PATH_MAX", len(name))
	}
	return path.Clean(name), nil
}

func (x *extractor) entry(hdr *tar.Header, r io.Reader) (int64, error) {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return 0, nil
	}
	name, err := entryName(hdr.Name)
	if err != nil {
		return 0, err
	}
	switch hdr.Typeflag {
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return 0, sandbox.Errorf(sandbox.ErrInvalid, "unsupported_entry", "tar entry %q: device nodes and fifos are not allowed", hdr.Name)
	case tar.TypeDir:
		if name == "." {
			return 0, nil
		}
		mode := unixMode(uint32(hdr.Mode), x.sudo)
		if err := mkdirAll(x.d, name, mode, x.uid, x.gid); err != nil {
			return 0, err
		}
		// An existing directory takes the archive's mode too, as tar does.
		if err := x.d.Chmod(name, mode); err != nil {
			return 0, fsError(path.Join(x.dir, name), err)
		}
		x.dirTimes = append(x.dirTimes, dirTime{name, hdr.ModTime})
		return 0, nil
	case tar.TypeReg, tar.TypeRegA, tar.TypeSymlink, tar.TypeLink:
	default:
		return 0, sandbox.Errorf(sandbox.ErrInvalid, "unsupported_entry", "tar entry %q has unsupported type %q", hdr.Name, hdr.Typeflag)
	}
	if name == "." {
		return 0, invalidPath("tar entry %q names the target directory", hdr.Name)
	}
	if parent := path.Dir(name); parent != "." {
		if err := mkdirAll(x.d, parent, 0o755, x.uid, x.gid); err != nil {
			return 0, err
		}
	}
	if err := x.clear(name); err != nil {
		return 0, err
	}
	full := path.Join(x.dir, name)
	switch hdr.Typeflag {
	case tar.TypeSymlink:
		if err := x.checkSymlink(name, hdr.Linkname); err != nil {
			return 0, err
		}
		if err := x.d.Symlink(hdr.Linkname, name); err != nil {
			return 0, fsError(full, err)
		}
		if err := x.d.Lchown(name, x.uid, x.gid); err != nil {
			return 0, fsError(full, err)
		}
		return 0, nil
	case tar.TypeLink:
		target, err := entryName(hdr.Linkname)
		if err != nil {
			return 0, err
		}
		if !x.files[target] {
			return 0, invalidPath("tar hardlink %q points to %q, not extracted before it", hdr.Name, hdr.Linkname)
		}
		if err := x.d.Link(target, name); err != nil {
			return 0, fsError(full, err)
		}
		return 0, nil
	}
	return x.regular(hdr, name, r)
}

// clear removes a non-directory at name, like tar's unlink-first: writing
// through an existing symlink would surprise, and a hardlink shared with
// another file would change both.
func (x *extractor) clear(name string) error {
	fi, err := x.d.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fsError(path.Join(x.dir, name), err)
	}
	if fi.IsDir() {
		return sandbox.Errorf(sandbox.ErrConflict, "is_a_directory", "/%s is a directory", path.Join(x.dir, name))
	}
	if err := x.d.Remove(name); err != nil {
		return fsError(path.Join(x.dir, name), err)
	}
	return nil
}

// checkSymlink refuses links that point outside the target directory. The
// target is resolved lexically from the link's directory, so that directory
// must itself be a real path (no symlinks in it), else the lexical answer
// could differ from the kernel's; and ".." may only lead the target: in
// "b/.." it climbs from wherever the link b points ("." makes it the
// target directory's parent), not from b.
func (x *extractor) checkSymlink(name, target string) error {
	if target == "" || strings.ContainsRune(target, 0) || path.IsAbs(target) {
		return invalidPath("tar symlink %q: target %q must be relative", name, target)
	}
	climbing := true
	for _, part := range strings.Split(target, "/") {
		switch {
		case part == "..":
			if !climbing {
				return invalidPath("tar symlink %q: target %q has .. after a name", name, target)
			}
		case part != "" && part != ".":
			climbing = false
		}
	}
	resolved := path.Join(path.Dir(name), target)
	if resolved == ".." || strings.HasPrefix(resolved, "../") {
		return invalidPath("tar symlink %q: target %q leaves the directory", name, target)
	}
	parts := strings.Split(path.Dir(name), "/")
	for i := range parts {
		if parts[0] == "." {
			break
		}
		sub := strings.Join(parts[:i+1], "/")
		fi, err := x.d.Lstat(sub)
		if err != nil {
			return fsError(path.Join(x.dir, sub), err)
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			return invalidPath("tar symlink %q: its directory %q is a symlink", name, sub)
		}
	}
	return nil
}

func (x *extractor) regular(hdr *tar.Header, name string, r io.Reader) (int64, error) {
	full := path.Join(x.dir, name)
	// O_NOFOLLOW: clear removed any file here; a symlink raced in since
	// must not redirect the write.
	f, err := x.d.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return 0, fsError(full, err)
	}
	// The writer's before any byte: a write cut short (too large, a
	// broken stream) must not leave a root-owned file in the user's tree.
	if err := f.Chown(x.uid, x.gid); err != nil {
		f.Close()
		return 0, fsError(full, err)
	}
	n, err := io.Copy(f, r)
	if err != nil {
		f.Close()
		if errors.Is(err, errTooLarge) {
			return n, errTooLarge
		}
		if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
			return n, fsError(full, err)
		}
		return n, sandbox.Errorf(sandbox.ErrInvalid, "invalid_tar", "write %s: %v", full, err)
	}
	// After the chown, which clears setuid/setgid.
	if err := f.Chmod(unixMode(uint32(hdr.Mode), x.sudo)); err != nil {
		f.Close()
		return n, fsError(full, err)
	}
	if err := f.Close(); err != nil {
		return n, fsError(full, err)
	}
	if err := x.d.Chtimes(name, hdr.AccessTime, hdr.ModTime); err != nil {
		return n, fsError(full, err)
	}
	x.files[name] = true
	return n, nil
}
