package agent

import (
	"os"
	"testing"
)

// threads is this process's thread count.
func threads(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Skipf("no /proc/self/task: %v", err)
	}
	return len(entries)
}

// TestSpareThreads: the threads SpareThreads holds stay after it returns,
// idle, for the runtime to use instead of making new ones.
func TestSpareThreads(t *testing.T) {
	const n = 32 // more than a test binary starts with
	SpareThreads(n)
	if got := threads(t); got < n+1 {
		t.Fatalf("%d threads after SpareThreads(%d), want at least %d", got, n, n+1)
	}
}
