//go:build linux

package agent

import (
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
