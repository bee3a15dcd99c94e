//go:build linux

package agent

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// maxChangeNames bounds the names the changes walk holds at once for the
// name lists of the changed directories it is in (it sends a list after
// the directory's children), so a sandbox's huge directories cannot run
// the agent, PID 1, out of memory.
const maxChangeNames = 1 << 20

// startMark creates the state dir's ChangesMark unless it exists and
// returns its ctime: the instant from which the changes stream counts.
//
// Why ctime: overlayfs's copy-up and every write, chmod, chown, link,
// rename and create set it, and no process can set it back (utimensat sets
// only atime and mtime); the image's files keep the ctime of their unpack
// on the node, before the container started. A file, not the clock read
// once: its ctime is stamped by the kernel's filesystem clock, as the
// sandbox's changes are, and it outlives a restart of the agent.
func startMark(stateDir string) (unix.Timespec, error) {
	p := filepath.Join(stateDir, ChangesMark)
	fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return unix.Timespec{}, fmt.Errorf("create %s: %w", p, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return unix.Timespec{}, fmt.Errorf("stat %s: %w", p, err)
	}
	// Filesystems stamp with a coarse clock (one tick, at most 10 ms
	// behind), and the mark's filesystem (a tmpfs) may stamp finer than
	// the root's: a change made just after the mark may carry an earlier
	// ctime. Counting from 20 ms before sends at worst a few unchanged
	// entries (what the runtime made while starting the container, mostly
	// mountpoints, which the walk leaves out anyway), never misses one.
	return unix.NsecToTimespec(st.Ctim.Nano() - int64(20*time.Millisecond)), nil
}

