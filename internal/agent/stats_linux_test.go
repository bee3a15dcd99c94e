//go:build linux

package agent

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

func TestReadCgroupStats(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  CgroupStats
	}{
		{"v2", map[string]string{
			"memory.current": "1048576\n", "memory.peak": "2097152\n", "pids.current": "7\n",
			"cpu.stat":      "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
			"memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n",
		}, CgroupStats{CPUUsageNs: 1_500_000, MemoryBytes: 1 << 20, MemoryPeak: 2 << 20, PIDs: 7, OOMKills: 2}},
		{"v1", map[string]string{
			"memory/memory.usage_in_bytes": "4096\n", "memory/memory.max_usage_in_bytes": "8192\n",
			"memory/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 5\n",
			"pids/pids.current":         "3\n", "cpu,cpuacct/cpuacct.usage": "123456789\n",
		}, CgroupStats{CPUUsageNs: 123456789, MemoryBytes: 4096, MemoryPeak: 8192, PIDs: 3, OOMKills: 5}},
		{"none", nil, CgroupStats{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for name, content := range tc.files {
				p := filepath.Join(root, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if got := readCgroupStats(root); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

const testNetDev = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  999999     100    0    0    0     0          0         0   999999     100    0    0    0     0       0          0
  eth0: 1048576     700    0    0    0     0          0         0    20480     300    0    0    0     0       0          0
 net1:      100       1    0    0    0     0          0         0      200       2    0    0    0     0       0          0
bad: 1 2 3
`

func TestReadNetDev(t *testing.T) {
	dev := testNetDev
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dev"), []byte(dev), 0o644); err != nil {
		t.Fatal(err)
	}
	if rx, tx := readNetDev(dir); rx != 1048676 || tx != 20680 {
		t.Errorf("readNetDev = rx %d tx %d, want 1048676 20680 (loopback and a short line left out)", rx, tx)
	}
	if rx, tx := readNetDev(t.TempDir()); rx != 0 || tx != 0 {
		t.Errorf("readNetDev without the file = %d %d, want 0 0", rx, tx)
	}
}

// TestStatsLeaveOutOwnTraffic: the agent's own TCP connections count
// their payload both ways, and the stats answer leaves it out of the
// namespace's figures (never below zero); a unix socket is not wrapped.
func TestStatsLeaveOutOwnTraffic(t *testing.T) {
	var own ownTraffic
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	counted := own.listener(ln)
	done := make(chan error, 1)
	go func() { // owned: ends with the one connection it accepts
		c, err := counted.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		buf := make([]byte, 100)
		if _, err := io.ReadFull(c, buf); err != nil {
			done <- err
			return
		}
		_, err = c.Write(make([]byte, 300))
		done <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 300)); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if rx, tx := own.rx.Load(), own.tx.Load(); rx != 100 || tx != 300 {
		t.Errorf("own traffic rx %d tx %d, want 100 300", rx, tx)
	}
	unix, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close()
	if own.listener(unix) != unix {
		t.Error("a unix listener was wrapped")
	}

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dev"), []byte(testNetDev), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &Server{cfg: ServerConfig{CgroupRoot: dir, ProcNet: dir}}
	stats := func() CgroupStats {
		t.Helper()
		rec := httptest.NewRecorder()
		s.handleStats(rec, httptest.NewRequest(http.MethodGet, "/v1/stats", nil))
		var st CgroupStats
		if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	s.own.rx.Store(76)
	s.own.tx.Store(680)
	if st := stats(); st.NetworkRxBytes != 1048600 || st.NetworkTxBytes != 20000 {
		t.Errorf("stats rx %d tx %d, want 1048600 20000 (the agent's own bytes left out)", st.NetworkRxBytes, st.NetworkTxBytes)
	}
	s.own.tx.Store(1 << 30)
	if st := stats(); st.NetworkTxBytes != 0 {
		t.Errorf("stats tx %d with more own bytes than the interfaces', want 0", st.NetworkTxBytes)
	}
}
