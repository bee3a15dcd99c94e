package layer

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

func invalidChanges(format string, args ...any) error {
	return sandbox.Errorf(sandbox.ErrInvalid, "invalid_changes", "the sandbox's agent sent an invalid changes stream: "+format, args...)
}

// FromChanges writes a sandbox's changes, as its agent streams them (the
// changes tar, agent.TypeDirNames), into dst, an empty directory, in the
// form Copy gives a runc sandbox's upper dir: what changed, with its mode,
// owner (the sandbox's own ids) and times, set-id bits of files dropped,
// and a whiteout (a 0/0 character device, made here) for each name a
// changed directory's list lacks that lowers (the sandbox's image layers,
// topmost first, whose own whiteouts and opaque directories count) have
// there. With lowers nil the names the image has there come from the
// stream instead (agent.TypeBaseNames, from an agent that has the image's
// tree when paddock does not: the host image on Kubernetes), and a name
// list without them is refused. It returns the bytes of file data
// written, failing with sandbox.ErrTooLarge beyond maxBytes (0: no cap).
//
// The stream is hostile: every entry's parent must be a directory the
// stream made before (so no name passes through a symlink, and nothing is
// written outside dst), names must be relative and free of "..", a hard
// link must name a file the stream made, and device nodes, unknown entry
// types, a second entry of a name and a second list of a directory are
// refused (sandbox.ErrInvalid "invalid_changes"); the caller removes dst.
// A directory replaced by another whose entries kept their ctime (a
// rename recorded as an overlay redirect) the agent refuses to stream.
func FromChanges(ctx context.Context, r io.Reader, dst string, lowers []string, maxBytes int64) (int64, error) {
	rfd, err := unix.Open(dst, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", dst, err)
	}
	defer unix.Close(rfd)
	x := &extractor{ctx: ctx, root: rfd, lowers: lowers, max: maxBytes,
		dirs: map[string]bool{".": true}, files: map[string]bool{}, listed: map[string]bool{}, base: map[string]map[string]bool{}}
	if err := x.run(tar.NewReader(r)); err != nil {
		return 0, err
	}
	return x.n, nil
}

// extractor is one FromChanges.
type extractor struct {
	ctx    context.Context
	root   int // dst
	lowers []string
	max, n int64
	// entries counts entries and listed names against maxCopyEntries.
	entries int
	dirs    map[string]bool // directories made, by name ("." is dst)
	order   []*tar.Header   // directories made, parents first: finished last
	files   map[string]bool // regular files made, for hard links
	listed  map[string]bool // directories whose list was applied
	// base holds, with lowers nil, the image's names of the directories
	// whose TypeBaseNames came and whose list is still to come.
	base map[string]map[string]bool
	buf  []byte
}

func (x *extractor) run(tr *tar.Reader) error {
	for {
		if err := x.ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read the changes stream: %w", err)
		}
		if err := x.count(1); err != nil {
			return err
		}
		if err := x.entry(tr, hdr); err != nil {
			return err
		}
	}
	// Directories' owners, modes and times last, children first: adding
	// to a directory changes its times, and chown clears set-id bits.
	for i := len(x.order) - 1; i >= 0; i-- {
		h := x.order[i]
		name := strings.TrimSuffix(h.Name, "/")
		if err := unix.Fchownat(x.root, name, h.Uid, h.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown /%s: %w", name, err)
		}
		if err := unix.Fchmodat(x.root, name, uint32(h.Mode&0o7777), 0); err != nil {
			return fmt.Errorf("chmod /%s: %w", name, err)
		}
		if err := x.times(x.root, name, h); err != nil {
			return err
		}
	}
	return nil
}

func (x *extractor) count(n int) error {
	if x.entries += n; x.entries > maxCopyEntries {
		return sandbox.Errorf(sandbox.ErrTooLarge, "snapshot_too_large", "the sandbox's changes hold more than %d entries", maxCopyEntries)
	}
	return nil
}

// changeName checks a name of the stream and returns it cleaned.
func changeName(name string) (string, error) {
	trimmed := strings.TrimSuffix(name, "/")
	switch {
	case trimmed == "" || len(name) > unix.PathMax || strings.ContainsRune(name, 0):
		return "", invalidChanges("entry name %q", name)
	case strings.HasPrefix(name, "/"):
		return "", invalidChanges("absolute entry name %q", name)
	}
	for c := range strings.SplitSeq(trimmed, "/") {
		if c == ".." || c == "" || c == "." && trimmed != "." {
			return "", invalidChanges("entry name %q is not a plain path below the root", name)
		}
	}
	return trimmed, nil
}