// handleChanges streams the changes tar (see TypeDirNames). The agent
// walks as root, itself: no command of the sandbox's runs, and what the
// stream holds is the whole root filesystem's changes whoever made them.
// Nothing is followed: every open is single-component, O_NOFOLLOW and
// RESOLVE_NO_SYMLINKS, as for the archive. The walk stays on the root's
// mount (by mount id, which, unlike st_dev, also tells a file bind mount).
//
// The sandbox keeps running: a file written during the walk may be sent
// torn, as a live copy is (nothing here can freeze the sandbox).
//
// Errors before the first byte are ordinary error answers; after it the
// connection is aborted, so a cut stream never looks complete.
func (s *Server) handleChanges(w http.ResponseWriter, r *http.Request) {
	if s.markErr != nil {
		s.writeError(w, r, sandbox.Errorf(sandbox.ErrUnavailable, "no_start_mark", "the agent has no start mark: %v", s.markErr))
		return
	}
	if s.cfg.Root == "/" {
		if err := checkRootOverlay("/proc/self/mountinfo"); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	root, err := s.root.Open(".")
	if err != nil {
		s.writeError(w, r, fsError(".", err))
		return
	}
	defer root.Close()
	var stx unix.Statx_t
	if err := unix.Statx(int(root.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_BASIC_STATS|unix.STATX_MNT_ID, &stx); err != nil {
		s.writeError(w, r, fsError(".", err))
		return
	}
	if stx.Mask&unix.STATX_MNT_ID == 0 {
		s.writeError(w, r, sandbox.Errorf(sandbox.ErrUnsupported, "no_mount_id", "the sandbox's kernel reports no mount ids (Linux >= 5.8 does)"))
		return
	}
	w.Header().Set("Content-Type", "application/x-tar")
	w.WriteHeader(http.StatusOK)
	c := &changeWalker{s: s, tw: tar.NewWriter(w), mark: s.mark, mnt: stx.Mnt_id, done: r.Context().Done(), links: map[uint64]string{}}
	err = c.dir(root, "", 0, after(stx.Ctime, s.mark))
	if err == nil {
		err = c.tw.Close()
	}
	if err != nil {
		if r.Context().Err() == nil {
			s.log.Warn("changes stream cut short", "err", err)
		}
		panic(http.ErrAbortHandler)
	}
}

// checkRootOverlay refuses a root overlay that records directory renames
// as redirects (redirect_dir=on): there a renamed directory's entries keep
// their ctime, so the walk would send the directory without them.
// Without redirects overlayfs refuses such a rename (EXDEV) and tools copy
// the tree, which stamps every entry.
func checkRootOverlay(mountinfo string) error {
	f, err := os.Open(mountinfo)
	if err != nil {
		return nil // no /proc: nothing tells, and the runtime's default is off
	}
	defer f.Close()
	redirects := false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields := strings.Fields(pre)
		if !ok || len(fields) < 5 || fields[4] != "/" {
			continue
		}
		// The last mount on "/" is the one the sandbox sees.
		opts := strings.Fields(post)
		redirects = len(opts) >= 3 && opts[0] == "overlay" && strings.Contains(","+opts[2]+",", ",redirect_dir=on,")
	}
	if redirects {
		return sandbox.Errorf(sandbox.ErrUnsupported, "overlay_redirects", "the sandbox's root overlay records directory renames (redirect_dir=on): its changes cannot be told from its files")
	}
	return nil
}

// after reports whether t is at or after mark.
func after(t unix.StatxTimestamp, mark unix.Timespec) bool {
	return t.Sec > mark.Sec || t.Sec == mark.Sec && int64(t.Nsec) >= mark.Nsec
}

// changeWalker writes one root filesystem's changes as a tar stream.
type changeWalker struct {
	s    *Server
	tw   *tar.Writer
	mark unix.Timespec
	mnt  uint64          // the root's mount id
	done <-chan struct{} // the request's end
	// pending are the directories entered but not sent, outermost first:
	// sent before the first changed entry below them.
	pending []*tar.Header
	// links names the first entry sent of each multiply-linked file, by
	// inode, for the hard links after it.
	links map[uint64]string
	held  int // names held for name lists
}

// send writes hdr after the ancestors not yet sent.
func (c *changeWalker) send(hdr *tar.Header) error {
	for _, p := range c.pending {
		if err := c.tw.WriteHeader(p); err != nil {
			return err
		}
	}
	c.pending = c.pending[:0]
	return c.tw.WriteHeader(hdr)
}

// dir walks the open directory d, whose entries are named prefix+name;
// changed says its own ctime moved, so its name list follows its entries.
func (c *changeWalker) dir(d *os.File, prefix string, depth int, changed bool) error {
	if depth >= maxArchiveDepth {
		return fmt.Errorf("/%s: deeper than %d levels", prefix, maxArchiveDepth)
	}
	var names []string
	defer func() { c.held -= len(names) }()
	for {
		batch, err := d.Readdirnames(256)
		for _, n := range batch {
			select {
			case <-c.done:
				return errors.New("request ended")
			default:
			}
			if changed {
				if c.held++; c.held > maxChangeNames {
					return fmt.Errorf("/%s: more than %d names in changed directories at once", prefix, maxChangeNames)
				}
				names = append(names, n)
			}
			if err := c.entry(d, prefix, n, depth); err != nil {
				return err
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read dir /%s: %w", prefix, err)
		}
	}
	if !changed {
		return nil
	}
	name := strings.TrimSuffix(prefix, "/")
	if name == "" {
		name = "."
	}
	if c.s.cfg.BaseRoot != "" {
		base, err := c.baseNames(name)
		if err != nil {
			return err
		}
		if err := c.sendNames(TypeBaseNames, name, base); err != nil {
			return err
		}
	}
	return c.sendNames(TypeDirNames, name, names)
}

// sendNames sends a name list entry of type typ for the directory name.
func (c *changeWalker) sendNames(typ byte, name string, names []string) error {
	var list strings.Builder
	for _, n := range names {
		list.WriteString(n)
		list.WriteByte(0)
	}
	if err := c.send(&tar.Header{Typeflag: typ, Name: name, Size: int64(list.Len()), Mode: 0o600, Format: tar.FormatPAX}); err != nil {
		return err
	}
	_, err := io.WriteString(c.tw, list.String())
	return err
}

// baseNames lists the directory name ("." for the root) of the image's
// pristine tree (ServerConfig.BaseRoot): none if the image has no
// directory there (a missing component, a file or a symlink on the way).
func (c *changeWalker) baseNames(name string) ([]string, error) {
	d, err := os.Open(c.s.cfg.BaseRoot)
	if err != nil {
		return nil, fmt.Errorf("open the image's tree %s: %w", c.s.cfg.BaseRoot, err)
	}
	defer func() { d.Close() }()
	if name != "." {
		for comp := range strings.SplitSeq(name, "/") {
			sub, err := openEntry(int(d.Fd()), comp, unix.O_DIRECTORY)
			if err != nil {
				return nil, nil // not a directory of the image's
			}
			d.Close()
			d = sub
		}
	}
	var names []string
	for {
		batch, err := d.Readdirnames(256)
		if len(names)+len(batch) > maxChangeNames {
			return nil, fmt.Errorf("/%s: more than %d names in the image's directory", name, maxChangeNames)
		}
		names = append(names, batch...)
		if err == io.EOF {
			return names, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read the image's /%s: %w", name, err)
		}
	}
}

// skipChange reports the agent's own entries, which are no change of the
// sandbox's even where they are not mounts.
func skipChange(name string) bool {
	return name == BinaryPath[1:] || name == filepath.Dir(BinaryPath)[1:] || name == StateDir[1:]
}

const statxMask = unix.STATX_BASIC_STATS | unix.STATX_MNT_ID

// entry walks the entry n of directory d: sends it if it changed, and
// descends into it if it is a directory of the root's mount. Entries that
// vanish or change type meanwhile (the sandbox keeps running) are skipped
// with a log line.
func (c *changeWalker) entry(d *os.File, prefix, n string, depth int) error {
	dfd := int(d.Fd())
	name := prefix + n
	var stx unix.Statx_t
	if err := unix.Statx(dfd, n, unix.AT_SYMLINK_NOFOLLOW|unix.AT_NO_AUTOMOUNT, statxMask, &stx); err != nil {
		c.skip(name, "stat: "+err.Error())
		return nil
	}
	if stx.Mnt_id != c.mnt || skipChange(name) {
		return nil // another mount (or the mountpoint of one), or the agent's
	}
	changed := after(stx.Ctime, c.mark)
	switch stx.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		sub, err := openEntry(dfd, n, unix.O_DIRECTORY)
		if err != nil {
			c.skip(name, "open: "+err.Error())
			return nil
		}
		defer sub.Close()
		// The header describes what was opened, not what was listed.
		if err := unix.Statx(int(sub.Fd()), "", unix.AT_EMPTY_PATH, statxMask, &stx); err != nil || stx.Mode&unix.S_IFMT != unix.S_IFDIR || stx.Mnt_id != c.mnt {
			c.skip(name, "changed while walking")
			return nil
		}
		changed = after(stx.Ctime, c.mark)
		hdr := changeHeader(&stx, name+"/", tar.TypeDir)
		if changed {
			if err := c.send(hdr); err != nil {
				return err
			}
		} else {
			c.pending = append(c.pending, hdr)
		}
		level := len(c.pending)
		err = c.dir(sub, name+"/", depth+1, changed)
		if !changed && len(c.pending) == level {
			c.pending = c.pending[:level-1] // nothing below it changed
		}
		return err
	case unix.S_IFREG:
		if !changed {
			return nil
		}
		f, err := openEntry(dfd, n, 0)
		if err != nil {
			c.skip(name, "open: "+err.Error())
			return nil
		}
		defer f.Close()
		if err := unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH, statxMask, &stx); err != nil || stx.Mode&unix.S_IFMT != unix.S_IFREG {
			c.skip(name, "changed while walking")
			return nil
		}
		if stx.Nlink > 1 {
			if first, ok := c.links[stx.Ino]; ok {
				hdr := changeHeader(&stx, name, tar.TypeLink)
				hdr.Linkname = first
				return c.send(hdr)
			}
			c.links[stx.Ino] = name
		}
		return c.regular(f, &stx, name)
	case unix.S_IFLNK:
		if !changed {
			return nil
		}
		target, err := readlinkat(dfd, n)
		if err != nil {
			c.skip(name, "readlink: "+err.Error())
			return nil
		}
		hdr := changeHeader(&stx, name, tar.TypeSymlink)
		hdr.Linkname = target
		return c.send(hdr)
	case unix.S_IFIFO:
		if !changed {
			return nil
		}
		return c.send(changeHeader(&stx, name, tar.TypeFifo))
	}
	return nil // sockets mean nothing in a layer; a sandbox makes no devices
}

