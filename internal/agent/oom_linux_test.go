//go:build linux

package agent

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParseOOMKills(t *testing.T) {
	tests := []struct {
		name string
		data string
		want int64
		ok   bool
	}{
		{"v2 memory.events", "low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\noom_group_kill 0\n", 2, true},
		{"v1 memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 7\n", 7, true},
		{"no final newline", "oom 1\noom_kill 41", 41, true},
		{"no counter", "oom_kill_disable 0\nunder_oom 0\n", 0, false},
		{"not a number", "oom_kill many\n", 0, false},
		{"empty", "", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseOOMKills([]byte(tt.data))
			if got != tt.want || ok != tt.ok {
				t.Errorf("parseOOMKills(%q) = %d, %v; want %d, %v", tt.data, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// The counter file is found when it appears, read again in place on every
// call (the kernel rewrites it, it is never replaced), and v2's file wins
// over v1's.
func TestOOMCounter(t *testing.T) {
	root := t.TempDir()
	o := newOOMCounter(root)
	t.Cleanup(o.close)
	if n, ok := o.read(); ok {
		t.Fatalf("no cgroup files: read %d, want none", n)
	}
	if err := os.Mkdir(filepath.Join(root, "memory"), 0o755); err != nil {
		t.Fatal(err)
	}
	v1 := filepath.Join(root, "memory", "memory.oom_control")
	write := func(path, data string) {
		t.Helper()
		// In place, as cgroupfs: the open file sees the new content.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(data); err != nil {
			t.Fatal(err)
		}
	}
	write(v1, "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
	if n, ok := o.read(); !ok || n != 1 {
		t.Fatalf("v1 file: read %d, %v; want 1", n, ok)
	}
	write(v1, "oom_kill_disable 0\nunder_oom 0\noom_kill 12\n")
	if n, ok := o.read(); !ok || n != 12 {
		t.Fatalf("v1 file rewritten: read %d, %v; want 12", n, ok)
	}

	both := t.TempDir()
	if err := os.Mkdir(filepath.Join(both, "memory"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(filepath.Join(both, "memory", "memory.oom_control"), "oom_kill 5\n")
	write(filepath.Join(both, "memory.events"), "oom 3\noom_kill 3\n")
	o2 := newOOMCounter(both)
	t.Cleanup(o2.close)
	if n, ok := o2.read(); !ok || n != 3 {
		t.Fatalf("v1 and v2 files: read %d, %v; want v2's 3", n, ok)
	}
}
