//go:build linux

package agent

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
)

func (s *Server) handleStats(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, readCgroupStats(s.cfg.CgroupRoot))
}

// readCgroupStats reads the cgroup mounted at root (the sandbox's own, in
// its cgroup namespace or bound there by the runtime): cgroup v2 when
// root has memory.current, else v1's per-controller directories.
func readCgroupStats(root string) CgroupStats {
	var st CgroupStats
	read := func(name string) []byte {
		f, err := os.Open(filepath.Join(root, name))
		if err != nil {
			return nil
		}
		defer f.Close()
		buf := make([]byte, oomFileMax)
		n, _ := f.ReadAt(buf, 0)
		return bytes.TrimSpace(buf[:n])
	}
	num := func(name string) uint64 {
		n, _ := strconv.ParseUint(string(read(name)), 10, 64)
		return n
	}
	if _, err := os.Stat(filepath.Join(root, "memory.current")); err == nil {
		st.MemoryBytes = num("memory.current")
		st.MemoryPeak = num("memory.peak")
		st.PIDs = num("pids.current")
		st.CPUUsageNs = field(read("cpu.stat"), "usage_usec") * 1000
		st.OOMKills = field(read("memory.events"), "oom_kill")
		return st
	}
	st.MemoryBytes = num("memory/memory.usage_in_bytes")
	st.MemoryPeak = num("memory/memory.max_usage_in_bytes")
	st.PIDs = num("pids/pids.current")
	st.OOMKills = field(read("memory/memory.oom_control"), "oom_kill")
	for _, p := range []string{"cpuacct/cpuacct.usage", "cpu,cpuacct/cpuacct.usage"} {
		if n := num(p); n > 0 {
			st.CPUUsageNs = n
			break
		}
	}
	return st
}

// field is the value of the line "key N" in data, 0 without one.
func field(data []byte, key string) uint64 {
	for line := range bytes.Lines(data) {
		if v, ok := bytes.CutPrefix(line, []byte(key+" ")); ok {
			n, _ := strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 64)
			return n
		}
	}
	return 0
}
