//go:build linux

package agent

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// memGuard is the agent's own OOM killer, for a kernel that enforces no
// memory limit on the sandbox's processes (gVisor's sentry: its memory
// cgroup files are accounting only, and the host cgroup that bounds the
// sentry would kill the whole sandbox). While the sandbox's memory
// (the cgroup's memory.current) is over the limit, it SIGKILLs the
// process with the largest resident set, as the kernel's OOM killer
// would, and counts the kill with the kernel's (Server.oomKills), so the
// command reports OOMKilled. Polling leaves a window of one interval: the
// driver keeps the host limit above this one by the sentry's overhead
// and that slack.
type memGuard struct {
	limit  int64
	every  time.Duration
	usage  *os.File // the cgroup's memory.current
	proc   string   // the sandbox's /proc
	self   int      // this process: never a victim
	kills  atomic.Int64
	victim func(pid int) error // unix.Kill(pid, SIGKILL); tests replace it
}

// memGuardEvery is how often the guard reads the usage.
const memGuardEvery = 5 * time.Millisecond

// newMemGuard opens root's memory.current; the limit is in bytes.
func newMemGuard(root string, limit int64) (*memGuard, error) {
	f, err := os.Open(filepath.Join(root, "memory.current"))
	if err != nil {
		return nil, err
	}
	return &memGuard{limit: limit, every: memGuardEvery, usage: f, proc: "/proc", self: os.Getpid(),
		victim: func(pid int) error { return unix.Kill(pid, unix.SIGKILL) }}, nil
}

// run polls until done is closed, then closes the usage file.
func (g *memGuard) run(done <-chan struct{}, log func(msg string, args ...any)) {
	defer g.usage.Close()
	t := time.NewTicker(g.every)
	defer t.Stop()
	buf := make([]byte, 64)
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		n, err := g.usage.ReadAt(buf, 0)
		if n == 0 && err != nil {
			continue
		}
		used, err := strconv.ParseInt(string(bytes.TrimSpace(buf[:n])), 10, 64)
		if err != nil || used <= g.limit {
			continue
		}
		pid, rss := g.biggest()
		if pid <= 0 {
			continue
		}
		if err := g.victim(pid); err != nil {
			continue
		}
		g.kills.Add(1)
		log("memory over the limit: killed the biggest process", "pid", pid, "rss", rss, "usage", used, "limit", g.limit)
		// Give the sentry a moment to free the victim's memory before the
		// next reading could pick another.
		time.Sleep(50 * time.Millisecond)
	}
}

// biggest returns the process with the largest resident set, other than
// the agent, and that set in bytes.
func (g *memGuard) biggest() (int, int64) {
	entries, err := os.ReadDir(g.proc)
	if err != nil {
		return 0, 0
	}
	page := int64(os.Getpagesize())
	best, bestRSS := 0, int64(-1)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == g.self || pid == 1 {
			continue
		}
		data, err := os.ReadFile(filepath.Join(g.proc, e.Name(), "statm"))
		if err != nil {
			continue
		}
		f := bytes.Fields(data)
		if len(f) < 2 {
			continue
		}
		pages, err := strconv.ParseInt(string(f[1]), 10, 64)
		if err == nil && pages*page > bestRSS {
			best, bestRSS = pid, pages*page
		}
	}
	return best, bestRSS
}
