package node

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// twoRuntimes gives a manager a second runtime, "gv" (a fake driver with
// snapshots, no disk caps), beside the default "fake" (no snapshots), and
// names "kata" as known but unavailable.
func twoRuntimes(t *testing.T, e *env, gv *fake.Driver) func(*Config) {
	t.Helper()
	store, err := image.OpenStore(filepath.Join(e.dir, "images"), image.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return func(c *Config) {
		c.Images = store
		c.Drivers = []runtime.Driver{snapDriver{gv}}
		c.Unavailable = map[string]string{"kata": "no /dev/kvm here"}
	}
}

func TestRuntimeSelection(t *testing.T) {
	e := &env{d: fake.NewDriver(t, fake.DriverConfig{}), clock: fake.NewClock(epoch), dir: t.TempDir()}
	gv := fake.NewDriver(t, fake.DriverConfig{Name: "gv"})
	e.m = e.manager(t, twoRuntimes(t, e, gv))
	ctx := t.Context()

	def := e.create(t)
	sb, err := e.m.Create(ctx, sandbox.CreateRequest{Runtime: "gv"})
	if err != nil {
		t.Fatal(err)
	}
	if def.Driver != "fake" || sb.Driver != "gv" {
		t.Fatalf("drivers = %q, %q; want fake, gv", def.Driver, sb.Driver)
	}
	if !gv.Called("create", sb.ID) || e.d.Called("create", sb.ID) || gv.Called("create", def.ID) {
		t.Error("each create must go to its own runtime's driver only")
	}
	if _, err := e.m.Stats(ctx, sb.ID); err != nil || !gv.Called("stats", sb.ID) {
		t.Errorf("Stats = %v; gv called: %v", err, gv.Called("stats", sb.ID))
	}

	for _, tc := range []struct {
		name string
		req  sandbox.CreateRequest
		kind error
		code string
		says string
	}{
		{"unknown", sandbox.CreateRequest{Runtime: "nope"}, sandbox.ErrInvalid, "unknown_runtime", "fake, gv"},
		{"unavailable", sandbox.CreateRequest{Runtime: "kata"}, sandbox.ErrInvalid, "runtime_unavailable", "no /dev/kvm here"},
		{"disk cap the runtime lacks", sandbox.CreateRequest{Runtime: "gv", Resources: sandbox.Resources{DiskMB: 1024}}, sandbox.ErrUnsupported, "sandbox_disk_unsupported", `"gv"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.m.Create(ctx, tc.req)
			wantErr(t, err, tc.kind, tc.code)
			if !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %q does not say %q", err, tc.says)
			}
		})
	}

	// Snapshots: only a runtime with the power takes them, and what is
	// made from one runs on its runtime.
	_, err = e.m.Snapshot(ctx, def.ID)
	wantErr(t, err, sandbox.ErrUnsupported, "snapshots_unsupported")
	wantErr(t, e.m.CanSnapshot(t.Context(), def.ID), sandbox.ErrUnsupported, "snapshots_unsupported")
	if err := e.m.CanSnapshot(t.Context(), sb.ID); err != nil {
		t.Errorf("CanSnapshot of a gv sandbox: %v", err)
	}
	wantErr(t, e.m.CanSnapshot(t.Context(), "sb-none"), sandbox.ErrNotFound, "")
	_, err = e.m.Pause(ctx, def.ID)
	wantErr(t, err, sandbox.ErrUnsupported, "snapshots_unsupported")
	snap, err := e.m.Snapshot(ctx, sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Runtime != "gv" {
		t.Errorf("snapshot runtime = %q, want gv", snap.Runtime)
	}
	fromSnap, err := e.m.Create(ctx, sandbox.CreateRequest{Snapshot: snap.ID})
	if err != nil || fromSnap.Driver != "gv" {
		t.Fatalf("create from snapshot = %q, %v; want runtime gv", fromSnap.Driver, err)
	}
	// Pause and resume keep it too.
	if _, err := e.m.Pause(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	resumed, err := e.m.Resume(ctx, sb.ID, 0)
	if err != nil || resumed.Driver != "gv" || gv.Count("create") != 3 || e.d.Called("create", sb.ID) {
		t.Fatalf("resume = %q, %v; gv creates %d", resumed.Driver, err, gv.Count("create"))
	}

	want := []runtime.Status{
		{Name: "fake", Default: true, Available: true, Capabilities: runtime.Capabilities{Name: "fake"}},
		{Name: "gv", Available: true, Capabilities: runtime.Capabilities{Name: "gv"}},
		{Name: "kata", Reason: "no /dev/kvm here", Capabilities: runtime.Capabilities{Name: "kata"}},
	}
	if got := e.m.Runtimes(); !equalStatus(got, want) {
		t.Errorf("Runtimes = %+v, want %+v", got, want)
	}

	if _, err := e.m.Stop(ctx, sb.ID); err != nil || !gv.Called("stop", sb.ID) || e.d.Called("stop", sb.ID) {
		t.Errorf("Stop = %v: must go to gv only", err)
	}
	if err := e.m.Delete(ctx, sb.ID); err != nil || !gv.Called("destroy", sb.ID) || e.d.Called("destroy", sb.ID) {
		t.Errorf("Delete = %v: must go to gv only", err)
	}
}

func equalStatus(a, b []runtime.Status) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestRuntimeReconcile restarts the node: each sandbox is re-adopted by
// its own runtime's driver (not destroyed as the other's orphan), and a
// sandbox whose runtime the host no longer offers is lost, saying why.
func TestRuntimeReconcile(t *testing.T) {
	e := &env{d: fake.NewDriver(t, fake.DriverConfig{}), clock: fake.NewClock(epoch), dir: t.TempDir()}
	gv := fake.NewDriver(t, fake.DriverConfig{Name: "gv"})
	mod := twoRuntimes(t, e, gv)
	e.m = e.manager(t, mod)
	ctx := t.Context()
	def := e.create(t)
	sb, err := e.m.Create(ctx, sandbox.CreateRequest{Runtime: "gv"})
	if err != nil {
		t.Fatal(err)
	}
	e.m.Close()

	m := e.manager(t, mod)
	for _, id := range []string{def.ID, sb.ID} {
		if got, err := m.Get(ctx, id); err != nil || got.State != sandbox.Running {
			t.Fatalf("after restart %s = %+v, %v; want running", id, got, err)
		}
	}
	if !gv.Called("agent", sb.ID) || e.d.Called("agent", sb.ID) || gv.Called("destroy", sb.ID) || e.d.Called("destroy", sb.ID) {
		t.Error("the gv sandbox must be re-adopted through gv, and destroyed by neither driver")
	}
	if _, err := m.Exec(ctx, sb.ID, sandbox.ExecRequest{Cmd: "true"}); err != nil {
		t.Errorf("exec after re-adoption: %v", err)
	}
	m.Close()

	// gv gone from the host (runsc removed): its sandbox is lost, and
	// operations on it say why instead of reaching the wrong driver.
	m = e.manager(t, func(c *Config) {
		mod(c)
		c.Drivers = nil
		c.Unavailable = map[string]string{"gv": "runsc not found"}
	})
	got, err := m.Get(ctx, sb.ID)
	if err != nil || got.State != sandbox.Failed || !strings.Contains(got.Error, "runsc not found") {
		t.Fatalf("record of a runtime gone = %+v, %v; want failed saying why", got, err)
	}
	if e.d.Called("destroy", sb.ID) {
		t.Error("the default driver destroyed another runtime's sandbox")
	}
	err = m.Delete(ctx, sb.ID)
	if !errors.Is(err, sandbox.ErrUnavailable) || !strings.Contains(err.Error(), "runsc not found") {
		t.Errorf("Delete = %v, want unavailable saying why", err)
	}
	if got, err := m.Get(ctx, def.ID); err != nil || got.State != sandbox.Running {
		t.Errorf("default sandbox = %+v, %v; want running", got, err)
	}
}

// TestWarmKeyRuntime: a create on one runtime never claims a pool
// sandbox of another.
func TestWarmKeyRuntime(t *testing.T) {
	e := &env{d: fake.NewDriver(t, fake.DriverConfig{}), clock: fake.NewClock(epoch), dir: t.TempDir()}
	gv := fake.NewDriver(t, fake.DriverConfig{Name: "gv"})
	e.m = e.manager(t, twoRuntimes(t, e, gv))
	ctx := t.Context()
	idle, err := e.m.CreatePooled(ctx, "p", sandbox.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if KeyOf(idle).Runtime != "fake" {
		t.Errorf("key = %v, want runtime fake", KeyOf(idle))
	}
	k, err := e.m.WarmKey(sandbox.CreateRequest{Runtime: "gv"})
	if err != nil || k == KeyOf(idle) || k.Runtime != "gv" {
		t.Errorf("WarmKey(gv) = %v, %v; must differ from %v", k, err, KeyOf(idle))
	}
	if _, err := e.m.WarmKey(sandbox.CreateRequest{Runtime: "nope"}); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("WarmKey(unknown) = %v, want ErrInvalid", err)
	}
	_, err = e.m.Claim(ctx, idle.ID, sandbox.CreateRequest{Runtime: "gv", TeamID: "t1"})
	if !errors.Is(err, ErrNotClaimed) {
		t.Errorf("Claim on another runtime = %v, want ErrNotClaimed", err)
	}
	if k, err := e.m.WarmKey(sandbox.CreateRequest{}); err != nil || k != KeyOf(idle) {
		t.Errorf("WarmKey(default) = %v, %v; want %v", k, err, KeyOf(idle))
	}
}
