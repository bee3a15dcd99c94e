//go:build linux

package agent

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
)

// handleStats answers the cgroup's figures and the network namespace's
// byte counts less the payload of the agent's own TCP connections (a
// Pod's agent is reached over its network: commands' output and files
// would otherwise count as the sandbox's traffic, which they are not on a
// runc sandbox, whose agent is reached over a unix socket). The headers
// of the agent's packets stay counted: a few percent of its traffic.
func (s *Server) handleStats(w http.ResponseWriter, r *http.Request) {
	st := readCgroupStats(s.cfg.CgroupRoot)
	rx, tx := readNetDev(s.cfg.ProcNet)
	// A write not yet on the wire is already in own: the difference may
	// dip for a moment (the meter keeps the highest figure it saw).
	st.NetworkRxBytes = rx - min(rx, s.own.rx.Load())
	st.NetworkTxBytes = tx - min(tx, s.own.tx.Load())
	writeJSON(w, http.StatusOK, st)
}

// ownTraffic counts the payload bytes of a listener's TCP connections:
// rx what the agent read, tx what it wrote.
type ownTraffic struct {
	rx, tx atomic.Uint64
}

// listener wraps ln, if it is a TCP listener, so that its connections
// count their bytes in o; a unix socket's are not on any interface.
func (o *ownTraffic) listener(ln net.Listener) net.Listener {
	if _, ok := ln.Addr().(*net.TCPAddr); !ok {
		return ln
	}
	return countingListener{Listener: ln, own: o}
}

type countingListener struct {
	net.Listener
	own *ownTraffic
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, own: l.own}, nil
}

// countingConn counts what passes through it; CloseWrite is passed on,
// as net/http half-closes a TCP connection before closing it.
type countingConn struct {
	net.Conn
	own *ownTraffic
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.own.rx.Add(uint64(max(n, 0)))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.own.tx.Add(uint64(max(n, 0)))
	return n, err
}

func (c *countingConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// readNetDev sums the byte counters of every interface but loopback in
// procNet's dev (/proc/net/dev: the counters of the reading process's
// network namespace, the sandbox's own), zero if it cannot be read. The
// kernel keeps these counters: nothing in the sandbox without
// CAP_NET_ADMIN (which it never has) resets them: it moves them only by
// sending and receiving.
func readNetDev(procNet string) (rx, tx uint64) {
	f, err := os.Open(filepath.Join(procNet, "dev"))
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	// Two header lines, then "  name: rx_bytes packets errs drop fifo
	// frame compressed multicast tx_bytes ...": rx_bytes is the first
	// field after the colon, tx_bytes the ninth.
	sc := bufio.NewScanner(io.LimitReader(f, netDevMax))
	for sc.Scan() {
		name, counters, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(name) == "lo" {
			continue
		}
		fields := strings.Fields(counters)
		if len(fields) < 9 {
			continue
		}
		r, rerr := strconv.ParseUint(fields[0], 10, 64)
		t, terr := strconv.ParseUint(fields[8], 10, 64)
		if rerr == nil && terr == nil {
			rx, tx = rx+r, tx+t
		}
	}
	return rx, tx
}

// netDevMax bounds the read of /proc/net/dev: a sandbox may create
// interfaces of its own only with CAP_NET_ADMIN, so a few lines are
// expected; 1 MiB is thousands.
const netDevMax = 1 << 20

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
