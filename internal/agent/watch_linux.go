//go:build linux

package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// watchMask is what a watch asks inotify for on every directory.
const watchMask = unix.IN_CREATE | unix.IN_MODIFY | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO |
	unix.IN_ATTRIB | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR

// maxWatchDepth bounds how deep a recursive watch descends.
const maxWatchDepth = 256

// watch is one open watch: an inotify instance over a directory and, when
// recursive, every directory below it. One goroutine, run on a thread with
// the watch's identity, owns everything but the event queue.
type watch struct {
	s         *Server
	recursive bool
	ino       *os.File // the inotify instance, in Go's poller
	inoFD     int      // its fd (ino.Fd() would take it out of the poller)
	name      string   // the watched directory, relative to the server's root
	top       unix.Stat_t
	moved     bool // the watched directory was moved: new subdirectories are not watched
	dirs      map[int]string
	// events is the bounded queue to the HTTP writer; lost wakes it when
	// an event did not fit (or a directory could not be watched).
	events chan WatchEvent
	lost   chan struct{}
}

func (s *Server) takeWatch() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.watches >= s.cfg.MaxWatches {
		return sandbox.Errorf(sandbox.ErrExhausted, "too_many_watches", "the sandbox has %d watches open, the most it may", s.watches)
	}
	s.watches++
	return nil
}

func (s *Server) releaseWatch() {
	s.mu.Lock()
	s.watches--
	s.mu.Unlock()
}

// takeDir counts one more watched directory, if the sandbox may.
func (s *Server) takeDir() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.watchDirs >= s.cfg.MaxWatchDirs {
		return false
	}
	s.watchDirs++
	return true
}

func (s *Server) releaseDirs(n int) {
	s.mu.Lock()
	s.watchDirs -= n
	s.mu.Unlock()
}

// handleWatch streams the changes below a directory as NDJSON WatchEvents
// until the client leaves or the directory goes. The answer's header is
// sent once every directory is watched, so a client that has it sees every
// change made after. Without sudo the directory is resolved, listed and
// watched with the user's identity (inotify checks read access as the
// caller), so a symlink the user made leads the watch only where the user
// could look; below the directory nothing is followed at all.
func (s *Server) handleWatch(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	name, sudo, err := pathAndSudo(r, "path")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	recursive := false
	if v := q.Get("recursive"); v != "" {
		if recursive, err = strconv.ParseBool(v); err != nil {
			s.writeError(w, r, sandbox.Errorf(sandbox.ErrInvalid, "invalid_recursive", "recursive %q is not a boolean", v))
			return
		}
	}
	if err := s.takeWatch(); err != nil {
		s.writeError(w, r, err)
		return
	}
	defer s.releaseWatch()

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	wt := &watch{s: s, recursive: recursive, dirs: map[int]string{},
		events: make(chan WatchEvent, s.cfg.MaxWatchQueue), lost: make(chan struct{}, 1)}
	var once sync.Once
	ready := make(chan error, 1)
	started := func(err error) { once.Do(func() { ready <- err }) }
	done := make(chan struct{})
	go func() {
		defer close(done)
		started(s.as(sudo, func() error { return wt.run(ctx, name, started) }))
	}()
	defer func() { cancel(); <-done }()
	if err := <-ready; err != nil {
		s.writeError(w, r, err)
		return
	}

	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	flush := func() {
		if flusher != nil {
			flusher.Flush()
		}
	}
	flush()
	enc := json.NewEncoder(w)
	for {
		select {
		case ev, ok := <-wt.events:
			if !ok {
				flush()
				return
			}
			if enc.Encode(ev) != nil {
				return
			}
			if len(wt.events) == 0 {
				flush()
			}
		case <-wt.lost:
			// What was queued before the loss goes first.
			for len(wt.events) > 0 {
				if ev, ok := <-wt.events; ok && enc.Encode(ev) != nil {
					return
				}
			}
			if enc.Encode(WatchEvent{Type: WatchOverflow}) != nil {
				return
			}
			flush()
		case <-ctx.Done():
			return
		}
	}
}

