package runtimetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/leakcheck"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// defaultRes is small enough for many parallel sandboxes on a 2-core box.
var defaultRes = sandbox.Resources{VCPUs: 1, MemoryMB: 256, PIDs: 256}

// box is one sandbox under test.
type box struct {
	t  *testing.T
	d  runtime.Driver
	id string
	c  *agent.Client
}

// newID returns an id unique across concurrent test processes: cgroup
// names are global on the host.
func newID(prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "rt-" + prefix + "-" + hex.EncodeToString(b[:])
}

// newBox creates a sandbox with a fresh driver; it is destroyed, and checked
// for leaks, when the test ends.
func newBox(t *testing.T, newDriver func(t *testing.T) runtime.Driver, name string, res sandbox.Resources) *box {
	t.Helper()
	d := newDriver(t)
	return createBox(t, d, name, res)
}

func createBox(t *testing.T, d runtime.Driver, name string, res sandbox.Resources) *box {
	t.Helper()
	return createBoxSpec(t, d, name, runtime.Spec{Image: "host", Resources: res})
}

// createBoxSpec is createBox with more of the spec; its ID is made here.
func createBoxSpec(t *testing.T, d runtime.Driver, name string, spec runtime.Spec) *box {
	t.Helper()
	return createBoxWithID(t, d, newID(name), spec)
}

// createBoxWithID is createBoxSpec for an id the test made (newID) because
// something had to be prepared for it first.
func createBoxWithID(t *testing.T, d runtime.Driver, id string, spec runtime.Spec) *box {
	t.Helper()
	// Registered before Destroy, so it runs after it.
	leakcheck.Check(t, leakcheck.Scope{IDs: []string{id}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	spec.ID = id
	c, err := d.Create(ctx, spec)
	if err != nil {
		t.Fatalf("create %s: %v", id, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := d.Destroy(ctx, id); err != nil {
			t.Errorf("destroy %s: %v", id, err)
		}
	})
	return &box{t: t, d: d, id: id, c: c}
}

// result is a finished command with its output.
type result struct {
	agent.Command
	Stdout, Stderr string
}

func (r result) exitCode() int {
	if r.ExitCode == nil {
		return -1
	}
	return *r.ExitCode
}

// run starts a command and collects its output until it exits.
func (b *box) run(ctx context.Context, req agent.CommandRequest) result {
	b.t.Helper()
	res, err := runCmd(ctx, b.c, req)
	if err != nil {
		b.t.Fatalf("run %s %q: %v", req.Cmd, req.Args, err)
	}
	return res
}

// start starts a command as the user and leaves it running; the sandbox's
// destruction ends it.
func (b *box) start(cmd string, args ...string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := b.c.Start(ctx, agent.CommandRequest{Cmd: cmd, Args: args}); err != nil {
		b.t.Fatalf("start %s: %v", cmd, err)
	}
}

// sh runs a shell snippet as the user (or root with sudo).
func (b *box) sh(script string, sudo bool) result {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return b.run(ctx, agent.CommandRequest{Cmd: "sh", Args: []string{"-c", script}, Sudo: sudo})
}

func runCmd(ctx context.Context, c *agent.Client, req agent.CommandRequest) (result, error) {
	cmd, err := c.Start(ctx, req)
	if err != nil {
		return result{}, err
	}
	out, err := c.Output(ctx, cmd.ID, 0, true)
	if err != nil {
		return result{}, err
	}
	defer out.Close()
	var stdout, stderr bytes.Buffer
	var final agent.Command
	for {
		f, err := out.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return result{}, err
		}
		switch f.Kind {
		case agent.FrameStdout:
			stdout.Write(f.Data)
		case agent.FrameStderr:
			stderr.Write(f.Data)
		case agent.FrameExit:
			if err := json.Unmarshal(f.Data, &final); err != nil {
				return result{}, err
			}
		}
	}
	if final.ID == "" {
		// The stream ended without an exit frame: ask for the final state.
		if final, err = c.Wait(ctx, cmd.ID); err != nil {
			return result{}, err
		}
	}
	return result{Command: final, Stdout: stdout.String(), Stderr: stderr.String()}, nil
}

// mustOK fails unless the command exited 0.
func (r result) mustOK(t *testing.T) result {
	t.Helper()
	if r.Status != agent.StatusExited || r.exitCode() != 0 {
		t.Fatalf("command %s %q: status %s exit %d error %q\nstdout: %s\nstderr: %s",
			r.Cmd, r.Args, r.Status, r.exitCode(), r.Error, clip(r.Stdout), clip(r.Stderr))
	}
	return r
}

func clip(s string) string {
	if len(s) > 2000 {
		return s[:2000] + "..."
	}
	return s
}

func lines(s string) []string { return strings.Fields(strings.TrimSpace(s)) }