// entry makes one entry of the stream.
func (x *extractor) entry(tr *tar.Reader, hdr *tar.Header) error {
	name, err := changeName(hdr.Name)
	if err != nil {
		return err
	}
	switch hdr.Typeflag {
	case agent.TypeDirNames:
		return x.list(tr, name)
	case agent.TypeBaseNames:
		return x.baseNames(tr, name)
	}
	if name == "." {
		return invalidChanges("an entry for the root")
	}
	if hdr.Uid < 0 || hdr.Gid < 0 || hdr.Uid >= math.MaxUint32 || hdr.Gid >= math.MaxUint32 {
		return invalidChanges("/%s: owner %d:%d", name, hdr.Uid, hdr.Gid)
	}
	parent, base := path.Split(name)
	parent = strings.TrimSuffix(parent, "/")
	if parent == "" {
		parent = "."
	}
	if !x.dirs[parent] {
		return invalidChanges("/%s: its parent is not a directory sent before it", name)
	}
	// Every component is a directory this extraction made: no symlink on
	// the way, which RESOLVE_NO_SYMLINKS holds to anyway.
	pfd, err := x.openDir(parent)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	perm := uint32(hdr.Mode & 0o7777)
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
			return x.exists(name, err)
		}
		x.dirs[name] = true
		x.order = append(x.order, hdr)
		return nil
	case tar.TypeReg, tar.TypeRegA:
		return x.file(tr, hdr, pfd, base, name)
	case tar.TypeSymlink:
		if hdr.Linkname == "" || len(hdr.Linkname) > unix.PathMax || strings.ContainsRune(hdr.Linkname, 0) {
			return invalidChanges("/%s: symlink target %q", name, hdr.Linkname)
		}
		// Stored, never followed on the host: it resolves in a sandbox.
		if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
			return x.exists(name, err)
		}
	case tar.TypeLink:
		target, err := changeName(hdr.Linkname)
		if err != nil || !x.files[target] {
			return invalidChanges("/%s: hard link to %q, not a file sent before it", name, hdr.Linkname)
		}
		// target's directories are this extraction's, its last component
		// a regular file it made (linkat does not follow one anyway).
		if err := unix.Linkat(x.root, target, pfd, base, 0); err != nil {
			return x.exists(name, err)
		}
		return nil
	case tar.TypeFifo:
		if err := unix.Mknodat(pfd, base, unix.S_IFIFO|0o600, 0); err != nil {
			return x.exists(name, err)
		}
		perm &^= unix.S_ISUID | unix.S_ISGID
	case tar.TypeChar, tar.TypeBlock:
		return invalidChanges("/%s: a device node", name)
	default:
		return invalidChanges("/%s: entry type %q", name, hdr.Typeflag)
	}
	// A node just made in dst, which only paddock writes: still never
	// followed.
	if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown /%s: %w", name, err)
	}
	if hdr.Typeflag != tar.TypeSymlink {
		if err := unix.Fchmodat(pfd, base, perm, 0); err != nil {
			return fmt.Errorf("chmod /%s: %w", name, err)
		}
	}
	return x.times(pfd, base, hdr)
}

func (x *extractor) exists(name string, err error) error {
	if errors.Is(err, unix.EEXIST) {
		return invalidChanges("/%s sent twice", name)
	}
	return fmt.Errorf("make /%s: %w", name, err)
}

