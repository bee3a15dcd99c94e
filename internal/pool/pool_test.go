package pool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/node"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// fakeSandboxes is a hand-written Sandboxes: a map of records whose key is
// their MemoryMB (and Image), with the node's claim rules.
type fakeSandboxes struct {
	mu        sync.Mutex // guards the fields below
	sbs       map[string]sandbox.Sandbox
	next      int
	max       int
	createErr error
	// block, when set, holds CreatePooled until it is closed.
	block   chan struct{}
	creates int // CreatePooled calls
	colds   int // Create calls
}

func newFake() *fakeSandboxes { return &fakeSandboxes{sbs: map[string]sandbox.Sandbox{}, max: 100} }

func fakeKey(req sandbox.CreateRequest) node.WarmKey {
	img := req.Image
	if img == "" {
		img = "host"
	}
	return node.WarmKey{Base: img, Resources: sandbox.Resources{MemoryMB: req.Resources.MemoryMB}, Runtime: req.Runtime}
}

func (f *fakeSandboxes) WarmKey(req sandbox.CreateRequest) (node.WarmKey, error) {
	if req.Image == "missing" {
		return node.WarmKey{}, sandbox.Errorf(sandbox.ErrNotFound, "image_not_found", "no image")
	}
	return fakeKey(req), nil
}

func (f *fakeSandboxes) newLocked(req sandbox.CreateRequest, pool string) sandbox.Sandbox {
	f.next++
	sb := sandbox.Sandbox{ID: fmt.Sprintf("sb-%d", f.next), State: sandbox.Running, Image: req.Image, Pool: pool,
		Resources: sandbox.Resources{MemoryMB: req.Resources.MemoryMB}, TeamID: req.TeamID, Env: req.Env, Driver: req.Runtime}
	if sb.Image == "" {
		sb.Image = "host"
	}
	f.sbs[sb.ID] = sb
	return sb
}

func (f *fakeSandboxes) activeLocked() int { return len(f.sbs) }

func (f *fakeSandboxes) Create(_ context.Context, req sandbox.CreateRequest) (sandbox.Sandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.colds++
	if f.activeLocked() >= f.max {
		return sandbox.Sandbox{}, sandbox.Errorf(sandbox.ErrExhausted, "capacity", "full")
	}
	return f.newLocked(req, ""), nil
}

func (f *fakeSandboxes) CreatePooled(ctx context.Context, pool string, req sandbox.CreateRequest) (sandbox.Sandbox, error) {
	f.mu.Lock()
	block := f.block
	f.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return sandbox.Sandbox{}, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.creates++
	if f.createErr != nil {
		return sandbox.Sandbox{}, f.createErr
	}
	if f.activeLocked() >= f.max {
		return sandbox.Sandbox{}, sandbox.Errorf(sandbox.ErrExhausted, "capacity", "full")
	}
	return f.newLocked(req, pool), nil
}

func (f *fakeSandboxes) Claim(_ context.Context, id string, req sandbox.CreateRequest) (sandbox.Sandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb, ok := f.sbs[id]
	if !ok || sb.Pool == "" {
		return sandbox.Sandbox{}, fmt.Errorf("%w: %s", node.ErrNotClaimed, id)
	}
	if fakeKey(sandbox.CreateRequest{Image: sb.Image, Resources: sb.Resources, Runtime: sb.Driver}) != fakeKey(req) {
		return sandbox.Sandbox{}, fmt.Errorf("%w: key", node.ErrNotClaimed)
	}
	sb.Pool, sb.Warm, sb.TeamID, sb.Env = "", true, req.TeamID, req.Env
	f.sbs[id] = sb
	return sb, nil
}

func (f *fakeSandboxes) DiscardPooled(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb, ok := f.sbs[id]
	if !ok {
		return sandbox.Errorf(sandbox.ErrNotFound, "sandbox_not_found", "no %s", id)
	}
	if sb.Pool == "" {
		return sandbox.Errorf(sandbox.ErrConflict, "pool_sandbox_claimed", "claimed")
	}
	delete(f.sbs, id)
	return nil
}

func (f *fakeSandboxes) Pooled() []sandbox.Sandbox {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []sandbox.Sandbox
	for _, sb := range f.sbs {
		if sb.Pool != "" {
			out = append(out, sb)
		}
	}
	return out
}

func (f *fakeSandboxes) Load() (int, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.activeLocked(), f.max
}

func (f *fakeSandboxes) pooledOf(pool string) int {
	n := 0
	for _, sb := range f.Pooled() {
		if sb.Pool == pool {
			n++
		}
	}
	return n
}

