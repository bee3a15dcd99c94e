package spawn

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/runc/libcontainer/configs"

	"github.com/paddock-dev/paddock/internal/runtime/agentbin"
)

func helperBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds paddock-init")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p, err := agentbin.InitPath(ctx, filepath.Join(os.TempDir(), "paddock-test-agent"))
	if err != nil {
		t.Skipf("no paddock-init: %v", err)
	}
	return p
}

// stdio is a pipe's write end for a request's stdout and stderr.
func stdio(t *testing.T) *os.File {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return w
}

// A request the helper refuses comes back as an error; a helper that died
// is replaced on the next request; after Close nothing starts one again.
func TestHelperAnswersAndRestarts(t *testing.T) {
	c := NewClient(helperBinary(t))
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	// An invalid id: libcontainer refuses it before touching anything.
	bad := Request{StateDir: t.TempDir(), ID: "../escape", Config: &configs.Config{}, Args: []string{"/x"}}
	out := stdio(t)
	if _, err := c.Start(ctx, bad, out, out); err == nil || !strings.Contains(err.Error(), "libcontainer") {
		t.Fatalf("bad request: %v, want libcontainer's refusal", err)
	}
	c.mu.Lock()
	first := c.cmd.Process
	c.mu.Unlock()
	if err := first.Kill(); err != nil {
		t.Fatal(err)
	}
	// The request after the death may still meet the dead helper's socket;
	// the one after it gets a new helper.
	var err error
	for range 3 {
		_, err = c.Start(ctx, bad, out, out)
		if err != nil && strings.Contains(err.Error(), "libcontainer") {
			break
		}
	}
	if err == nil || !strings.Contains(err.Error(), "libcontainer") {
		t.Fatalf("after the helper died: %v, want a new helper's answer", err)
	}
	c.mu.Lock()
	second := c.cmd.Process
	c.mu.Unlock()
	if second.Pid == first.Pid {
		t.Error("the dead helper was not replaced")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Start(ctx, bad, out, out); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("after Close: %v, want closed", err)
	}
	// The helper exits once its socket closed.
	done := make(chan struct{})
	go func() {
		for {
			if second.Signal(nil) != nil {
				close(done)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Error("helper still runs 10 s after Close")
	}
}
