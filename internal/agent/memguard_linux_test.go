//go:build linux

package agent

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestMemGuard: over the limit, the guard kills the process with the
// largest resident set (never the agent or PID 1) and counts it; under the
// limit it kills nothing.
func TestMemGuard(t *testing.T) {
	for _, tc := range []struct {
		name   string
		usage  string
		want   int
		killed bool
	}{
		{"under the limit", "1000\n", 0, false},
		{"at the limit", "4096\n", 0, false},
		{"over the limit", "4097\n", 42, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			write := func(p, s string) {
				t.Helper()
				if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, p), []byte(s), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			write("cg/memory.current", tc.usage)
			write("proc/1/statm", "100 9000 0 0 0 0 0\n") // PID 1: never
			write("proc/7/statm", "100 8000 0 0 0 0 0\n") // the agent itself: never
			write("proc/42/statm", "100 500 0 0 0 0 0\n") // the biggest of the rest
			write("proc/43/statm", "100 20 0 0 0 0 0\n")
			write("proc/self/statm", "100 9999 0 0 0 0 0\n") // not a pid
			g, err := newMemGuard(filepath.Join(dir, "cg"), 4096)
			if err != nil {
				t.Fatal(err)
			}
			g.proc, g.self, g.every = filepath.Join(dir, "proc"), 7, time.Millisecond
			var mu sync.Mutex
			var victims []int
			g.victim = func(pid int) error {
				mu.Lock()
				defer mu.Unlock()
				victims = append(victims, pid)
				return nil
			}
			done := make(chan struct{})
			stopped := make(chan struct{})
			go func() {
				defer close(stopped)
				g.run(done, func(string, ...any) {})
			}()
			deadline := time.Now().Add(5 * time.Second)
			for tc.killed && g.kills.Load() == 0 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if !tc.killed {
				time.Sleep(50 * time.Millisecond)
			}
			close(done)
			<-stopped
			mu.Lock()
			defer mu.Unlock()
			if !tc.killed {
				if len(victims) > 0 || g.kills.Load() != 0 {
					t.Fatalf("killed %v under the limit", victims)
				}
				return
			}
			if len(victims) == 0 || victims[0] != tc.want || g.kills.Load() < 1 {
				t.Fatalf("victims %v (%d kills), want %d first", victims, g.kills.Load(), tc.want)
			}
		})
	}
}