// run opens and watches the tree, reports through started, then turns
// inotify's events into WatchEvents until ctx ends or the watched
// directory is gone. It runs with the watch's identity throughout: new
// directories are opened and watched as they appear.
func (wt *watch) run(ctx context.Context, name string, started func(error)) error {
	defer close(wt.events)
	wt.name = name
	// No directory stays open: an open one would hold back its
	// IN_DELETE_SELF until closed.
	top, err := wt.openTop()
	if err != nil {
		return err
	}
	defer top.Close()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		if errors.Is(err, unix.EMFILE) {
			return sandbox.Errorf(sandbox.ErrExhausted, "too_many_watches", "no inotify instance left: %v", err)
		}
		return fmt.Errorf("inotify: %w", err)
	}
	wt.ino, wt.inoFD = os.NewFile(uintptr(fd), "inotify"), fd
	defer wt.ino.Close()
	defer func() { wt.s.releaseDirs(len(wt.dirs)) }()
	if err := wt.addTree(top, "", 0, nil); err != nil {
		return err
	}
	top.Close()
	started(nil)

	stop := context.AfterFunc(ctx, func() { _ = wt.ino.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, 64<<10)
	for {
		n, err := wt.ino.Read(buf)
		if err != nil {
			return nil // ctx ended (the deadline), or the instance failed
		}
		if !wt.handle(buf[:n]) {
			return nil
		}
	}
}

// handle processes one read of events; false ends the watch.
func (wt *watch) handle(buf []byte) bool {
	for len(buf) >= unix.SizeofInotifyEvent {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[0]))
		end := unix.SizeofInotifyEvent + int(ev.Len)
		if end > len(buf) {
			return true // the kernel never splits an event; be safe anyway
		}
		name := strings.TrimRight(string(buf[unix.SizeofInotifyEvent:end]), "\x00")
		buf = buf[end:]
		wd, mask := int(ev.Wd), ev.Mask
		if mask&unix.IN_Q_OVERFLOW != 0 {
			wt.overflow()
			continue
		}
		rel, ok := wt.dirs[wd]
		if !ok {
			continue // a directory no longer watched
		}
		if mask&unix.IN_IGNORED != 0 {
			delete(wt.dirs, wd)
			wt.s.releaseDirs(1)
			if rel == "" {
				return false // the watched directory is gone
			}
			continue
		}
		isDir := mask&unix.IN_ISDIR != 0
		full := name
		if rel != "" {
			full = rel + "/" + name
		}
		switch {
		case mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0:
			ev := WatchEvent{Type: WatchCreate, Name: full, Dir: isDir}
			if isDir && wt.recursive {
				wt.addNew(full, ev)
			} else {
				wt.emit(ev)
			}
		case mask&unix.IN_MOVED_FROM != 0:
			wt.emit(WatchEvent{Type: WatchRename, Name: full, Dir: isDir})
			if isDir && wt.recursive {
				wt.forget(full)
			}
		case mask&unix.IN_DELETE != 0:
			wt.emit(WatchEvent{Type: WatchRemove, Name: full, Dir: isDir})
		case mask&unix.IN_MODIFY != 0:
			wt.emit(WatchEvent{Type: WatchWrite, Name: full})
		case mask&unix.IN_ATTRIB != 0:
			wt.emit(WatchEvent{Type: WatchChmod, Name: full, Dir: isDir})
		case mask&unix.IN_DELETE_SELF != 0 && rel == "":
			wt.emit(WatchEvent{Type: WatchRemove, Dir: true})
		case mask&unix.IN_MOVE_SELF != 0 && rel == "":
			wt.moved = true
			wt.emit(WatchEvent{Type: WatchRename, Dir: true})
		}
	}
	return true
}

// emit queues ev, or drops it and flags an overflow when the queue is full.
func (wt *watch) emit(ev WatchEvent) {
	select {
	case wt.events <- ev:
	default:
		wt.overflow()
	}
}

func (wt *watch) overflow() {
	select {
	case wt.lost <- struct{}{}:
	default:
	}
}

// addNew watches a directory that appeared below a recursive watch, then
// reports it (self) and what it already holds as created: entries made
// before its watch was in place would otherwise go unseen. The reports
// come once the whole new tree is watched, so a client that acts on one
// (writes into the new directory) sees the changes it makes.
func (wt *watch) addNew(rel string, self WatchEvent) {
	found := []WatchEvent{self}
	defer func() {
		for _, ev := range found {
			wt.emit(ev)
		}
	}()
	if wt.moved {
		wt.overflow()
		return
	}
	top, err := wt.openTop()
	if err != nil {
		wt.overflow()
		return
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(top.Fd()), &st); err != nil || st.Dev != wt.top.Dev || st.Ino != wt.top.Ino {
		top.Close()
		wt.overflow() // the path names another directory now
		return
	}
	d, err := openBelow(top, rel)
	top.Close()
	if err != nil {
		return // gone again, replaced by a symlink, or not the user's to read
	}
	defer d.Close()
	if err := wt.addTree(d, rel, strings.Count(rel, "/")+1, &found); err != nil {
		wt.overflow()
	}
}

