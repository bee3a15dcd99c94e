//go:build linux

package agent

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"sync"
)

// oomCounter reads the sandbox cgroup's OOM kill counter, twice per
// command (at its start and its end). The file that has it (v2's
// memory.events, else v1's memory/memory.oom_control) stays open once
// found and is read with one pread each time: opening it again per read
// cost two failed and one good open, a stat and a close (about 0.3 ms of
// a command's round trip on the 2-vCPU VM, `perf record` of the agent).
// A file not found yet is looked for again at the next read, so a cgroup
// mounted later is still seen.
type oomCounter struct {
	root string // ServerConfig.CgroupRoot

	mu  sync.Mutex
	f   *os.File // guarded by mu: the open counter file; nil until found
	buf []byte   // guarded by mu: the last read
}

// oomFiles are where the counter is, in the order they are tried.
var oomFiles = []string{"memory.events", "memory/memory.oom_control"}

// oomFileMax bounds one read: both files are a few short lines.
const oomFileMax = 4096

func newOOMCounter(root string) *oomCounter {
	return &oomCounter{root: root, buf: make([]byte, oomFileMax)}
}

// read returns the counter, or false when no file has it.
func (o *oomCounter) read() (int64, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.f == nil {
		for _, name := range oomFiles {
			f, err := os.Open(filepath.Join(o.root, name))
			if err != nil {
				continue
			}
			if n, ok := o.readFrom(f); ok {
				o.f = f
				return n, true
			}
			f.Close()
		}
		return 0, false
	}
	return o.readFrom(o.f)
}

// readFrom reads f from its start and parses its oom_kill line.
func (o *oomCounter) readFrom(f *os.File) (int64, bool) {
	n, err := f.ReadAt(o.buf, 0)
	if n == 0 && err != nil {
		return 0, false
	}
	return parseOOMKills(o.buf[:n])
}

// parseOOMKills finds "oom_kill N" among the lines of data.
func parseOOMKills(data []byte) (int64, bool) {
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if v, ok := bytes.CutPrefix(line, []byte("oom_kill ")); ok {
			n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

func (o *oomCounter) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.f != nil {
		o.f.Close()
		o.f = nil
	}
}

// ownOOMScoreAdj reads this process's oom_score_adj; 0 when unreadable.
func ownOOMScoreAdj() int {
	data, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(string(bytes.TrimSpace(data)))
	return n
}
