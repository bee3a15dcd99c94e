package main

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// extractResult counts what extractTar wrote.
type extractResult struct {
	files int   // regular files and symlinks
	bytes int64 // bytes of regular files
}

func unsafeEntry(format string, args ...any) error {
	return sandbox.Errorf(sandbox.ErrInvalid, "unsafe_entry", format, args...)
}

// extractTar unpacks a tar that came from inside a sandbox into dst, an
// existing directory on the host. Every entry is hostile until checked:
//
//   - every create goes through os.OpenRoot(dst), so no path, symlink or
//     race leaves dst;
//   - names must be relative without "..", and no entry may be written
//     through a symlink (a parent that is a symlink, or one at the name);
//   - symlink targets must be relative and stay inside dst when resolved
//     from the link's (symlink-free) directory; ".." may only lead a target,
//     so a chain of links cannot climb further than the check saw;
//   - hard links, devices, FIFOs and sparse files are refused (the agent
//     makes none of them; a sparse entry of a few bytes could declare
//     terabytes of zeros);
//   - only permission bits are kept: never setuid, setgid or sticky, never
//     the sandbox's owners.
//
// The first unsafe entry stops the extraction with an unsafe_entry error;
// what was written before it stays, all of it inside dst.
func extractTar(r io.Reader, dst string) (extractResult, error) {
	var res extractResult
	root, err := os.OpenRoot(dst)
	if err != nil {
		return res, err
	}
	defer root.Close()
	x := &hostExtractor{root: root, dirIndex: map[string]int{}, real: map[string]bool{}}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return res, fmt.Errorf("read archive: %w", err)
		}
		n, err := x.entry(hdr, tr)
		if err != nil {
			return res, err
		}
		if hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeSymlink {
			res.files++
			res.bytes += n
		}
	}
	// Directory modes and mtimes last, deepest first: they were created
	// writable, and creating their entries changed their mtimes.
	for _, d := range slices.Backward(x.dirs) {
		fi, err := root.Lstat(d.name)
		if err != nil || !fi.IsDir() {
			continue
		}
		if err := root.Chmod(d.name, d.mode); err != nil {
			return res, err
		}
		_ = root.Chtimes(d.name, d.mtime, d.mtime)
	}
	return res, nil
}

// hostExtractor holds the state of one extraction.
type hostExtractor struct {
	root     *os.Root
	dirs     []hostDir      // directories from the archive, in order of first mention
	dirIndex map[string]int // dirs' index by name
	// real holds parents (slash names) found or made as directories; no
	// entry removes a directory, so they stay so.
	real map[string]bool
}

type hostDir struct {
	name  string
	mode  fs.FileMode
	mtime time.Time
}

// maxNameLen is Linux's PATH_MAX: no program opens a longer path, and a
// name of a million components would be a million directories.
const maxNameLen = 4096