func (x *extractor) times(dfd int, name string, hdr *tar.Header) error {
	at := hdr.AccessTime
	if at.IsZero() {
		at = hdr.ModTime
	}
	ts := []unix.Timespec{unix.NsecToTimespec(at.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
	if err := unix.UtimesNanoAt(dfd, name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("times /%s: %w", name, err)
	}
	return nil
}

// file writes a regular file. Set-id bits are dropped, as Copy drops
// them: a layer sits in a host directory.
func (x *extractor) file(tr *tar.Reader, hdr *tar.Header, pfd int, base, name string) error {
	if hdr.Size < 0 || x.max > 0 && x.n+hdr.Size > x.max {
		return sandbox.Errorf(sandbox.ErrTooLarge, "snapshot_too_large", "the sandbox's changes exceed the layer cap of %d bytes", x.max)
	}
	fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return x.exists(name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	if x.buf == nil {
		x.buf = make([]byte, 1<<20)
	}
	n, err := io.CopyBuffer(f, io.LimitReader(tr, hdr.Size), x.buf)
	x.n += n
	if err == nil && n < hdr.Size {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return fmt.Errorf("write /%s: %w", name, err)
	}
	if err := f.Chown(hdr.Uid, hdr.Gid); err != nil {
		return fmt.Errorf("chown /%s: %w", name, err)
	}
	if err := unix.Fchmod(fd, uint32(hdr.Mode&0o7777)&^(unix.S_ISUID|unix.S_ISGID)); err != nil {
		return fmt.Errorf("chmod /%s: %w", name, err)
	}
	at := hdr.AccessTime
	if at.IsZero() {
		at = hdr.ModTime
	}
	if err := unix.UtimesNanoAt(pfd, base, []unix.Timespec{unix.NsecToTimespec(at.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("times /%s: %w", name, err)
	}
	x.files[name] = true
	return f.Close()
}

// list applies a changed directory's list of names: each name the lowers
// have there and the list lacks becomes a whiteout.
func (x *extractor) list(tr *tar.Reader, dir string) error {
	if !x.dirs[dir] || x.listed[dir] {
		return invalidChanges("a name list of /%s, not a directory sent before it, or its second", dir)
	}
	x.listed[dir] = true
	var gone map[string]bool
	if x.lowers == nil {
		var ok bool
		if gone, ok = x.base[dir]; !ok {
			return invalidChanges("the name list of /%s comes without the image's names there", dir)
		}
		delete(x.base, dir)
	} else {
		var err error
		if gone, err = lowerNames(x.lowers, dir); err != nil {
			return err
		}
	}
	return x.names(tr, dir, func(n string) { delete(gone, n) }, func() error { return x.whiteouts(dir, gone) })
}

// baseNames keeps the names the image has in dir (agent.TypeBaseNames)
// for its name list, which comes next.
func (x *extractor) baseNames(tr *tar.Reader, dir string) error {
	if x.lowers != nil || !x.dirs[dir] || x.listed[dir] || x.base[dir] != nil {
		return invalidChanges("the image's names of /%s: not asked for, not a directory sent before, or a second list", dir)
	}
	names := map[string]bool{}
	x.base[dir] = names
	return x.names(tr, dir, func(n string) { names[n] = true }, func() error { return nil })
}

// names reads a NUL-ended name list of dir, each name checked and counted
// against the entry cap, calling add for each and done after the last.
func (x *extractor) names(tr *tar.Reader, dir string, add func(string), done func() error) error {
	sc := bufio.NewScanner(tr)
	sc.Buffer(make([]byte, 0, 512), 512)
	sc.Split(func(data []byte, atEOF bool) (int, []byte, error) {
		if i := bytes.IndexByte(data, 0); i >= 0 {
			return i + 1, data[:i], nil
		}
		if atEOF && len(data) > 0 {
			return 0, nil, invalidChanges("the name list of /%s does not end in a NUL", dir)
		}
		return 0, nil, nil
	})
	for sc.Scan() {
		n := sc.Text()
		if n == "" || n == "." || n == ".." || len(n) > 255 || strings.Contains(n, "/") {
			return invalidChanges("the name list of /%s holds %q", dir, n)
		}
		if err := x.count(1); err != nil {
			return err
		}
		add(n)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return invalidChanges("the name list of /%s holds a name longer than 255 bytes", dir)
		}
		return fmt.Errorf("read the name list of /%s: %w", dir, err)
	}
	return done()
}

// openDir opens dir, relative to the extraction's root, as a directory
// beneath it reached through no symlink: every directory on the way is
// one this extraction made.
func (x *extractor) openDir(dir string) (int, error) {
	fd, err := unix.Openat2(x.root, dir, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return -1, fmt.Errorf("open /%s: %w", dir, err)
	}
	return fd, nil
}

// whiteouts makes a whiteout in dir for each name of gone.
func (x *extractor) whiteouts(dir string, gone map[string]bool) error {
	if len(gone) == 0 {
		return nil
	}
	dfd, err := x.openDir(dir)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	for n := range gone {
		if err := unix.Mknodat(dfd, n, unix.S_IFCHR, 0); err != nil {
			return x.exists(path.Join(dir, n), err)
		}
	}
	return nil
}

// lowerNames is what the union of lowers (topmost first) holds in dir, as
// overlayfs shows it: a whiteout, or a non-directory on the way, hides the
// name in the layers below, and an opaque directory all of the layers
// below. The lowers are paddock's own layer directories; each component is
// looked at with lstat, and only a real directory is descended.
func lowerNames(lowers []string, dir string) (map[string]bool, error) {
	active := lowers
	if dir != "." {
		for c := range strings.SplitSeq(dir, "/") {
			var next []string
			for _, l := range active {
				p := filepath.Join(l, c)
				var st unix.Stat_t
				err := unix.Lstat(p, &st)
				if errors.Is(err, unix.ENOENT) {
					continue
				}
				if err != nil {
					return nil, fmt.Errorf("lower layer: %w", err)
				}
				if st.Mode&unix.S_IFMT != unix.S_IFDIR {
					break // a file, symlink or whiteout hides the layers below
				}
				next = append(next, p)
				if opaque(p) {
					break
				}
			}
			active = next
		}
	}
	names, seen := map[string]bool{}, map[string]bool{}
	for _, l := range active {
		f, err := os.Open(l)
		if err != nil {
			return nil, fmt.Errorf("lower layer: %w", err)
		}
		ents, err := f.ReadDir(-1)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("lower layer %s: %w", l, err)
		}
		for _, e := range ents {
			n := e.Name()
			if seen[n] {
				continue
			}
			seen[n] = true
			if e.Type()&os.ModeCharDevice != 0 {
				var st unix.Stat_t
				if err := unix.Lstat(filepath.Join(l, n), &st); err == nil && st.Rdev == 0 {
					continue // a whiteout
				}
			}
			names[n] = true
		}
	}
	return names, nil
}

func opaque(dir string) bool {
	buf := make([]byte, 8)
	n, err := unix.Lgetxattr(dir, OpaqueXattr, buf)
	return err == nil && string(buf[:n]) == "y"
}
