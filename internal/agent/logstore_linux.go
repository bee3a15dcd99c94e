//go:build linux

package agent

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
)

// logStore keeps the output logs of every command as segment files in the
// state dir (a size-capped tmpfs inside the sandbox, so the pages count
// against the sandbox's memory, never the host's disk).
//
// A command's log is a sequence of frames at logical offsets that only
// grow. Its bytes live in segments of about segSize, each starting at a
// frame boundary. Two caps drop the oldest segments: maxCmd per command and
// maxTotal (page-rounded, as tmpfs counts) and maxFiles over all commands,
// oldest command first. A frame that cannot be stored (the tmpfs full of
// someone else's files) is dropped too. Dropped bytes keep their offsets:
// they are holes that readers skip with a FrameGap, so an offset, once
// handed out, always means the same place. The exit frame is kept in memory
// and never dropped: every reader learns how its command ended.
type logStore struct {
	dir      string
	maxCmd   int64
	maxTotal int64
	maxFiles int
	segSize  int64
	page     int64
	log      *slog.Logger

	mu    sync.Mutex
	used  int64     // guarded by mu: page-rounded bytes of every segment file
	files int       // guarded by mu: segment files on disk
	logs  []*cmdLog // guarded by mu: logs that may hold segments, by their first one
}

// segment is one file of a command's log: the frames in [base, base+size).
type segment struct {
	name string
	base int64
	size int64
}

func (g segment) end() int64 { return g.base + g.size }

// cmdLog is one command's log. Every field is guarded by logStore.mu.
type cmdLog struct {
	id      string
	segs    []segment // kept segments, oldest first
	tail    *os.File  // open for appends: the last of segs; nil between segments
	seq     int       // number of the next segment file
	kept    int64     // bytes in segs
	size    int64     // end of the output frames, dropped ones included
	exit    []byte    // the exit frame, once the command finished
	changed chan struct{}
	listed  bool // in logStore.logs
	warned  bool // a dropped frame was logged
}

// end is the offset past everything, the exit frame included.
func (l *cmdLog) end() int64 { return l.size + int64(len(l.exit)) }

func newLogStore(cfg ServerConfig) *logStore {
	// Eight segments per command: dropping one keeps 7/8 of the cap.
	seg := min(int64(1<<20), cfg.MaxLogBytes/8)
	return &logStore{
		dir:      cfg.StateDir,
		maxCmd:   cfg.MaxLogBytes,
		maxTotal: cfg.MaxLogTotalBytes,
		maxFiles: cfg.MaxLogFiles,
		segSize:  seg,
		page:     int64(os.Getpagesize()),
		log:      cfg.Logger,
	}
}

// newLog makes an empty log; it joins the eviction list with its first
// segment.
func (s *logStore) newLog(id string) *cmdLog {
	return &cmdLog{id: id, changed: make(chan struct{})}
}

func (s *logStore) pages(n int64) int64 { return (n + s.page - 1) / s.page * s.page }

func (s *logStore) wake(l *cmdLog) {
	close(l.changed)
	l.changed = make(chan struct{})
}

// append adds one frame to l, dropping old segments to make room, or the
// frame itself when there is none to make. Never blocks on readers.
func (s *logStore) append(l *cmdLog, frame []byte) {
	n := int64(len(frame))
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.wake(l)
	if l.exit != nil {
		return
	}
	start := l.size
	l.size += n // kept or dropped, the offsets move on
	if l.tail != nil && l.segs[len(l.segs)-1].size+n > s.segSize {
		s.closeTail(l)
	}
	for l.kept+n > s.maxCmd && s.dropOldest(l) {
	}
	for !s.fits(l, n) {
		if !s.dropAny() {
			s.dropped(l, n, errors.New("the sandbox's log space is held by running commands"))
			return
		}
	}
	if err := s.write(l, start, frame); err != nil {
		s.dropped(l, n, err)
	}
}

// fits reports whether n more bytes for l stay within the sandbox-wide
// caps.
func (s *logStore) fits(l *cmdLog, n int64) bool {
	if l.tail == nil {
		return s.files < s.maxFiles && s.used+s.pages(n) <= s.maxTotal
	}
	last := l.segs[len(l.segs)-1].size
	return s.used+s.pages(last+n)-s.pages(last) <= s.maxTotal
}