// regular sends f as name: exactly the size its header gives, zero-padded
// if the file shrank meanwhile.
func (c *changeWalker) regular(f *os.File, stx *unix.Statx_t, name string) error {
	if err := c.send(changeHeader(stx, name, tar.TypeReg)); err != nil {
		return err
	}
	size := int64(stx.Size)
	n, err := io.CopyN(c.tw, f, size)
	if errors.Is(err, io.EOF) {
		c.s.log.Warn("changes: file shrank while read, padded with zeros", "path", "/"+name, "missing", size-n)
		_, err = io.CopyN(c.tw, zeros{}, size-n)
	}
	if err != nil {
		return fmt.Errorf("changes /%s: %w", name, err)
	}
	return nil
}

func (c *changeWalker) skip(name, why string) {
	c.s.log.Info("changes: skipped entry", "path", "/"+name, "reason", why)
}

// changeHeader builds a PAX header (times to the nanosecond) from a statx:
// the ids are the sandbox's own, as its kernel reports them.
func changeHeader(stx *unix.Statx_t, name string, typ byte) *tar.Header {
	h := &tar.Header{
		Typeflag:   typ,
		Name:       name,
		Mode:       int64(stx.Mode & 0o7777),
		Uid:        int(stx.Uid),
		Gid:        int(stx.Gid),
		ModTime:    time.Unix(stx.Mtime.Sec, int64(stx.Mtime.Nsec)),
		AccessTime: time.Unix(stx.Atime.Sec, int64(stx.Atime.Nsec)),
		Format:     tar.FormatPAX,
	}
	if typ == tar.TypeReg {
		h.Size = int64(stx.Size)
	}
	return h
}
