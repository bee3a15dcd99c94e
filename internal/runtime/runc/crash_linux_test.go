package runc

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/runc/libcontainer"

	"github.com/paddock-dev/paddock/internal/leakcheck"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// TestReadoptFrozen: a paddock killed while a snapshot copies leaves the
// sandbox frozen; the next driver's List thaws it, so it is re-adopted
// running instead of found lost (its frozen agent cannot answer a ping).
func TestReadoptFrozen(t *testing.T) {
	dataDir := t.TempDir()
	leakcheck.Check(t, leakcheck.Scope{Dirs: []string{dataDir}})
	ctx := context.Background()
	d1 := newDriver(t, dataDir)
	id := "rt-frozen-" + fmt.Sprint(time.Now().UnixNano()%1e6)
	leakcheck.Check(t, leakcheck.Scope{IDs: []string{id}})
	if _, err := d1.Create(ctx, runtime.Spec{ID: id, Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 128, PIDs: 64}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d1.Destroy(ctx, id) })
	// What Snapshot does before its copy, and a crash stops it from undoing.
	c, err := d1.load(id)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Pause(); err != nil {
		t.Skipf("cannot freeze a sandbox here: %v", err)
	}
	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}

	d2 := newDriver(t, dataDir)
	list, err := d2.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || !list[0].Running {
		t.Fatalf("List after a crash mid-snapshot: %+v, want the sandbox running", list)
	}
	if st, err := c.Status(); err != nil || st != libcontainer.Running {
		t.Errorf("sandbox status %v %v, want running", st, err)
	}
	ag, err := d2.Agent(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := ag.Ping(pctx); err != nil {
		t.Errorf("agent of the thawed sandbox: %v", err)
	}
	if err := d2.Destroy(ctx, id); err != nil {
		t.Fatal(err)
	}
}

// TestAgentDiesBeforeAnswering: an agent that exits before it serves fails
// the create with that said, its container loaded from its state only
// then (a create whose agent answers never reads it back), and leaves
// nothing behind.
func TestAgentDiesBeforeAnswering(t *testing.T) {
	dataDir := t.TempDir()
	leakcheck.Check(t, leakcheck.Scope{Dirs: []string{dataDir}})
	testAgent(t) // skips where sandboxes cannot run
	// The host image binds the host's /usr, so Debian's false runs inside.
	d, err := New(Config{DataDir: dataDir, AgentPath: "/usr/bin/false", InitPath: testInit(t), Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	id := "rt-noagent-" + fmt.Sprint(time.Now().UnixNano()%1e6)
	leakcheck.Check(t, leakcheck.Scope{IDs: []string{id}})
	_, err = d.Create(context.Background(), runtime.Spec{ID: id, Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 128, PIDs: 64}})
	if err == nil || !strings.Contains(err.Error(), "agent exited before answering") {
		t.Fatalf("create with an agent that exits at once: %v, want it to say the agent exited", err)
	}
	if list, err := d.List(context.Background()); err != nil || len(list) != 0 {
		t.Errorf("after the failed create the driver lists %+v (%v), want nothing", list, err)
	}
}