// clock is a settable clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func start(t *testing.T, f *fakeSandboxes, mod func(*Config)) (*Manager, *clock) {
	t.Helper()
	c := &clock{now: time.Date(2026, 12, 6, 12, 0, 30, 0, time.UTC)}
	cfg := Config{Sandboxes: f, File: filepath.Join(t.TempDir(), "pools.json"), Now: c.Now, Logger: slog.New(slog.DiscardHandler)}
	if mod != nil {
		mod(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, c
}

// waitIdle waits until pool name holds want idle sandboxes (refills run in
// the background).
func waitIdle(t *testing.T, m *Manager, name string, want int) Status {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := m.Get(name)
		if err != nil {
			t.Fatal(err)
		}
		if st.Idle == want && st.Creating == 0 {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool %s: %+v, want %d idle", name, st, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRefilledAfterClaims(t *testing.T) {
	f := newFake()
	m, _ := start(t, f, nil)
	if _, err := m.Set(t.Context(), Spec{Name: "small", Resources: sandbox.Resources{MemoryMB: 256}, Min: 3, Max: 3}); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, m, "small", 3)
	req := sandbox.CreateRequest{Resources: sandbox.Resources{MemoryMB: 256}, TeamID: "t1", Env: map[string]string{"K": "v"}}
	claimed := map[string]bool{}
	for range 2 {
		sb, err := m.Create(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		if !sb.Warm || sb.TeamID != "t1" || sb.Env["K"] != "v" {
			t.Errorf("claimed %+v", sb)
		}
		claimed[sb.ID] = true
	}
	st := waitIdle(t, m, "small", 3)
	if st.Hits != 2 || st.Misses != 0 {
		t.Errorf("hits %d misses %d, want 2 and 0", st.Hits, st.Misses)
	}
	// The refills are new sandboxes: a claimed one never comes back.
	for _, sb := range f.Pooled() {
		if claimed[sb.ID] {
			t.Errorf("claimed sandbox %s is in the pool again", sb.ID)
		}
	}
	// Another key is a cold create, and no miss of this pool.
	sb, err := m.Create(t.Context(), sandbox.CreateRequest{Resources: sandbox.Resources{MemoryMB: 512}})
	if err != nil || sb.Warm {
		t.Errorf("other key: %+v, %v", sb, err)
	}
	if st, _ := m.Get("small"); st.Misses != 0 || st.Hits != 2 {
		t.Errorf("after another key: %+v", st)
	}
}

// TestClaimGrace: the refill a claim calls for starts only after
// ClaimGrace, so that it does not compete with the claimer's first
// commands; claims coming faster than the grace still see refills.
func TestClaimGrace(t *testing.T) {
	const grace = 300 * time.Millisecond
	f := newFake()
	m, _ := start(t, f, func(c *Config) { c.ClaimGrace = grace })
	if _, err := m.Set(t.Context(), Spec{Name: "small", Resources: sandbox.Resources{MemoryMB: 256}, Min: 2, Max: 2}); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, m, "small", 2)
	creates := func() int { f.mu.Lock(); defer f.mu.Unlock(); return f.creates }
	before := creates()
	req := sandbox.CreateRequest{Resources: sandbox.Resources{MemoryMB: 256}}
	claimedAt := time.Now()
	if sb, err := m.Create(t.Context(), req); err != nil || !sb.Warm {
		t.Fatalf("claim: %+v, %v", sb, err)
	}
	time.Sleep(grace / 3)
	if n := creates(); n != before {
		t.Errorf("%d refills started %v after a claim, want none within the grace", n-before, time.Since(claimedAt))
	}
	waitIdle(t, m, "small", 2)
	if took := time.Since(claimedAt); took < grace {
		t.Errorf("refilled %v after the claim, before the grace of %v", took, grace)
	}

	// A claim every grace/2: each round waits one grace at most.
	deadline := time.Now().Add(4 * grace)
	before = creates()
	for time.Now().Before(deadline) {
		if _, err := m.Create(t.Context(), req); err != nil {
			t.Fatal(err)
		}
		time.Sleep(grace / 2)
	}
	if creates() == before {
		t.Error("no refill during a stream of claims")
	}
}

// TestRuntimeKeyed: a pool's runtime is part of its key, so a create on
// another runtime never claims one of its sandboxes.
func TestRuntimeKeyed(t *testing.T) {
	f := newFake()
	m, _ := start(t, f, nil)
	if _, err := m.Set(t.Context(), Spec{Name: "gv", Runtime: "gvisor", Min: 1, Max: 1}); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, m, "gv", 1)
	if sb, err := m.Create(t.Context(), sandbox.CreateRequest{TeamID: "t1"}); err != nil || sb.Warm {
		t.Errorf("a create on the default runtime = %+v, %v; want a cold one", sb, err)
	}
	sb, err := m.Create(t.Context(), sandbox.CreateRequest{TeamID: "t1", Runtime: "gvisor"})
	if err != nil || !sb.Warm || sb.Driver != "gvisor" {
		t.Errorf("a gvisor create = %+v, %v; want the pool's sandbox", sb, err)
	}
}