// hostName validates an archive name and returns it cleaned, with '/'.
func hostName(name string) (string, error) {
	switch {
	case name == "" || strings.ContainsRune(name, 0):
		return "", unsafeEntry("archive entry %q: empty or NUL in name", name)
	case strings.HasPrefix(name, "/") || strings.Contains(name, `\`):
		// A backslash would be a separator on Windows.
		return "", unsafeEntry("archive entry %q: absolute or with a backslash", name)
	case slices.Contains(strings.Split(name, "/"), ".."):
		return "", unsafeEntry("archive entry %q: contains ..", name)
	case len(name) > maxNameLen:
		return "", unsafeEntry("archive entry of %d bytes: longer than %d", len(name), maxNameLen)
	}
	return path.Clean(name), nil
}

func (x *hostExtractor) entry(hdr *tar.Header, r io.Reader) (int64, error) {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return 0, nil
	}
	name, err := hostName(hdr.Name)
	if err != nil {
		return 0, err
	}
	switch hdr.Typeflag {
	case tar.TypeDir, tar.TypeReg, tar.TypeSymlink:
	case tar.TypeLink:
		return 0, unsafeEntry("archive entry %q: hard links are not extracted", hdr.Name)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return 0, unsafeEntry("archive entry %q: devices and FIFOs are not extracted", hdr.Name)
	default:
		return 0, unsafeEntry("archive entry %q: unsupported type %q", hdr.Name, hdr.Typeflag)
	}
	// archive/tar expands PAX sparse files (old GNU ones are TypeGNUSparse,
	// refused above) into their full size of zeros.
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return 0, unsafeEntry("archive entry %q: sparse files are not extracted", hdr.Name)
		}
	}
	// Only permission bits: a setuid file from a sandbox must not become
	// a setuid file of the host user.
	perm := fs.FileMode(hdr.Mode).Perm()
	if name == "." {
		if hdr.Typeflag != tar.TypeDir {
			return 0, unsafeEntry("archive entry %q names the target directory", hdr.Name)
		}
		return 0, nil
	}
	if err := x.mkdirParents(name); err != nil {
		return 0, err
	}
	if hdr.Typeflag == tar.TypeDir {
		return 0, x.dir(name, perm, hdr.ModTime)
	}
	if err := x.clear(name); err != nil {
		return 0, err
	}
	if hdr.Typeflag == tar.TypeSymlink {
		if err := checkLinkTarget(name, hdr.Linkname); err != nil {
			return 0, err
		}
		return 0, x.root.Symlink(hdr.Linkname, filepath.FromSlash(name))
	}
	return x.regular(name, perm, hdr.ModTime, r)
}

// mkdirParents creates the directories above name, refusing any that is a
// symlink: writing through a link, even one that stays inside, is how
// archives reach places their names do not say. It goes down one
// component at a time from a handle on the directory above: os.Root
// resolves a name from the top, so checking each prefix by its full name
// costs O(depth²), minutes for one name thousands of levels deep.
func (x *hostExtractor) mkdirParents(name string) error {
	dir := path.Dir(name)
	if dir == "." || x.real[dir] {
		return nil
	}
	d := x.root
	defer func() {
		if d != x.root {
			d.Close()
		}
	}()
	p := ""
	for _, c := range strings.Split(dir, "/") {
		p = path.Join(p, c)
		if !x.real[p] {
			fi, err := d.Lstat(c)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				if err := d.Mkdir(c, 0o755); err != nil {
					return err
				}
			case err != nil:
				return err
			case fi.Mode()&fs.ModeSymlink != 0:
				return unsafeEntry("archive entry %q: writes through the symlink %s", name, filepath.FromSlash(p))
			case !fi.IsDir():
				return unsafeEntry("archive entry %q: %s is not a directory", name, filepath.FromSlash(p))
			}
			x.real[p] = true
		}
		next, err := d.OpenRoot(c)
		if err != nil {
			return err
		}
		if d != x.root {
			d.Close()
		}
		d = next
	}
	return nil
}

// dir creates a directory entry (or keeps an existing one); its mode and
// mtime are applied at the end. It stays writable meanwhile, so a read-only
// directory in the archive can still receive its entries.
func (x *hostExtractor) dir(name string, perm fs.FileMode, mtime time.Time) error {
	fi, err := x.root.Lstat(filepath.FromSlash(name))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := x.root.Mkdir(filepath.FromSlash(name), 0o700|perm); err != nil {
			return err
		}
	case err != nil:
		return err
	case fi.Mode()&fs.ModeSymlink != 0:
		return unsafeEntry("archive entry %q: a symlink is in the way", name)
	case !fi.IsDir():
		return unsafeEntry("archive entry %q: a non-directory is in the way", name)
	}
	// A directory named twice takes its last entry's mode, as any later
	// entry wins.
	d := hostDir{name: filepath.FromSlash(name), mode: perm, mtime: mtime}
	if i, ok := x.dirIndex[d.name]; ok {
		x.dirs[i] = d
		return nil
	}
	x.dirIndex[d.name] = len(x.dirs)
	x.dirs = append(x.dirs, d)
	return nil
}

// clear removes a file or symlink at name, like tar's unlink-first, so the
// new entry replaces it instead of writing through it.
func (x *hostExtractor) clear(name string) error {
	fi, err := x.root.Lstat(filepath.FromSlash(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return unsafeEntry("archive entry %q: a directory is in the way", name)
	}
	return x.root.Remove(filepath.FromSlash(name))
}

// checkLinkTarget refuses a symlink at name whose target is absolute or
// climbs out of the extraction root. The lexical check is exact because the
// link's directory has no symlinks (mkdirParents) and ".." may only lead
// the target: "a/.." would climb from wherever a points, not from a.
func checkLinkTarget(name, target string) error {
	if target == "" || strings.ContainsRune(target, 0) || strings.Contains(target, `\`) {
		return unsafeEntry("archive symlink %q: target %q is empty or malformed", name, target)
	}
	if path.IsAbs(target) {
		return unsafeEntry("archive symlink %q: target %q is absolute", name, target)
	}
	climbing := true
	for _, part := range strings.Split(target, "/") {
		switch {
		case part == "..":
			if !climbing {
				return unsafeEntry("archive symlink %q: target %q has .. after a name", name, target)
			}
		case part != "" && part != ".":
			climbing = false
		}
	}
	resolved := path.Join(path.Dir(name), target)
	if resolved == ".." || strings.HasPrefix(resolved, "../") {
		return unsafeEntry("archive symlink %q: target %q leaves the directory", name, target)
	}
	return nil
}

// regular writes a file entry. O_CREATE|O_EXCL: clear removed what was
// there, and with O_EXCL the kernel refuses a symlink raced in since
// instead of following it.
func (x *hostExtractor) regular(name string, perm fs.FileMode, mtime time.Time, r io.Reader) (int64, error) {
	hostPath := filepath.FromSlash(name)
	f, err := x.root.OpenFile(hostPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, r)
	if err != nil {
		f.Close()
		return n, fmt.Errorf("write %s: %w", name, err)
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return n, err
	}
	if err := f.Close(); err != nil {
		return n, err
	}
	// Chtimes follows a symlink at the name, but os.Root keeps it inside
	// dst and only a local process could have put one there.
	if err := x.root.Chtimes(hostPath, mtime, mtime); err != nil {
		return n, err
	}
	return n, nil
}
