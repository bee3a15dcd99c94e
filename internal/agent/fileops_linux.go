//go:build linux

package agent

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// The file operations beyond read, tar write and mkdir: stat, listing,
// move, remove and a single-file write. Each runs with the caller's
// identity (s.as), so the kernel decides what the sandbox's user may see
// and change, and each resolves its paths inside the root: the path asked
// for resolves as it would for a process of the sandbox (RESOLVE_IN_ROOT or
// os.Root), and below it nothing is followed.

// openPathInRoot opens the directory name as an O_PATH handle, resolved
// like openInRoot: only search permission on the way is needed, as for
// stat(2), not read permission on the directory itself.
func (s *Server) openPathInRoot(name string) (*os.File, error) {
	return s.resolveInRoot(name, unix.O_PATH|unix.O_DIRECTORY)
}

// idNames maps owners to names from the sandbox's etc/passwd and
// etc/group, read once per request on first use.
type idNames struct {
	s             *Server
	loaded        bool
	users, groups map[uint32]string
}

func (n *idNames) load() {
	if n.loaded {
		return
	}
	n.loaded = true
	n.users, n.groups = map[uint32]string{}, map[uint32]string{}
	for _, e := range parsePasswd(n.s.readUserDB("etc/passwd")) {
		if _, ok := n.users[e.uid]; !ok {
			n.users[e.uid] = e.name
		}
	}
	for _, e := range parseGroup(n.s.readUserDB("etc/group")) {
		if _, ok := n.groups[e.gid]; !ok {
			n.groups[e.gid] = e.name
		}
	}
}

func (n *idNames) user(uid uint32) string {
	n.load()
	if name, ok := n.users[uid]; ok {
		return name
	}
	return strconv.FormatUint(uint64(uid), 10)
}

func (n *idNames) group(gid uint32) string {
	n.load()
	if name, ok := n.groups[gid]; ok {
		return name
	}
	return strconv.FormatUint(uint64(gid), 10)
}