// openTop opens the watched directory (see openInRoot) and, the first
// time, records which one it is.
func (wt *watch) openTop() (*os.File, error) {
	top, err := wt.s.openInRoot(wt.name)
	if err != nil {
		return nil, fsError(wt.name, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(top.Fd()), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		top.Close()
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "not_a_directory", "/%s: not a directory", wt.name)
	}
	if wt.top.Ino == 0 {
		wt.top = st
	}
	return top, nil
}

// forget stops watching a directory moved away, and everything below it:
// its watches would report under a name it no longer has.
func (wt *watch) forget(rel string) {
	n := 0
	for wd, p := range wt.dirs {
		if p == rel || strings.HasPrefix(p, rel+"/") {
			_, _ = unix.InotifyRmWatch(wt.inoFD, uint32(wd))
			delete(wt.dirs, wd)
			n++
		}
	}
	wt.s.releaseDirs(n)
}

// addTree watches the open directory d, named rel below the top, and with
// recursive its subdirectories, opened one component at a time without
// following symlinks. With found (a later tree), the entries found are
// added to it as created, at most as many as the event queue holds (then
// an overflow). Past the sandbox's directory cap the first (initial) tree
// fails; a later one is watched as far as the cap allows and flags an
// overflow.
func (wt *watch) addTree(d *os.File, rel string, depth int, found *[]WatchEvent) error {
	if !wt.s.takeDir() {
		if found == nil {
			return sandbox.Errorf(sandbox.ErrExhausted, "too_many_watched_dirs",
				"the sandbox's watches may cover at most %d directories", wt.s.cfg.MaxWatchDirs)
		}
		wt.overflow()
		return nil
	}
	// inotify takes a path: the open directory's own, through /proc, so
	// what is watched is exactly what was opened.
	wd, err := unix.InotifyAddWatch(wt.inoFD, "/proc/self/fd/"+strconv.Itoa(int(d.Fd())), watchMask)
	if err != nil {
		wt.s.releaseDirs(1)
		if rel == "" {
			if errors.Is(err, unix.ENOSPC) {
				return sandbox.Errorf(sandbox.ErrExhausted, "too_many_watched_dirs", "the kernel's inotify watch limit is reached")
			}
			return fsError(strings.TrimPrefix(d.Name(), "/"), err)
		}
		wt.overflow()
		return nil
	}
	if _, dup := wt.dirs[wd]; dup {
		wt.s.releaseDirs(1) // the same directory again (a bind mount): one watch
	}
	wt.dirs[wd] = rel
	if !wt.recursive || depth >= maxWatchDepth {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(d.Fd()), &st); err != nil {
		return nil
	}
	for {
		names, rerr := d.Readdirnames(256)
		for _, n := range names {
			child := n
			if rel != "" {
				child = rel + "/" + n
			}
			var cst unix.Stat_t
			if err := unix.Fstatat(int(d.Fd()), n, &cst, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				continue
			}
			isDir := cst.Mode&unix.S_IFMT == unix.S_IFDIR
			if found != nil {
				if len(*found) < cap(wt.events) {
					*found = append(*found, WatchEvent{Type: WatchCreate, Name: child, Dir: isDir})
				} else {
					wt.overflow()
				}
			}
			if !isDir || (cst.Dev != st.Dev && pseudoFS(int(d.Fd()), n)) {
				continue
			}
			sub, err := openEntry(int(d.Fd()), n, unix.O_DIRECTORY)
			if err != nil {
				continue
			}
			err = wt.addTree(sub, child, depth+1, found)
			sub.Close()
			if err != nil {
				return err
			}
		}
		if rerr != nil {
			return nil // io.EOF, or a directory that went meanwhile
		}
	}
}

// pseudoFS reports whether the directory n of dfd is the root of a kernel
// filesystem (proc, sysfs, cgroups...) a recursive watch does not descend
// into: they are large, change on their own and report no writes.
func pseudoFS(dfd int, n string) bool {
	f, err := openEntry(dfd, n, unix.O_DIRECTORY)
	if err != nil {
		return true
	}
	defer f.Close()
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &sfs); err != nil {
		return true
	}
	switch sfs.Type {
	case unix.PROC_SUPER_MAGIC, unix.SYSFS_MAGIC, unix.CGROUP_SUPER_MAGIC, unix.CGROUP2_SUPER_MAGIC,
		unix.DEVPTS_SUPER_MAGIC, unix.TRACEFS_MAGIC, unix.DEBUGFS_MAGIC, unix.SECURITYFS_MAGIC, unix.BPF_FS_MAGIC:
		return true
	}
	return false
}

// openBelow opens the directory rel below top without following any
// symlink on the way: a directory replaced by a link since its event is
// not watched.
func openBelow(top *os.File, rel string) (*os.File, error) {
	how := unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_NONBLOCK,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	fd, err := unix.Openat2(int(top.Fd()), rel, &how)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), path.Base(rel)), nil
}
