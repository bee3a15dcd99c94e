package agentbin

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestEnvOverride(t *testing.T) {
	p := filepath.Join(t.TempDir(), "agent")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvVar, p)
	got, err := Path(context.Background(), "")
	if err != nil || got != p {
		t.Fatalf("Path = %q, %v; want %q", got, err, p)
	}
	t.Setenv(EnvVar, filepath.Join(t.TempDir(), "missing"))
	if _, err := Path(context.Background(), ""); err == nil {
		t.Fatal("a missing $PADDOCK_AGENT was accepted")
	}
}

func TestBuildFromSource(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the agent")
	}
	t.Setenv(EnvVar, "")
	if _, err := moduleRoot(agentBinary); err != nil {
		t.Skipf("no source tree: %v", err)
	}
	cache := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// Concurrent callers share one build.
	var wg sync.WaitGroup
	paths := make([]string, 4)
	errs := make([]error, 4)
	for i := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			paths[i], errs[i] = Path(ctx, cache)
		}()
	}
	wg.Wait()
	for i := range paths {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if paths[i] != paths[0] {
			t.Errorf("callers got different paths: %v", paths)
		}
	}
	if !strings.HasPrefix(filepath.Base(paths[0]), "paddock-agent-") {
		t.Errorf("path %s is not content-addressed", paths[0])
	}
	fi, err := os.Stat(paths[0])
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("mode %v, %v", fi.Mode(), err)
	}
	entries, _ := os.ReadDir(cache)
	if len(entries) != 1 {
		t.Errorf("cache holds %d entries, want 1 (no temp files left)", len(entries))
	}
}

// TestBuilderGivesUp: the caller that runs a build gives up half-way; one
// waiting on it builds again and gets the binary.
func TestBuilderGivesUp(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the agent")
	}
	t.Setenv(EnvVar, "")
	if _, err := moduleRoot(agentBinary); err != nil {
		t.Skipf("no source tree: %v", err)
	}
	cache := t.TempDir()
	first, cancel := context.WithCancel(context.Background())
	firstErr := make(chan error, 1)
	go func() {
		_, err := Path(first, cache)
		firstErr <- err
	}()
	// The first caller holds the build by now, or the second one builds:
	// either way the second must get the binary.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		buildsMu.Lock()
		_, building := builds[filepath.Clean(cache)+"\x00"+agentBinary.name]
		buildsMu.Unlock()
		if building || time.Now().After(deadline) {
			break
		}
	}
	ctx, stop := context.WithTimeout(context.Background(), 3*time.Minute)
	defer stop()
	second := make(chan error, 1)
	var path string
	go func() {
		var err error
		path, err = Path(ctx, cache)
		second <- err
	}()
	time.Sleep(100 * time.Millisecond)
	cancel()
	if err := <-firstErr; err == nil {
		t.Log("the first build finished before it was cancelled")
	}
	if err := <-second; err != nil {
		t.Fatalf("the waiting caller failed with its builder: %v", err)
	}
	if !strings.HasPrefix(filepath.Base(path), "paddock-agent-") {
		t.Errorf("path %s", path)
	}
}

// TestNoGoroutineOutlivesPath: a caller that gives up leaves no build
// running behind it.
func TestNoGoroutineOutlivesPath(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the agent")
	}
	t.Setenv(EnvVar, "")
	if _, err := moduleRoot(agentBinary); err != nil {
		t.Skipf("no source tree: %v", err)
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := Path(ctx, t.TempDir()); err == nil {
		t.Log("the build finished within 50ms")
	}
}

// TestInitFromSource: paddock-init builds with cgo, content-addressed, and
// apart from the agent in the same cache dir.
func TestInitFromSource(t *testing.T) {
	if testing.Short() {
		t.Skip("builds paddock-init")
	}
	t.Setenv(InitEnvVar, "")
	if _, err := moduleRoot(initBinary); err != nil {
		t.Skipf("no source tree: %v", err)
	}
	cache := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p, err := InitPath(ctx, cache)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(filepath.Base(p), "paddock-init-") {
		t.Errorf("path %s is not content-addressed", p)
	}
	t.Setenv(InitEnvVar, p)
	if got, err := InitPath(ctx, ""); err != nil || got != p {
		t.Errorf("with $%s: %q, %v", InitEnvVar, got, err)
	}
}
