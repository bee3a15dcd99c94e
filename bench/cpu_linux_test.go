package bench

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// processCPU is the CPU time this process used, and that of the children
// it reaped (nsexec's short-lived stages when sandboxes start from here).
func processCPU() time.Duration {
	var self, children syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children)
	tv := func(t syscall.Timeval) time.Duration { return time.Duration(t.Nano()) }
	return tv(self.Utime) + tv(self.Stime) + tv(children.Utime) + tv(children.Stime)
}

// helperCPU is the CPU time of this process's paddock-init helpers (every
// thread's, from schedstat) and of the children they reaped; 0 without one.
func helperCPU() time.Duration {
	entries, _ := os.ReadDir("/proc")
	me := strconv.Itoa(os.Getpid())
	var total time.Duration
	for _, e := range entries {
		pid := e.Name()
		if pid[0] < '0' || pid[0] > '9' {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
		if err != nil {
			continue
		}
		open, end := bytes.IndexByte(stat, '('), bytes.LastIndexByte(stat, ')')
		if open < 0 || end < open {
			continue
		}
		f := strings.Fields(string(stat[end+1:]))
		// f[1] is the ppid; f[13], f[14] the reaped children's utime and stime.
		if len(f) < 15 || f[1] != me || !strings.HasPrefix(string(stat[open+1:end]), "paddock-init") {
			continue
		}
		cu, _ := strconv.ParseInt(f[13], 10, 64)
		cs, _ := strconv.ParseInt(f[14], 10, 64)
		total += time.Duration(cu+cs) * 10 * time.Millisecond // USER_HZ is 100 on Linux
		tasks, _ := os.ReadDir(filepath.Join("/proc", pid, "task"))
		for _, t := range tasks {
			ss, err := os.ReadFile(filepath.Join("/proc", pid, "task", t.Name(), "schedstat"))
			if err != nil {
				continue
			}
			if ns, err := strconv.ParseInt(strings.Fields(string(ss))[0], 10, 64); err == nil {
				total += time.Duration(ns)
			}
		}
	}
	return total
}
