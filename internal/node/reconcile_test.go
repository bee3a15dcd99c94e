package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

func TestRestartReconcile(t *testing.T) {
	e := newEnv(t, nil)
	adopted := e.create(t)
	crashed := e.create(t)
	deadAgent := e.create(t)
	expired, err := e.m.Create(t.Context(), sandbox.CreateRequest{Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	stopped := e.create(t)
	if _, err := e.m.Stop(t.Context(), stopped.ID); err != nil {
		t.Fatal(err)
	}
	failed := func() sandbox.Sandbox {
		e.d.SetCreateErr(errNope)
		defer e.d.SetCreateErr(nil)
		sb, _ := e.m.Create(t.Context(), sandbox.CreateRequest{})
		return sb
	}()
	if err := e.m.Close(); err != nil {
		t.Fatal(err)
	}

	// While paddock was down: one sandbox died, one's agent hangs, a
	// crash mid-create left an orphan, and time passed.
	e.d.SetSandbox(crashed.ID, false)
	e.d.SetDeadAgent(deadAgent.ID)
	e.d.SetSandbox("sb-orphanorphanorph", true)
	e.clock.Advance(2 * time.Minute)

	m2 := e.manager(t, nil)
	e.m = m2

	tests := []struct {
		name    string
		id      string
		state   sandbox.State
		errPart string
		stopped bool // driver.Stop was called for it by the restart
	}{
		{"running and answering is re-adopted", adopted.ID, sandbox.Running, "", false},
		{"not running is failed", crashed.ID, sandbox.Failed, "lost after restart: it is no longer running", true},
		{"agent not answering is failed", deadAgent.ID, sandbox.Failed, "lost after restart: agent does not answer", true},
		{"past deadline is stopped", expired.ID, sandbox.Stopped, "", true},
		{"stopped stays stopped", stopped.ID, sandbox.Stopped, "", true},
		{"failed stays failed", failed.ID, sandbox.Failed, "create: nope", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := e.get(t, tt.id)
			if got.State != tt.state {
				t.Errorf("state = %s, want %s", got.State, tt.state)
			}
			if !strings.HasPrefix(got.Error, tt.errPart) || (tt.errPart == "") != (got.Error == "") {
				t.Errorf("error = %q, want prefix %q", got.Error, tt.errPart)
			}
			if e.d.Called("stop", tt.id) != tt.stopped {
				t.Errorf("driver.Stop called = %v, want %v", !tt.stopped, tt.stopped)
			}
			if running, _ := e.d.Running(tt.id); running != (tt.state == sandbox.Running) {
				t.Errorf("driver running = %v with state %s", running, tt.state)
			}
		})
	}

	if !e.d.Called("destroy", "sb-orphanorphanorph") {
		t.Error("orphan not destroyed")
	}
	// Lost sandboxes keep their writable layer until Delete.
	if e.d.Called("destroy", crashed.ID) {
		t.Error("a lost sandbox was destroyed before Delete")
	}
	if err := m2.Delete(t.Context(), crashed.ID); err != nil || !e.d.Called("destroy", crashed.ID) {
		t.Errorf("Delete of a lost sandbox: %v", err)
	}

	// The re-adopted sandbox works and its deadline is armed again.
	c, err := m2.Agent(t.Context(), adopted.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(5 * time.Minute)
	m2.checkTimeouts(t.Context())
	if got := e.get(t, adopted.ID); got.State != sandbox.Stopped {
		t.Errorf("re-adopted sandbox not stopped at its deadline: %s", got.State)
	}
}

func TestRestartPendingAndStopping(t *testing.T) {
	e := newEnv(t, nil)
	e.m.Close()
	now := e.clock.Now()
	// Records as a crash would leave them: one mid-create whose driver
	// finished, one mid-create whose driver did not, one mid-stop.
	records := []sandbox.Sandbox{
		{ID: "sb-pendingalive", State: sandbox.Pending, Image: "host", CreatedAt: now, ExpiresAt: now.Add(5 * time.Minute)},
		{ID: "sb-pendinglost", State: sandbox.Pending, Image: "host", CreatedAt: now, ExpiresAt: now.Add(5 * time.Minute)},
		{ID: "sb-stopping", State: sandbox.Stopping, Image: "host", CreatedAt: now, ExpiresAt: now.Add(5 * time.Minute)},
	}
	store, err := newFileStore(filepath.Join(e.dir, "node", "sandboxes"))
	if err != nil {
		t.Fatal(err)
	}
	for _, sb := range records {
		if err := store.Save(t.Context(), sb); err != nil {
			t.Fatal(err)
		}
	}
	// A temp file from a crash mid-save is cleaned up.
	tmp := filepath.Join(e.dir, "node", "sandboxes", ".sb-x.json-123")
	if err := os.WriteFile(tmp, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.d.SetSandbox("sb-pendingalive", true)
	e.d.SetSandbox("sb-stopping", true)

	e.m = e.manager(t, nil)
	tests := []struct {
		id    string
		state sandbox.State
	}{
		{"sb-pendingalive", sandbox.Running},
		{"sb-pendinglost", sandbox.Failed},
		{"sb-stopping", sandbox.Stopped},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			if got := e.get(t, tt.id); got.State != tt.state {
				t.Errorf("state = %s (%q), want %s", got.State, got.Error, tt.state)
			}
		})
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Errorf("temp file left: %v", err)
	}
	if got := e.get(t, "sb-pendingalive"); !got.ExpiresAt.Equal(now.Add(5 * time.Minute)) {
		t.Errorf("re-adopted pending sandbox expires at %s", got.ExpiresAt)
	}
}

func TestCorruptRecordRefusesStart(t *testing.T) {
	dir := t.TempDir()
	rec := filepath.Join(dir, "node", "sandboxes")
	if err := os.MkdirAll(rec, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rec, "sb-bad.json"), []byte("{nope"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := New(Config{DataDir: dir, Driver: fake.NewDriver(t, fake.DriverConfig{}), Logger: discardLogger()})
	if err == nil {
		t.Fatal("New accepted a corrupt record")
	}
}

var errNope = errorString("nope")

type errorString string

func (e errorString) Error() string { return string(e) }