// write stores frame at offset start: at the end of the open segment, or
// in a new one.
func (s *logStore) write(l *cmdLog, start int64, frame []byte) error {
	n := int64(len(frame))
	if l.tail == nil {
		name := l.id + "." + strconv.Itoa(l.seq) + ".log"
		f, err := os.OpenFile(filepath.Join(s.dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("create command log: %w", err)
		}
		l.seq++
		l.tail = f
		l.segs = append(l.segs, segment{name: name, base: start})
		s.files++
		if !l.listed {
			s.logs, l.listed = append(s.logs, l), true
		}
	}
	g := &l.segs[len(l.segs)-1]
	if _, err := l.tail.Write(frame); err != nil {
		// A partial frame would corrupt the segment: cut it back and
		// start a new segment after the hole.
		_ = l.tail.Truncate(g.size)
		s.closeTail(l)
		if g.size == 0 {
			s.remove(l, len(l.segs)-1)
		}
		return fmt.Errorf("append to command log: %w", err)
	}
	s.used += s.pages(g.size+n) - s.pages(g.size)
	g.size += n
	l.kept += n
	return nil
}

func (s *logStore) dropped(l *cmdLog, n int64, why error) {
	if !l.warned {
		l.warned = true
		s.log.Warn("command output dropped", "command", l.id, "bytes", n, "err", why)
	}
}

func (s *logStore) closeTail(l *cmdLog) {
	if l.tail != nil {
		l.tail.Close()
		l.tail = nil
	}
}

// dropOldest removes l's oldest segment unless it is the one being
// written; it reports whether it removed one.
func (s *logStore) dropOldest(l *cmdLog) bool {
	if len(l.segs) == 0 || (len(l.segs) == 1 && l.tail != nil) {
		return false
	}
	s.remove(l, 0)
	return true
}

// dropAny removes the oldest segment of the oldest command that has one
// to spare, and forgets logs with nothing left to drop.
func (s *logStore) dropAny() bool {
	for i := 0; i < len(s.logs); i++ {
		l := s.logs[i]
		if s.dropOldest(l) {
			return true
		}
		if len(l.segs) == 0 && l.exit != nil {
			s.logs, l.listed = append(s.logs[:i], s.logs[i+1:]...), false // nothing left, ever
			i--
		}
	}
	return false
}

// remove deletes segment i of l. A reader that opened it keeps reading
// the unlinked file.
func (s *logStore) remove(l *cmdLog, i int) {
	g := l.segs[i]
	if err := os.Remove(filepath.Join(s.dir, g.name)); err != nil {
		s.log.Warn("remove command log segment", "command", l.id, "err", err)
	}
	s.used -= s.pages(g.size)
	s.files--
	l.kept -= g.size
	l.segs = append(l.segs[:i], l.segs[i+1:]...)
}

// finish stores the exit frame and closes the open segment.
func (s *logStore) finish(l *cmdLog, exit []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeTail(l)
	l.exit = exit
	s.wake(l)
	if l.listed && len(l.segs) == 0 {
		s.unlist(l)
	}
}

// unlist drops l from the eviction list, whose length the file cap and
// the running commands bound.
func (s *logStore) unlist(l *cmdLog) {
	for i := len(s.logs) - 1; i >= 0; i-- {
		if s.logs[i] == l {
			s.logs, l.listed = append(s.logs[:i], s.logs[i+1:]...), false
			return
		}
	}
}

// close closes every open segment (the agent is stopping).
func (s *logStore) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.logs {
		s.closeTail(l)
	}
}

// readStep is what a reader at some offset does next.
type readStep struct {
	gapTo   int64         // > 0: skip to this offset with a FrameGap
	seg     string        // a segment file to read
	from    int64         // ... from this offset (a frame boundary in it)
	to      int64         // ... to this one
	segBase int64         // ... which starts at this offset
	exit    []byte        // the exit frame, to send and stop
	done    bool          // nothing more: the end of a finished or unfollowed log
	changed chan struct{} // closed at the next change, when nothing is there yet
}

// next says what a reader at off does next.
func (s *logStore) next(l *cmdLog, off int64) readStep {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range l.segs {
		if g.end() <= off {
			continue
		}
		if off < g.base {
			return readStep{gapTo: g.base}
		}
		return readStep{seg: g.name, from: off, to: g.end(), segBase: g.base}
	}
	if off < l.size {
		return readStep{gapTo: l.size}
	}
	if l.exit != nil {
		if off == l.size {
			return readStep{exit: l.exit}
		}
		return readStep{done: true}
	}
	return readStep{changed: l.changed}
}

// validOffset reports whether a reader may start at off: a frame boundary
// of a kept segment, the end of the output or of the log, or an offset
// whose bytes were dropped (the reader skips to what is kept).
// outputEnd is the offset past the output written so far (before the
// exit frame): where a reader that wants only what comes next starts.
func (s *logStore) outputEnd(l *cmdLog) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return l.size
}

func (s *logStore) validOffset(l *cmdLog, off int64) (bool, error) {
	s.mu.Lock()
	end, size := l.end(), l.size
	var seg *segment
	for _, g := range l.segs {
		if g.base <= off && off < g.end() {
			seg = &g
			break
		}
	}
	s.mu.Unlock()
	switch {
	case off < 0 || off > end:
		return false, nil
	case off == end || off == size:
		return true, nil
	case off > size:
		return false, nil // inside the exit frame
	case seg == nil || off == seg.base:
		return true, nil
	}
	f, err := os.Open(filepath.Join(s.dir, seg.name))
	if errors.Is(err, os.ErrNotExist) {
		return true, nil // dropped meanwhile: the reader skips it
	}
	if err != nil {
		return false, fmt.Errorf("open command log: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(io.NewSectionReader(f, 0, off-seg.base), 64<<10)
	pos := seg.base
	var hdr [frameHeader]byte
	for pos < off {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return false, nil // the offset cuts a frame header
		}
		k := int64(binary.BigEndian.Uint32(hdr[1:]))
		if _, err := br.Discard(int(k)); err != nil {
			return false, nil
		}
		pos += frameHeader + k
	}
	return pos == off, nil
}
