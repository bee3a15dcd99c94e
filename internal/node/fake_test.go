package node

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// epoch is where the tests' clocks start.
var epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// env bundles a manager with its fakes.
type env struct {
	m     *Manager
	d     *fake.Driver
	clock *fake.Clock
	dir   string
}

// newEnv returns a started manager over a fake driver and clock; mod
// adjusts the config first.
func newEnv(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	e := &env{d: fake.NewDriver(t, fake.DriverConfig{}), clock: fake.NewClock(epoch), dir: t.TempDir()}
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
