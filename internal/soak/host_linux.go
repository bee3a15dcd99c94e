package soak

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/paddock-dev/paddock/internal/leakcheck"
)

// ProcHost reads the server's figures from /proc and the host's leftovers
// through internal/leakcheck. The server must run on this host.
type ProcHost struct {
	pid   int
	links []string // sandbox veths ("pd…") when the run began
}

var _ Host = (*ProcHost)(nil)

// NewProcHost watches the server process pid.
func NewProcHost(pid int) (*ProcHost, error) {
	h := &ProcHost{pid: pid, links: vethNames()}
	if _, err := h.Sample(); err != nil {
		return nil, err
	}
	return h, nil
}

// Sample implements Host.
func (h *ProcHost) Sample() (Process, error) {
	dir := filepath.Join("/proc", strconv.Itoa(h.pid))
	status, err := os.ReadFile(filepath.Join(dir, "status"))
	if err != nil {
		return Process{}, fmt.Errorf("server process %d: %w", h.pid, err)
	}
	var p Process
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		switch k {
		case "VmRSS": // "123456 kB"
			n, _ := strconv.ParseInt(f[0], 10, 64)
			p.RSSBytes = n << 10
		case "RssAnon":
			n, _ := strconv.ParseInt(f[0], 10, 64)
			p.RSSAnonBytes = n << 10
		case "Threads":
			p.Threads, _ = strconv.Atoi(f[0])
		}
	}
	fds, err := os.ReadDir(filepath.Join(dir, "fd"))
	if err != nil {
		return Process{}, fmt.Errorf("server process %d: %w", h.pid, err)
	}
	p.FDs = len(fds)
	p.FDKinds = map[string]int{}
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join(dir, "fd", fd.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		p.FDKinds[fdKind(link)]++
	}
	return p, nil
}

// fdKind classifies an open file by its /proc/<pid>/fd link.
func fdKind(link string) string {
	switch {
	case strings.HasPrefix(link, "socket:"):
		return "socket"
	case strings.HasPrefix(link, "pipe:"):
		return "pipe"
	case link == "anon_inode:[pidfd]":
		return "pidfd"
	case strings.HasPrefix(link, "anon_inode:"):
		return "anon"
	}
	return "file"
}

// Leaks implements Host: mounts, cgroups and processes of the given
// sandboxes, and sandbox veths that were not there when the run began
// (host-wide: a sandbox someone else creates meanwhile counts too).
func (h *ProcHost) Leaks(ids []string) []string {
	var out []string
	if len(ids) > 0 {
		out = append(out, leakcheck.Snapshot(leakcheck.Scope{IDs: ids}).Entries...)
	}
	for _, l := range vethNames() {
		if !slices.Contains(h.links, l) {
			out = append(out, "link "+l)
		}
	}
	return out
}

// vethNames lists this namespace's interfaces named like the host ends of
// sandbox veths.
func vethNames() []string {
	ents, _ := os.ReadDir("/sys/class/net")
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "pd") {
			out = append(out, e.Name())
		}
	}
	return out
}

// ServerPID finds the process listening on addr (host:port) on this host:
// the TCP socket in LISTEN state on that port, then the process holding
// it. It fails for an address that is not this host's.
func ServerPID(addr string) (int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("port %q: %w", portStr, err)
	}
	if !isLocal(host) {
		return 0, fmt.Errorf("%s is not an address of this host: pass the server's pid", host)
	}
	var inodes []string
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		inodes = append(inodes, listeners(data, uint16(port))...)
	}
	if len(inodes) == 0 {
		return 0, fmt.Errorf("nothing listens on port %d here", port)
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fds, err := os.ReadDir(filepath.Join("/proc", p.Name(), "fd"))
		if err != nil {
			continue
		}
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join("/proc", p.Name(), "fd", fd.Name()))
			if err == nil && strings.HasPrefix(link, "socket:[") && slices.Contains(inodes, link[len("socket:["):len(link)-1]) {
				return pid, nil
			}
		}
	}
	return 0, errors.New("the process listening on port " + portStr + " is not visible")
}

// listeners returns the inodes of the sockets in LISTEN state on port in
// a /proc/net/tcp{,6} table.
func listeners(table []byte, port uint16) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(table))
	sc.Scan() // the header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
		if len(f) < 10 || f[3] != "0A" {
			continue
		}
		_, hexPort, ok := strings.Cut(f[1], ":")
		if !ok {
			continue
		}
		if p, err := strconv.ParseUint(hexPort, 16, 16); err == nil && uint16(p) == port {
			out = append(out, f[9])
		}
	}
	return out
}

// isLocal reports whether host names this machine: localhost, a loopback
// address, or an address of one of its interfaces.
func isLocal(host string) bool {
	if host == "localhost" || host == "" {
		return true
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	if a.IsLoopback() || a.IsUnspecified() {
		return true
	}
	addrs, _ := net.InterfaceAddrs()
	for _, ia := range addrs {
		if p, err := netip.ParsePrefix(ia.String()); err == nil && p.Addr().Unmap() == a.Unmap() {
			return true
		}
	}
	return false
}