// fileMode is st_mode as an fs.FileMode, the way os.Stat builds it.
func fileMode(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	switch m & unix.S_IFMT {
	case unix.S_IFDIR:
		mode |= fs.ModeDir
	case unix.S_IFLNK:
		mode |= fs.ModeSymlink
	case unix.S_IFIFO:
		mode |= fs.ModeNamedPipe
	case unix.S_IFSOCK:
		mode |= fs.ModeSocket
	case unix.S_IFCHR:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		mode |= fs.ModeDevice
	}
	if m&unix.S_ISUID != 0 {
		mode |= fs.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		mode |= fs.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

// entryOf describes the file st at the sandbox path p. dfd and base
// locate a symlink for its target.
func entryOf(st *unix.Stat_t, p string, ids *idNames, dfd int, base string) Entry {
	e := Entry{
		Name: path.Base(p), Path: p, Size: st.Size, Mode: st.Mode & 0o7777,
		Permissions: fileMode(st.Mode).String(),
		Owner:       ids.user(st.Uid), Group: ids.group(st.Gid), UID: st.Uid, GID: st.Gid,
		ModTime: time.Unix(st.Mtim.Unix()).UTC(),
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		e.Type = EntryFile
	case unix.S_IFDIR:
		e.Type = EntryDir
	case unix.S_IFLNK:
		e.Type = EntrySymlink
		if target, err := readlinkat(dfd, base); err == nil {
			if !path.IsAbs(target) {
				target = path.Join(path.Dir(p), target)
			}
			e.SymlinkTarget = path.Clean(target)
		}
	default:
		e.Type = EntryOther
	}
	return e
}

// stat describes name (relative to the root) itself: its directory
// resolves inside the root, its last component is not followed. Run it
// with the caller's identity.
func (s *Server) stat(name string, ids *idNames) (Entry, error) {
	dirName, base := ".", ""
	if name != "." {
		dirName, base = path.Dir(name), path.Base(name)
	}
	d, err := s.openPathInRoot(dirName)
	if err != nil {
		return Entry{}, fsError(dirName, err)
	}
	defer d.Close()
	var st unix.Stat_t
	if base == "" {
		err = unix.Fstat(int(d.Fd()), &st)
	} else {
		err = unix.Fstatat(int(d.Fd()), base, &st, unix.AT_SYMLINK_NOFOLLOW)
	}
	if err != nil {
		return Entry{}, fsError(name, err)
	}
	return entryOf(&st, "/"+nameOrEmpty(name), ids, int(d.Fd()), base), nil
}

// nameOrEmpty turns the root's "." into "" for joining with "/".
func nameOrEmpty(name string) string {
	if name == "." {
		return ""
	}
	return name
}

func (s *Server) handleStat(w http.ResponseWriter, r *http.Request) {
	name, sudo, err := pathAndSudo(r, "path")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.answerEntry(w, r, sudo, name, nil)
}

// answerEntry runs op (if any) and then stats name, both with the
// caller's identity, and answers name's Entry.
func (s *Server) answerEntry(w http.ResponseWriter, r *http.Request, sudo bool, name string, op func() error) {
	var e Entry
	err := s.as(sudo, func() error {
		if op != nil {
			if err := op(); err != nil {
				return err
			}
		}
		var err error
		e, err = s.stat(name, &idNames{s: s})
		return err
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, e)
}

var errTooManyEntries = sandbox.Errorf(sandbox.ErrTooLarge, "too_many_entries",
	"the listing exceeds %d entries: list with a smaller depth", MaxListEntries)

// lister walks a directory tree for a listing, at most MaxListEntries
// entries, in the order of a sorted depth-first walk.
type lister struct {
	ids     *idNames
	depth   int
	entries []Entry
	done    <-chan struct{}
}

// dir lists the open directory d, the sandbox path p, at level (1 for the
// directory asked for) and descends into its subdirectories, each opened
// one component at a time without following symlinks.
func (l *lister) dir(d *os.File, p string, level int) error {
	var names []string
	for {
		batch, err := d.Readdirnames(1024)
		names = append(names, batch...)
		if len(l.entries)+len(names) > MaxListEntries {
			return errTooManyEntries
		}
		if err != nil {
			break // io.EOF, or a directory that went meanwhile
		}
	}
	slices.Sort(names)
	dfd := int(d.Fd())
	for _, n := range names {
		select {
		case <-l.done:
			return errors.New("request ended")
		default:
		}
		var st unix.Stat_t
		if err := unix.Fstatat(dfd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			continue // gone since the listing
		}
		child := path.Join(p, n)
		l.entries = append(l.entries, entryOf(&st, child, l.ids, dfd, n))
		if st.Mode&unix.S_IFMT != unix.S_IFDIR || level >= l.depth {
			continue
		}
		sub, err := openEntry(dfd, n, unix.O_DIRECTORY)
		if err != nil {
			continue // not the caller's to read, or replaced by a symlink
		}
		err = l.dir(sub, child, level+1)
		sub.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// handleListDir answers the entries below a directory to a depth (1: its
// own entries), as a JSON array. The directory resolves like a read
// (symlinks followed inside the root); below it nothing is followed.
func (s *Server) handleListDir(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	name, sudo, err := pathAndSudo(r, "path")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	depth := 1
	if v := q.Get("depth"); v != "" {
		if depth, err = strconv.Atoi(v); err != nil || depth < 1 {
			s.writeError(w, r, sandbox.Errorf(sandbox.ErrInvalid, "invalid_depth", "depth %q is not a positive integer", v))
			return
		}
	}
	depth = min(depth, MaxListDepth)
	l := &lister{ids: &idNames{s: s}, depth: depth, entries: []Entry{}, done: r.Context().Done()}
	err = s.as(sudo, func() error {
		d, err := s.openInRoot(name)
		if err != nil {
			return fsError(name, err)
		}
		defer d.Close()
		var st unix.Stat_t
		if err := unix.Fstat(int(d.Fd()), &st); err != nil {
			return fsError(name, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return sandbox.Errorf(sandbox.ErrInvalid, "not_a_directory", "/%s is not a directory", nameOrEmpty(name))
		}
		return l.dir(d, "/"+nameOrEmpty(name), 1)
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, l.entries)
}

// decodeFileOp reads a small JSON request body.
func decodeFileOp(w http.ResponseWriter, r *http.Request, v any) error {
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(v); err != nil {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_request", "decode request: %v", err)
	}
	return nil
}

// moveError maps a failed rename to an API error.
func moveError(src, dst string, err error) error {
	switch {
	case errors.Is(err, unix.EEXIST), errors.Is(err, unix.ENOTEMPTY):
		return sandbox.Errorf(sandbox.ErrConflict, "destination_exists", "/%s: a non-empty directory is in the way", dst)
	case errors.Is(err, unix.EISDIR):
		return sandbox.Errorf(sandbox.ErrConflict, "is_a_directory", "/%s is a directory", dst)
	case errors.Is(err, unix.EXDEV):
		return sandbox.Errorf(sandbox.ErrInvalid, "cross_device", "/%s and /%s are on different filesystems", src, dst)
	case errors.Is(err, unix.EINVAL):
		return invalidPath("cannot move /%s into itself", src)
	}
	return fsError(src, err)
}

// handleMove renames a file, symlink or directory inside the sandbox,
// creating the destination's missing parents, and answers the Entry at
// the destination.
func (s *Server) handleMove(w http.ResponseWriter, r *http.Request) {
	var req MoveRequest
	if err := decodeFileOp(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	src, err := relPath(req.Source)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	dst, err := relPath(req.Destination)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if src == "." || dst == "." {
		s.writeError(w, r, invalidPath("the root cannot be moved or replaced"))
		return
	}
	if err := s.usable(); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.answerEntry(w, r, req.Sudo, dst, func() error {
		uid, gid := s.ownerFor(req.Sudo)
		if _, err := s.root.Lstat(src); err != nil {
			return fsError(src, err)
		}
		if parent := path.Dir(dst); parent != "." {
			if err := mkdirAll(s.root, parent, 0o755, uid, gid); err != nil {
				return err
			}
		}
		if err := s.root.Rename(src, dst); err != nil {
			return moveError(src, dst, err)
		}
		return nil
	})
}

// handleRemove removes a file or symlink, or a directory and everything
// below it (os.Root.RemoveAll: nothing below is followed). A path that is
// not there is not_found.
func (s *Server) handleRemove(w http.ResponseWriter, r *http.Request) {
	var req RemoveRequest
	if err := decodeFileOp(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	name, err := relPath(req.Path)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if name == "." {
		s.writeError(w, r, invalidPath("the root cannot be removed"))
		return
	}
	if err := s.usable(); err != nil {
		s.writeError(w, r, err)
		return
	}
	err = s.as(req.Sudo, func() error {
		if _, err := s.root.Lstat(name); err != nil {
			return fsError(name, err)
		}
		if err := s.root.RemoveAll(name); err != nil {
			return fsError(name, err)
		}
		return nil
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleWriteFile writes the request body to one file, creating its
// missing parents, and answers the file's Entry. It is one regular entry
// of a tar write (the same rules: an existing file or symlink there is
// replaced, not written through; a directory is refused; the owner is the
// writer; MaxWriteBytes bounds the body), with the mode from ?mode=
// (octal, default 0644).
func (s *Server) handleWriteFile(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	name, err := relPath(q.Get("path"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if name == "." {
		s.writeError(w, r, sandbox.Errorf(sandbox.ErrConflict, "is_a_directory", "/ is a directory"))
		return
	}
	sudo, err := sudoQuery(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	mode := uint64(0o644)
	if v := q.Get("mode"); v != "" {
		if mode, err = strconv.ParseUint(v, 8, 32); err != nil || mode&^0o7777 != 0 {
			s.writeError(w, r, sandbox.Errorf(sandbox.ErrInvalid, "invalid_mode", "mode %q is not octal permission bits", v))
			return
		}
	}
	if err := s.usable(); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.answerEntry(w, r, sudo, name, func() error {
		uid, gid := s.ownerFor(sudo)
		x := &extractor{d: s.root, sudo: sudo, uid: uid, gid: gid, files: map[string]bool{}}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: int64(mode)}
		_, err := x.entry(hdr, &capReader{r: r.Body, n: s.cfg.MaxWriteBytes})
		return err
	})
}
