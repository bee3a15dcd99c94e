package admission

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/mongo/mongotest"
	"github.com/paddock-dev/paddock/internal/store/sqlite"
)

func newFakeClock() *fake.Clock {
	return fake.NewClock(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC))
}

func openStore(t *testing.T) store.Store {
	t.Helper()
	s, err := sqlite.Open(filepath.Join(t.TempDir(), "paddock.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// newController starts a Controller on s with the fake clock; adjust
// changes its config first.
func newController(t *testing.T, s store.Store, clk *fake.Clock, adjust func(*Config)) *Controller {
	t.Helper()
	cfg := Config{Store: s, Now: clk.Now, After: clk.After}
	if adjust != nil {
		adjust(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func setLimits(t *testing.T, c *Controller, team string, l TeamLimits) {
	t.Helper()
	if _, err := c.SetLimits(t.Context(), team, &l); err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond until it holds; the wait is generous because the
// pump runs in its own goroutine, never a timing assertion.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// admitted reports whether w has its ticket.
func admitted(w *Waiter) (*Ticket, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.t, w.done && w.t != nil
}

func enqueue(t *testing.T, c *Controller, team string) *Waiter {
	t.Helper()
	w, err := c.Enqueue(t.Context(), Request{Team: team})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func positions(ws []*Waiter) []int {
	var out []int
	for _, w := range ws {
		out = append(out, w.Position())
	}
	return out
}

// TestTeamLimitQueue: with a limit of 2 and 5 requests, 2 are admitted,
// 3 wait at places 1–3 and go in order as sandboxes end.
func TestTeamLimitQueue(t *testing.T) {
	clk := newFakeClock()
	c := newController(t, openStore(t), clk, nil)
	setLimits(t, c, "team-a", TeamLimits{Limits: Limits{Concurrent: 2}})

	var ws []*Waiter
	for range 5 {
		ws = append(ws, enqueue(t, c, "team-a"))
	}
	for i, w := range ws[:2] {
		tk, ok := admitted(w)
		if !ok {
			t.Fatalf("request %d is not admitted", i)
		}
		if err := tk.Bind(t.Context(), sandbox.Sandbox{ID: fmt.Sprintf("sb-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if got := positions(ws[2:]); !slices.Equal(got, []int{1, 2, 3}) {
		t.Fatalf("places of the waiting = %v, want [1 2 3]", got)
	}
	if st, _ := c.Status(t.Context(), "team-a"); st.Concurrent != 2 || st.Queued != 3 {
		t.Fatalf("status %+v", st)
	}

	// The first sandbox ends: the first waiter goes, the others move up.
	c.Released("team-a", "sb-0")
	eventually(t, "the first waiter's admission", func() bool { _, ok := admitted(ws[2]); return ok })
	if _, ok := admitted(ws[3]); ok {
		t.Fatal("the second waiter went too")
	}
	eventually(t, "places [1 2]", func() bool { return slices.Equal(positions(ws[3:]), []int{1, 2}) })

	// A ticket released without a sandbox (the create failed) frees its slot.
	tk, _ := admitted(ws[2])
	tk.Release(t.Context())
	eventually(t, "the second waiter's admission", func() bool { _, ok := admitted(ws[3]); return ok })
	eventually(t, "place [1]", func() bool { return ws[4].Position() == 1 })

	// Released knows the team from the bind when it is not told.
	c.Released("", "sb-1")
	eventually(t, "the last waiter's admission", func() bool { _, ok := admitted(ws[4]); return ok })
}

// TestDeadline: a request still queued at its deadline is refused with
// queue_timeout and a Retry-After, and leaves the queue.
func TestDeadline(t *testing.T) {
	clk := newFakeClock()
	c := newController(t, openStore(t), clk, func(cfg *Config) { cfg.RetryAfter = 7 * time.Second })
	setLimits(t, c, "team-a", TeamLimits{Limits: Limits{Concurrent: 1}})
	enqueue(t, c, "team-a") // holds the one slot

	w, err := c.Enqueue(t.Context(), Request{Team: "team-a", Deadline: clk.Now().Add(5 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	behind := enqueue(t, c, "team-a")
	if behind.Position() != 2 {
		t.Fatalf("place %d, want 2", behind.Position())
	}
	type result struct {
		tk  *Ticket
		err error
	}
	done := make(chan result, 1)
	var seen []int
	go func() {
		tk, err := w.Wait(context.Background(), func(p int) { seen = append(seen, p) })
		done <- result{tk, err}
	}()
	eventually(t, "the waiter's timer", func() bool { return clk.Timers() >= 2 })
	clk.Advance(6 * time.Second)
	r := <-done
	var ae *Error
	if !errors.Is(r.err, sandbox.ErrExhausted) || sandbox.CodeOf(r.err) != "queue_timeout" || !errors.As(r.err, &ae) || ae.RetryAfter() != 7*time.Second {
		t.Fatalf("Wait = %v, %v; want queue_timeout with Retry-After 7s", r.tk, r.err)
	}
	if !slices.Equal(seen, []int{1}) {
		t.Errorf("positions heard %v, want [1]", seen)
	}
	eventually(t, "the one behind to move up", func() bool { return behind.Position() == 1 })
}

// TestMaxWait: the server's maximum bounds a request with no deadline,
// and a context deadline bounds it too.
func TestMaxWait(t *testing.T) {
	clk := newFakeClock()
	c := newController(t, openStore(t), clk, func(cfg *Config) { cfg.MaxWait = 30 * time.Second })
	setLimits(t, c, "team-a", TeamLimits{Limits: Limits{Concurrent: 1}})
	enqueue(t, c, "team-a")
	w := enqueue(t, c, "team-a")
	if want := clk.Now().Add(30 * time.Second); !w.deadline.Equal(want) {
		t.Fatalf("deadline %v, want %v", w.deadline, want)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	if _, err := c.Acquire(ctx, Request{Team: "team-a"}); sandbox.CodeOf(err) != "queue_timeout" {
		t.Fatalf("Acquire past its context's deadline: %v", err)
	}
	// A caller that leaves is not a timeout.
	ctx, cancel = context.WithCancel(t.Context())
	cancel()
	if _, err := c.Acquire(ctx, Request{Team: "team-a"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire of a caller gone: %v", err)
	}
}

// TestQueueFull: past MaxQueue waiting, a request is refused at once.
func TestQueueFull(t *testing.T) {
	clk := newFakeClock()
	c := newController(t, openStore(t), clk, func(cfg *Config) { cfg.MaxQueue = 2 })
	setLimits(t, c, "team-a", TeamLimits{Limits: Limits{Concurrent: 1}})
	for range 3 {
		enqueue(t, c, "team-a")
	}
	_, err := c.Enqueue(t.Context(), Request{Team: "team-a"})
	var ae *Error
	if sandbox.CodeOf(err) != "queue_full" || !errors.As(err, &ae) || ae.RetryAfter() <= 0 {
		t.Fatalf("Enqueue on a full queue: %v", err)
	}
	// Another team's queue is its own.
	if w := enqueue(t, c, "team-b"); w.Position() != 0 {
		t.Fatalf("team-b waits at %d", w.Position())
	}
}

// TestRoundRobin: when the host is the limit, teams take turns; within a
// team, first come first served.
func TestRoundRobin(t *testing.T) {
	clk := newFakeClock()
	var mu sync.Mutex
	active := 1 // the host is full: everyone queues
	c := newController(t, openStore(t), clk, func(cfg *Config) {
		cfg.Host = func() (int, int) { mu.Lock(); defer mu.Unlock(); return active, 1 }
	})
	type req struct {
		name string
		w    *Waiter
	}
	var reqs []req
	for _, team := range []string{"a", "b"} {
		for i := range 3 {
			reqs = append(reqs, req{fmt.Sprintf("%s%d", team, i+1), enqueue(t, c, "team-"+team)})
		}
	}
	var order []string
	for n := range len(reqs) {
		// The running sandbox ends: one slot on the host.
		mu.Lock()
		active--
		mu.Unlock()
		c.Released("", "none")
		var got req
		eventually(t, "an admission", func() bool {
			for _, r := range reqs {
				if _, ok := admitted(r.w); ok && !slices.Contains(order, r.name) {
					got = r
					return true
				}
			}
			return false
		})
		order = append(order, got.name)
		// Its sandbox runs now, and the host is full again.
		mu.Lock()
		active++
		mu.Unlock()
		tk, _ := admitted(got.w)
		if err := tk.Bind(t.Context(), sandbox.Sandbox{ID: fmt.Sprintf("sb-%d", n)}); err != nil {
			t.Fatal(err)
		}
	}
	if want := []string{"a1", "b1", "a2", "b2", "a3", "b3"}; !slices.Equal(order, want) {
		t.Fatalf("admitted %v, want %v", order, want)
	}
}

// TestRate: CreatesPerMinute holds a request until the window moves.
func TestRate(t *testing.T) {
	clk := newFakeClock()
	c := newController(t, openStore(t), clk, nil)
	setLimits(t, c, "team-a", TeamLimits{Limits: Limits{CreatesPerMinute: 2}})
	enqueue(t, c, "team-a")
	clk.Advance(10 * time.Second)
	enqueue(t, c, "team-a")
	w := enqueue(t, c, "team-a")
	if w.Position() != 1 {
		t.Fatalf("the third create in a minute waits at %d, want 1", w.Position())
	}
	clk.Advance(49 * time.Second)
	if _, ok := admitted(w); ok {
		t.Fatal("admitted inside the window")
	}
	// The first create leaves the window; the pump's poll sees it.
	eventually(t, "the admission after the window", func() bool { clk.Advance(100 * time.Millisecond); _, ok := admitted(w); return ok })
}

// TestResources: vCPU and memory limits count what is held; a request
// larger than the limit itself is refused at once.
func TestResources(t *testing.T) {
	clk := newFakeClock()
	c := newController(t, openStore(t), clk, nil)
	setLimits(t, c, "team-a", TeamLimits{Limits: Limits{VCPUs: 3, MemoryMB: 4096}})
	ctx := t.Context()
	if w, _ := c.Enqueue(ctx, Request{Team: "team-a", VCPUs: 2, MemoryMB: 1024}); w.Position() != 0 {
		t.Fatal("the first request waits")
	}
	if w, _ := c.Enqueue(ctx, Request{Team: "team-a", VCPUs: 2, MemoryMB: 1024}); w.Position() != 1 {
		t.Fatal("2+2 vCPUs fit a limit of 3")
	}
	if _, err := c.Enqueue(ctx, Request{Team: "team-a", VCPUs: 4}); !errors.Is(err, sandbox.ErrInvalid) || sandbox.CodeOf(err) != "over_team_limit" {
		t.Fatalf("a request over the limit itself: %v", err)
	}
	if _, err := c.Enqueue(ctx, Request{Team: "team-b", MemoryMB: 8192}); err != nil {
		t.Fatalf("another team has no limits: %v", err)
	}
}

// TestPresetsAndDefaults: presets, custom overrides, the server default.
func TestPresetsAndDefaults(t *testing.T) {
	clk := newFakeClock()
	c := newController(t, openStore(t), clk, func(cfg *Config) { cfg.Defaults = TeamLimits{Preset: "hobby"} })
	ctx := t.Context()
	st, err := c.Status(ctx, "team-a")
	if err != nil || !st.Default || st.Effective.Concurrent != 10 {
		t.Fatalf("default status %+v, %v", st, err)
	}
	st, err = c.SetLimits(ctx, "team-a", &TeamLimits{Preset: "pro", Limits: Limits{Concurrent: 5}})
	if err != nil || st.Default || st.Effective.Concurrent != 5 || st.Effective.CreatesPerMinute != Presets["pro"].CreatesPerMinute {
		t.Fatalf("pro with a custom concurrency: %+v, %v", st, err)
	}
	if _, err := c.SetLimits(ctx, "team-a", &TeamLimits{Preset: "gold"}); sandbox.CodeOf(err) != "unknown_preset" {
		t.Fatalf("unknown preset: %v", err)
	}
	if _, err := c.SetLimits(ctx, "team-a", &TeamLimits{Limits: Limits{Concurrent: -1}}); sandbox.CodeOf(err) != "invalid_limits" {
		t.Fatalf("negative limit: %v", err)
	}
	if st, err = c.SetLimits(ctx, "team-a", nil); err != nil || !st.Default || st.Effective.Concurrent != 10 {
		t.Fatalf("back to the default: %+v, %v", st, err)
	}
	list, err := c.List(ctx)
	if err != nil || len(list) != 1 || list[0].TeamID != "team-a" {
		t.Fatalf("list %+v, %v", list, err)
	}
}

func TestMain(m *testing.M) { mongotest.Main(m) }

// sharedStores open two handles on one new store, as two paddock
// replicas have: SQLite (one file) and a MongoDB-wire server (FerretDB).
var sharedStores = []struct {
	name string
	open func(t *testing.T) (store.Store, store.Store)
}{
	{"SQLite", func(t *testing.T) (store.Store, store.Store) {
		path := filepath.Join(t.TempDir(), "paddock.db")
		open := func() store.Store {
			db, err := sqlite.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return db
		}
		return open(), open()
	}},
	{"FerretDB", func(t *testing.T) (store.Store, store.Store) {
		uri, db := mongotest.URI(t), mongotest.NewDB()
		return mongotest.Open(t, uri, db), mongotest.Open(t, uri, db)
	}},
}

// TestReplicas: two controllers on one store share a team's limit and
// queue: a slot freed on one admits the first waiter on the other, and
// the queue's order is the same for both.
func TestReplicas(t *testing.T) {
	for _, st := range sharedStores {
		t.Run(st.name, func(t *testing.T) {
			sa, sb := st.open(t)
			testReplicas(t, sa, sb)
		})
	}
}

func testReplicas(t *testing.T, sa, sb store.Store) {
	clk := newFakeClock()
	a := newController(t, sa, clk, func(cfg *Config) { cfg.Replica = "a" })
	b := newController(t, sb, clk, func(cfg *Config) { cfg.Replica = "b" })
	setLimits(t, a, "team-x", TeamLimits{Limits: Limits{Concurrent: 2}})

	w1, w2 := enqueue(t, a, "team-x"), enqueue(t, b, "team-x")
	for i, w := range []*Waiter{w1, w2} {
		tk, ok := admitted(w)
		if !ok {
			t.Fatalf("request %d is not admitted", i)
		}
		if err := tk.Bind(t.Context(), sandbox.Sandbox{ID: fmt.Sprintf("sb-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	// The limit holds across both: a third on either waits.
	clk.Advance(time.Millisecond)
	qa := enqueue(t, a, "team-x")
	clk.Advance(time.Millisecond)
	qb := enqueue(t, b, "team-x")
	if qa.Position() != 1 || qb.Position() != 2 {
		t.Fatalf("places a %d, b %d; want 1, 2", qa.Position(), qb.Position())
	}
	// b's sandbox ends: the slot is a's first waiter's, not b's own.
	b.Released("team-x", "sb-1")
	// a's poll sees it.
	eventually(t, "a's waiter admitted", func() bool { clk.Advance(100 * time.Millisecond); _, ok := admitted(qa); return ok })
	if _, ok := admitted(qb); ok {
		t.Fatal("b's waiter passed a's, which came first")
	}
	eventually(t, "b's waiter at place 1", func() bool { clk.Advance(time.Second); return qb.Position() == 1 })
}

// TestReplicaDies: the queue entry of a replica that stops renewing it
// leaves the queue, and an unbound hold expires.
func TestReplicaDies(t *testing.T) {
	clk := newFakeClock()
	s := openStore(t)
	a := newController(t, s, clk, func(cfg *Config) { cfg.Replica = "a"; cfg.HoldTTL = time.Minute })
	setLimits(t, a, "team-x", TeamLimits{Limits: Limits{Concurrent: 1}})
	enqueue(t, a, "team-x")         // admitted, never bound: its replica "died" mid-create
	dead := enqueue(t, a, "team-x") // waits
	if dead.Position() != 1 {
		t.Fatal("not queued")
	}
	// a dies: nothing renews its entry. (Close would remove it; a crash does not.)
	a.mu.Lock()
	a.queues, a.order = map[string][]*Waiter{}, nil
	a.mu.Unlock()

	b := newController(t, s, clk, func(cfg *Config) { cfg.Replica = "b" })
	clk.Advance(time.Millisecond)
	w := enqueue(t, b, "team-x")
	if w.Position() != 2 {
		t.Fatalf("b's request at %d, want 2 behind a's", w.Position())
	}
	clk.Advance(defaultWaitLease + time.Second) // a's entry expires
	eventually(t, "b's waiter first", func() bool { clk.Advance(time.Millisecond); return w.Position() == 1 })
	clk.Advance(time.Minute) // a's unbound hold expires
	eventually(t, "b's waiter admitted", func() bool { clk.Advance(time.Millisecond); _, ok := admitted(w); return ok })
}

// TestSweep: a hold whose sandbox ended without a Released (a crash)
// goes at the next sweep.
func TestSweep(t *testing.T) {
	clk := newFakeClock()
	s := openStore(t)
	c := newController(t, s, clk, nil)
	setLimits(t, c, "team-a", TeamLimits{Limits: Limits{Concurrent: 1}})
	tk, ok := admitted(enqueue(t, c, "team-a"))
	if !ok {
		t.Fatal("not admitted")
	}
	if err := s.PutSandbox(t.Context(), store.SandboxRecord{Node: "n", Sandbox: sandbox.Sandbox{ID: "sb-1", TeamID: "team-a", State: sandbox.Running}}); err != nil {
		t.Fatal(err)
	}
	if err := tk.Bind(t.Context(), sandbox.Sandbox{ID: "sb-1"}); err != nil {
		t.Fatal(err)
	}
	w := enqueue(t, c, "team-a")
	clk.Advance(2 * defaultSweep)
	if _, ok := admitted(w); ok {
		t.Fatal("admitted while the sandbox runs")
	}
	if err := s.PutSandbox(t.Context(), store.SandboxRecord{Node: "n", Sandbox: sandbox.Sandbox{ID: "sb-1", TeamID: "team-a", State: sandbox.Stopped}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the sweep", func() bool { clk.Advance(time.Second); _, ok := admitted(w); return ok })
}

// TestReplicasRace: replicas admitting one team's requests at once never
// admit more than its limit together.
func TestReplicasRace(t *testing.T) {
	for _, st := range sharedStores {
		t.Run(st.name, func(t *testing.T) {
			sa, sb := st.open(t)
			clk := newFakeClock()
			a := newController(t, sa, clk, func(cfg *Config) { cfg.Replica = "a" })
			b := newController(t, sb, clk, func(cfg *Config) { cfg.Replica = "b" })
			setLimits(t, a, "team-x", TeamLimits{Limits: Limits{Concurrent: 3}})
			var mu sync.Mutex
			admittedN := 0
			var wg sync.WaitGroup
			for i := range 10 {
				c := a
				if i%2 == 1 {
					c = b
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					w, err := c.Enqueue(context.Background(), Request{Team: "team-x"})
					if err != nil {
						t.Error(err)
						return
					}
					if _, ok := admitted(w); ok {
						mu.Lock()
						admittedN++
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			st, err := a.Status(t.Context(), "team-x")
			if err != nil {
				t.Fatal(err)
			}
			if admittedN != 3 || st.Concurrent != 3 || st.Queued != 7 {
				t.Fatalf("admitted %d, status %+v; want 3 held and 7 queued", admittedN, st)
			}
		})
	}
}

// TestBindTakesTheSandboxResources: a hold counts what its sandbox got
// (a fork asks for nothing and gets its source's).
func TestBindTakesTheSandboxResources(t *testing.T) {
	clk := newFakeClock()
	c := newController(t, openStore(t), clk, nil)
	tk, err := c.Acquire(t.Context(), Request{Team: "team-a"})
	if err != nil {
		t.Fatal(err)
	}
	if err := tk.Bind(t.Context(), sandbox.Sandbox{ID: "sb-1", Resources: sandbox.Resources{VCPUs: 4, MemoryMB: 8192}}); err != nil {
		t.Fatal(err)
	}
	if st, _ := c.Status(t.Context(), "team-a"); st.VCPUs != 4 || st.MemoryMB != 8192 {
		t.Fatalf("status %+v, want 4 vCPUs and 8192 MB held", st)
	}
}

// BenchmarkAcquireBindRelease is what admission adds to one create and
// its end on SQLite, with nobody waiting: a compare-and-set to admit, one
// to bind, one to release; with the team holding none, and 1,999 slots.
func BenchmarkAcquireBindRelease(b *testing.B) {
	for _, held := range []int{0, 1999} {
		b.Run(fmt.Sprintf("held=%d", held), func(b *testing.B) { benchAcquire(b, held) })
	}
}

func benchAcquire(b *testing.B, held int) {
	s, err := sqlite.Open(filepath.Join(b.TempDir(), "paddock.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	// No sweep: the bench's sandboxes have no records.
	c, err := New(Config{Store: s, SweepEvery: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if _, err := c.SetLimits(ctx, "team-a", &TeamLimits{Limits: Limits{Concurrent: 2000}}); err != nil {
		b.Fatal(err)
	}
	for i := range held {
		tk, err := c.Acquire(ctx, Request{Team: "team-a"})
		if err != nil {
			b.Fatal(err)
		}
		if err := tk.Bind(ctx, sandbox.Sandbox{ID: fmt.Sprintf("held-%d", i)}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := range b.N {
		tk, err := c.Acquire(ctx, Request{Team: "team-a"})
		if err != nil {
			b.Fatal(err)
		}
		id := fmt.Sprintf("sb-%d", i)
		if err := tk.Bind(ctx, sandbox.Sandbox{ID: id}); err != nil {
			b.Fatal(err)
		}
		c.mu.Lock()
		c.released = append(c.released, release{"team-a", id})
		c.releaseLocked(ctx)
		c.mu.Unlock()
	}
}

// TestRestartPurges: a replica that starts again drops its last run's
// places in the queue and its holds that never got a sandbox, and keeps
// the others'.
func TestRestartPurges(t *testing.T) {
	clk := newFakeClock()
	s := openStore(t)
	old, err := New(Config{Store: s, Replica: "a", Now: clk.Now, After: clk.After})
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	setLimits(t, old, "team-x", TeamLimits{Limits: Limits{Concurrent: 2}})
	bound, _ := admitted(enqueue(t, old, "team-x"))
	if err := bound.Bind(t.Context(), sandbox.Sandbox{ID: "sb-1"}); err != nil {
		t.Fatal(err)
	}
	enqueue(t, old, "team-x") // admitted, never bound: the crash came first
	enqueue(t, old, "team-x") // waits
	other := newController(t, s, clk, func(cfg *Config) { cfg.Replica = "b" })
	clk.Advance(time.Millisecond)
	enqueue(t, other, "team-x") // waits, behind a's
	// a "crashes": nothing of it runs, its entries stay in the store.
	old.mu.Lock()
	old.queues, old.order = map[string][]*Waiter{}, nil
	old.mu.Unlock()
	old.Close()

	newController(t, s, clk, func(cfg *Config) { cfg.Replica = "a" })
	st, err := other.Status(t.Context(), "team-x")
	if err != nil {
		t.Fatal(err)
	}
	// a's bound hold and b's request (held or waiting) remain: 2, not 4.
	if st.Concurrent+st.Queued != 2 {
		t.Fatalf("after a's restart: %+v; want its bound hold and b's hold or place, nothing else of a's", st)
	}
}

// TestObserveWait: the wait hook hears 0 for a request admitted at once,
// the queued time for one admitted later, and a refusal as not admitted.
func TestObserveWait(t *testing.T) {
	clk := newFakeClock()
	type obs struct {
		waited   time.Duration
		admitted bool
	}
	var mu sync.Mutex
	var got []obs
	c := newController(t, openStore(t), clk, func(cfg *Config) {
		cfg.ObserveWait = func(d time.Duration, ok bool) {
			mu.Lock()
			got = append(got, obs{d, ok})
			mu.Unlock()
		}
	})
	setLimits(t, c, "team-a", TeamLimits{Limits: Limits{Concurrent: 1}})
	first := enqueue(t, c, "team-a")
	tk, ok := admitted(first)
	if !ok {
		t.Fatal("the first request is not admitted at once")
	}
	if err := tk.Bind(t.Context(), sandbox.Sandbox{ID: "sb-0"}); err != nil {
		t.Fatal(err)
	}
	second, third := enqueue(t, c, "team-a"), enqueue(t, c, "team-a")
	clk.Advance(3 * time.Second)
	c.Released("team-a", "sb-0")
	eventually(t, "the second request's admission", func() bool { _, ok := admitted(second); return ok })
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := third.Wait(ctx, nil); err == nil {
		t.Fatal("a cancelled wait was admitted")
	}
	mu.Lock()
	defer mu.Unlock()
	want := []obs{{0, true}, {3 * time.Second, true}, {3 * time.Second, false}}
	if !slices.Equal(got, want) {
		t.Errorf("observed %v, want %v", got, want)
	}
}