func TestMissWhenEmptyAndDemandSizing(t *testing.T) {
	f := newFake()
	f.block = make(chan struct{}) // refills wait: the pool stays empty
	m, c := start(t, f, nil)
	if _, err := m.Set(t.Context(), Spec{Name: "p", Min: 1, Max: 4}); err != nil {
		t.Fatal(err)
	}
	for range 6 {
		sb, err := m.Create(t.Context(), sandbox.CreateRequest{TeamID: "t1"})
		if err != nil || sb.Warm {
			t.Fatalf("create = %+v, %v; want a cold one", sb, err)
		}
	}
	st, _ := m.Get("p")
	if st.Misses != 6 || st.Target != 4 {
		t.Errorf("status %+v: want 6 misses and the target clamped to max 4", st)
	}
	close(f.block)
	f.mu.Lock()
	f.block = nil
	f.mu.Unlock()
	waitIdle(t, m, "p", 4)

	// Demand leaves the window: the pool shrinks back to its min.
	c.Advance(DefaultWindow + 2*time.Minute)
	m.poke()
	waitIdle(t, m, "p", 1)
	deadline := time.Now().Add(5 * time.Second)
	for f.pooledOf("p") != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d pool sandboxes left on the host, want 1", f.pooledOf("p"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestConcurrencyBound(t *testing.T) {
	f := newFake()
	f.block = make(chan struct{})
	m, _ := start(t, f, func(c *Config) { c.Concurrency = 2 })
	if _, err := m.Set(t.Context(), Spec{Name: "a", Min: 3, Max: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Set(t.Context(), Spec{Name: "b", Resources: sandbox.Resources{MemoryMB: 64}, Min: 3, Max: 3}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	m.mu.Lock()
	inflight := m.inflight
	m.mu.Unlock()
	if inflight != 2 {
		t.Errorf("%d refills in flight, want the bound of 2", inflight)
	}
	close(f.block)
	waitIdle(t, m, "a", 3)
	waitIdle(t, m, "b", 3)
}

func TestBackoffAfterFailure(t *testing.T) {
	f := newFake()
	f.createErr = errors.New("disk full")
	m, c := start(t, f, nil)
	if _, err := m.Set(t.Context(), Spec{Name: "p", Min: 2, Max: 2}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, _ := m.Get("p")
		if st.Error != "" && st.Creating == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no failure reported: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
	f.mu.Lock()
	tries := f.creates
	f.createErr = nil
	f.mu.Unlock()
	m.poke()
	time.Sleep(50 * time.Millisecond)
	f.mu.Lock()
	again := f.creates
	f.mu.Unlock()
	if again != tries {
		t.Errorf("refilled during the backoff: %d creates, then %d", tries, again)
	}
	c.Advance(maxBackoff)
	m.poke()
	if st := waitIdle(t, m, "p", 2); st.Error != "" {
		t.Errorf("error kept after success: %q", st.Error)
	}
}

func TestCapacityEvictsIdle(t *testing.T) {
	f := newFake()
	f.max = 4
	m, _ := start(t, f, nil)
	if _, err := m.Set(t.Context(), Spec{Name: "p", Min: 3, Max: 3}); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, m, "p", 3) // refills leave one slot free
	// Two requests of another key: the second finds the host full and
	// gets an idle sandbox's slot.
	for i := range 2 {
		sb, err := m.Create(t.Context(), sandbox.CreateRequest{Resources: sandbox.Resources{MemoryMB: 64}})
		if err != nil || sb.Warm {
			t.Fatalf("create %d = %+v, %v", i, sb, err)
		}
	}
}

func TestRestartAdoptsAndDiscards(t *testing.T) {
	f := newFake()
	file := filepath.Join(t.TempDir(), "pools.json")
	m, _ := start(t, f, func(c *Config) { c.File = file })
	if _, err := m.Set(t.Context(), Spec{Name: "keep", Min: 2, Max: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Set(t.Context(), Spec{Name: "gone", Resources: sandbox.Resources{MemoryMB: 64}, Min: 1, Max: 1}); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, m, "keep", 2)
	waitIdle(t, m, "gone", 1)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	before := map[string]bool{}
	for _, sb := range f.Pooled() {
		before[sb.ID] = true
	}
	// The file changes while paddock is down: "gone" is dropped, and a
	// sandbox of "keep" no longer runs.
	f.mu.Lock()
	for id, sb := range f.sbs {
		if sb.Pool == "keep" {
			sb.State = sandbox.Failed
			f.sbs[id] = sb
			break
		}
	}
	f.mu.Unlock()
	if err := os.WriteFile(file, []byte(`{"pools":[{"name":"keep","min":2,"max":2}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	m2, _ := start(t, f, func(c *Config) { c.File = file })
	st := waitIdle(t, m2, "keep", 2)
	if _, err := m2.Get("gone"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("pool gone: %v", err)
	}
	if n := f.pooledOf("gone"); n != 0 {
		t.Errorf("%d sandboxes of a pool that is no more were kept", n)
	}
	adopted := 0
	for _, sb := range f.Pooled() {
		if sb.Pool == "keep" && before[sb.ID] {
			adopted++
		}
		if sb.State != sandbox.Running {
			t.Errorf("a failed pool sandbox was kept: %+v", sb)
		}
	}
	if adopted != 1 {
		t.Errorf("adopted %d running sandboxes of keep, want 1 (status %+v)", adopted, st)
	}
}

func TestRestartDiscardsChangedKey(t *testing.T) {
	f := newFake()
	file := filepath.Join(t.TempDir(), "pools.json")
	m, _ := start(t, f, func(c *Config) { c.File = file })
	if _, err := m.Set(t.Context(), Spec{Name: "p", Min: 2, Max: 2}); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, m, "p", 2)
	m.Close()
	old := f.Pooled()
	// serve's --pool flag now gives the pool another key.
	m2, _ := start(t, f, func(c *Config) {
		c.File = file
		c.Pools = []Spec{{Name: "p", Resources: sandbox.Resources{MemoryMB: 128}, Min: 2, Max: 2}}
	})
	waitIdle(t, m2, "p", 2)
	for _, sb := range old {
		f.mu.Lock()
		_, still := f.sbs[sb.ID]
		f.mu.Unlock()
		if still {
			t.Errorf("sandbox %s of the old key survived the restart", sb.ID)
		}
	}
}

func TestSetAndRemove(t *testing.T) {
	f := newFake()
	m, _ := start(t, f, nil)
	ctx := t.Context()
	for name, spec := range map[string]Spec{
		"bad name":       {Name: "Bad_Name", Max: 1},
		"max below min":  {Name: "p", Min: 2, Max: 1},
		"too big":        {Name: "p", Max: sandbox.MaxPoolSize + 1},
		"image+snapshot": {Name: "p", Image: "a", Snapshot: "s", Max: 1},
		"missing image":  {Name: "p", Image: "missing", Max: 1},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := m.Set(ctx, spec); err == nil {
				t.Errorf("Set(%+v) succeeded", spec)
			}
		})
	}
	if _, err := m.Set(ctx, Spec{Name: "one", Min: 1, Max: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Set(ctx, Spec{Name: "two", Min: 1, Max: 1}); !errors.Is(err, sandbox.ErrConflict) {
		t.Errorf("a second pool of the same key: %v, want a conflict", err)
	}
	waitIdle(t, m, "one", 1)
	if err := m.Remove(ctx, "one"); err != nil {
		t.Fatal(err)
	}
	if n := f.pooledOf("one"); n != 0 {
		t.Errorf("%d sandboxes of a removed pool left", n)
	}
	if err := m.Remove(ctx, "one"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("Remove again = %v", err)
	}
	if len(m.List()) != 0 {
		t.Errorf("List = %+v", m.List())
	}
}

// TestConcurrentClaims: a burst larger than the pool; every idle sandbox
// goes to exactly one request, the rest are cold, and the counts add up.
func TestConcurrentClaims(t *testing.T) {
	f := newFake()
	m, _ := start(t, f, nil)
	if _, err := m.Set(t.Context(), Spec{Name: "p", Min: 3, Max: 3}); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, m, "p", 3)
	f.mu.Lock()
	f.block = make(chan struct{}) // no refill during the burst
	f.mu.Unlock()
	const burst = 10
	type result struct {
		sb  sandbox.Sandbox
		err error
	}
	results := make(chan result, burst)
	for i := range burst {
		go func() {
			sb, err := m.Create(t.Context(), sandbox.CreateRequest{TeamID: fmt.Sprint("t", i)})
			results <- result{sb, err}
		}()
	}
	seen := map[string]bool{}
	warm := 0
	for range burst {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		if seen[r.sb.ID] {
			t.Errorf("sandbox %s handed out twice", r.sb.ID)
		}
		seen[r.sb.ID] = true
		if r.sb.Warm {
			warm++
		}
	}
	close(f.block)
	st, _ := m.Get("p")
	if warm != 3 || st.Hits != 3 || st.Misses != burst-3 {
		t.Errorf("%d warm; status %+v; want 3 hits and %d misses", warm, st, burst-3)
	}
}
