package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// fakeDriver is a hand-written runtime.Driver that keeps its sandboxes in a
// map, records every call and can be told to fail. Its agents are one tiny
// HTTP server on a unix socket that answers pings.
type fakeDriver struct {
	sock string // the fake agent's socket

	mu sync.Mutex // guards the fields below
	// sandboxes maps id to whether its agent runs.
	sandboxes  map[string]bool
	calls      []string // "create sb-…", "stop sb-…", …
	createErr  error
	stopErr    error
	destroyErr error
	// createHook runs inside Create, outside mu, before it succeeds.
	createHook func(ctx context.Context, id string) error
	// deadAgent lists ids whose agent does not answer though they run.
	deadAgent map[string]bool
	// ping, when set, is the fake agent's ping answer (JSON).
	ping string
	// diskCap is reported in Capabilities; set before the manager starts.
	diskCap bool
}

var _ runtime.Driver = (*fakeDriver)(nil)

func newFakeDriver(t *testing.T) *fakeDriver {
	t.Helper()
	// Socket paths are limited to ~108 bytes; t.TempDir can be longer.
	dir, err := os.MkdirTemp("", "pnode")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	d := &fakeDriver{sock: sock, sandboxes: map[string]bool{}, deadAgent: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/ping", func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		body := d.ping
		d.mu.Unlock()
		if body == "" {
			body = `{"version":"fake","pid":1}`
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, body)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return d
}

func (d *fakeDriver) record(call, id string) {
	d.mu.Lock()
	d.calls = append(d.calls, call+" "+id)
	d.mu.Unlock()
}

// called reports whether call was made for id.
func (d *fakeDriver) called(call, id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Contains(d.calls, call+" "+id)
}

func (d *fakeDriver) count(call string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, c := range d.calls {
		if strings.HasPrefix(c, call+" ") {
			n++
		}
	}
	return n
}

func (d *fakeDriver) set(f func(d *fakeDriver)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f(d)
}

func (d *fakeDriver) running(id string) (running, known bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	running, known = d.sandboxes[id]
	return running, known
}

func (d *fakeDriver) Capabilities() runtime.Capabilities {
	return runtime.Capabilities{Name: "fake", DiskCap: d.diskCap}
}

func (d *fakeDriver) Create(ctx context.Context, spec runtime.Spec) (*agent.Client, error) {
	d.record("create", spec.ID)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("fake create: %w", err)
	}
	d.mu.Lock()
	hook, cerr := d.createHook, d.createErr
	d.mu.Unlock()
	if hook != nil {
		if err := hook(ctx, spec.ID); err != nil {
			return nil, err
		}
	}
	if cerr != nil {
		return nil, cerr
	}
	d.mu.Lock()
	d.sandboxes[spec.ID] = true
	d.mu.Unlock()
	return agent.UnixClient(d.sock), nil
}

func (d *fakeDriver) Agent(ctx context.Context, id string) (*agent.Client, error) {
	d.record("agent", id)
	d.mu.Lock()
	defer d.mu.Unlock()
	running, ok := d.sandboxes[id]
	switch {
	case !ok:
		return nil, sandbox.ErrNotFound
	case !running:
		return nil, sandbox.ErrNotRunning
	case d.deadAgent[id]:
		return agent.UnixClient(d.sock + ".dead"), nil
	}
	return agent.UnixClient(d.sock), nil
}

func (d *fakeDriver) Stats(ctx context.Context, id string) (runtime.Stats, error) {
	d.record("stats", id)
	if running, _ := d.running(id); !running {
		return runtime.Stats{}, sandbox.ErrNotRunning
	}
	return runtime.Stats{PIDs: 3, MemoryBytes: 1 << 20}, nil
}

func (d *fakeDriver) Stop(ctx context.Context, id string) error {
	d.record("stop", id)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopErr != nil {
		return d.stopErr
	}
	if _, ok := d.sandboxes[id]; ok {
		d.sandboxes[id] = false
	}
	return nil
}

func (d *fakeDriver) Destroy(ctx context.Context, id string) error {
	d.record("destroy", id)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.destroyErr != nil {
		return d.destroyErr
	}
	delete(d.sandboxes, id)
	return nil
}

func (d *fakeDriver) List(ctx context.Context) ([]runtime.Info, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []runtime.Info
	for id, running := range d.sandboxes {
		out = append(out, runtime.Info{ID: id, Running: running})
	}
	return out, nil
}

func (d *fakeDriver) Close() error { return nil }

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// env bundles a manager with its fakes.
type env struct {
	m     *Manager
	d     *fakeDriver
	clock *fakeClock
	dir   string
}

// newEnv returns a started manager over a fake driver and clock; mod
// adjusts the config first.
func newEnv(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	e := &env{d: newFakeDriver(t), clock: newFakeClock(), dir: t.TempDir()}
	e.m = e.manager(t, mod)
	return e
}

// manager starts another manager on e's data dir, driver and clock.
func (e *env) manager(t *testing.T, mod func(*Config)) *Manager {
	t.Helper()
	cfg := Config{
		DataDir:      e.dir,
		Driver:       e.d,
		Now:          e.clock.Now,
		MaxResources: sandbox.Resources{VCPUs: 4, MemoryMB: 8192, PIDs: 4096},
		Logger:       discardLogger(),
	}
	if mod != nil {
		mod(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := m.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func (e *env) create(t *testing.T) sandbox.Sandbox {
	t.Helper()
	sb, err := e.m.Create(t.Context(), sandbox.CreateRequest{})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return sb
}

func (e *env) get(t *testing.T, id string) sandbox.Sandbox {
	t.Helper()
	sb, err := e.m.Get(t.Context(), id)
	if err != nil {
		t.Fatalf("Get %s: %v", id, err)
	}
	return sb
}

// wantErr fails unless err matches kind and, if code is set, has that code.
func wantErr(t *testing.T, err, kind error, code string) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("error = %v, want kind %v", err, kind)
	}
	if code != "" && sandbox.CodeOf(err) != code {
		t.Fatalf("error code = %q (%v), want %q", sandbox.CodeOf(err), err, code)
	}
}

// memStore is an in-memory Records.
type memStore struct {
	mu      sync.Mutex // guards records
	records map[string]sandbox.Sandbox
}

var _ Records = (*memStore)(nil)

func newMemStore() *memStore { return &memStore{records: map[string]sandbox.Sandbox{}} }

func (s *memStore) Save(_ context.Context, sb sandbox.Sandbox) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records[sb.ID] = clone(sb)
	return nil
}

func (s *memStore) Remove(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.records, id)
	return nil
}

func (s *memStore) LoadAll(context.Context) ([]sandbox.Sandbox, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []sandbox.Sandbox
	for _, sb := range s.records {
		out = append(out, clone(sb))
	}
	return out, nil
}
