package metering

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/sqlite"
)

// t0 is a quarter past an hour, so that intervals cross hour boundaries.
var t0 = time.Date(2026, 12, 6, 10, 15, 0, 0, time.UTC)

type rig struct {
	t     *testing.T
	clock *fake.Clock
	sbs   *fake.Sandboxes
	store *sqlite.Store
	ev    *events
	stops *stopper
	cfg   Config
}

func newRig(t *testing.T) *rig {
	t.Helper()
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "paddock.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clock := fake.NewClock(t0)
	r := &rig{t: t, clock: clock, store: st, ev: &events{}, stops: &stopper{},
		sbs: fake.NewSandboxes(fake.SandboxesConfig{Now: clock.Now, Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 1024}})}
	r.cfg = Config{Store: st, Sandboxes: r.sbs, Events: r.ev, Enforcer: r.stops, Now: clock.Now,
		Prices: Prices{CPUSecond: 0.01, MemoryGBHour: 0.1, NetworkEgressGB: 1, StorageGBMonth: 730, Creation: 0.5}}
	return r
}

// meter is a new Meter on the rig's store, as after a restart.
func (r *rig) meter() *Meter {
	r.t.Helper()
	m, err := New(r.cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	return m
}

func (r *rig) create(team, project string) sandbox.Sandbox {
	r.t.Helper()
	sb, err := r.sbs.Create(r.t.Context(), sandbox.CreateRequest{TeamID: team, ProjectID: project})
	if err != nil {
		r.t.Fatal(err)
	}
	return sb
}

func (r *rig) counters(id string, cpu time.Duration, rx, tx uint64) {
	r.sbs.SetStats(id, runtime.Stats{CPUUsage: cpu, NetworkRxBytes: rx, NetworkTxBytes: tx, MemoryPeak: 64 << 20})
}

// sum adds up every sample and roll-up of a sandbox (or of a team, id "").
func (r *rig) sum(f store.UsageFilter) store.Usage {
	r.t.Helper()
	var s store.Usage
	for _, list := range []func(context.Context, store.UsageFilter) ([]store.Usage, error){r.store.ListUsage, r.store.ListUsageRollups} {
		us, err := list(r.t.Context(), f)
		if err != nil {
			r.t.Fatal(err)
		}
		for _, u := range us {
			add(&s, u)
		}
	}
	return s
}

type events struct {
	mu  sync.Mutex
	got []store.Event
}

func (e *events) Publish(_ context.Context, ev store.Event) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, ev)
	return nil
}

func (e *events) types() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, ev := range e.got {
		out = append(out, ev.Type+":"+ev.Data["percent"])
	}
	return out
}

type stopper struct {
	mu    sync.Mutex
	teams []string
}

func (s *stopper) StopTeam(_ context.Context, team, _ string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.teams = append(s.teams, team)
	return nil
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

func TestChainNoLossNoDoubleCount(t *testing.T) {
	tests := []struct {
		name string
		// between the ticks: restart the meter (a new one on the same
		// store), or retry the last tick (a write that succeeded but whose
		// answer was lost).
		restart, retry bool
	}{
		{name: "one meter"},
		{name: "restart between ticks", restart: true},
		{name: "retried tick", retry: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			sb := r.create("team-a", "prj-1")
			m := r.meter()
			ctx := t.Context()
			cpu := time.Duration(0)
			var rx, tx uint64
			for i := range 5 {
				r.clock.Advance(40 * time.Second) // crosses 10:59:xx → 11:00
				if i == 2 {
					r.clock.Advance(50 * time.Minute)
				}
				cpu += 3 * time.Second
				rx, tx = rx+1000, tx+333
				r.counters(sb.ID, cpu, rx, tx)
				if err := m.SampleSandboxes(ctx); err != nil {
					t.Fatal(err)
				}
				if tc.retry {
					m.mu.Lock()
					delete(m.points, sb.ID) // as if the answer had been lost
					m.mu.Unlock()
					if err := m.SampleSandboxes(ctx); err != nil {
						t.Fatal(err)
					}
				}
				if tc.restart {
					m = r.meter()
				}
			}
			// The stop: counters read just before, a little later.
			r.clock.Advance(10 * time.Second)
			cpu += time.Second
			stop := store.Time(r.clock.Now())
			if err := m.Final(ctx, Stopped{SandboxID: sb.ID, TeamID: "team-a", ProjectID: "prj-1", MemoryMB: 1024,
				Start: sb.StartedAt, End: stop, CountersOK: true, CPUSeconds: cpu.Seconds(), NetRxBytes: rx, NetTxBytes: tx}); err != nil {
				t.Fatal(err)
			}
			// A late tick (the sandbox was listed before its stop) and a
			// second Final book nothing more.
			r.clock.Advance(time.Minute)
			if err := m.SampleSandboxes(ctx); err != nil {
				t.Fatal(err)
			}
			if err := r.meter().Final(ctx, Stopped{SandboxID: sb.ID, TeamID: "team-a", MemoryMB: 1024,
				Start: sb.StartedAt, End: stop, CountersOK: true, CPUSeconds: cpu.Seconds()}); err != nil {
				t.Fatal(err)
			}

			got := r.sum(store.UsageFilter{SandboxID: sb.ID})
			wantMem := 1024 * stop.Sub(sb.StartedAt).Hours()
			if !near(got.CPUSeconds, cpu.Seconds()) || !near(got.MemoryMBHours, wantMem) ||
				got.NetRxBytes != rx || got.NetTxBytes != tx || got.Creations != 1 || got.MemoryPeakBytes != 64<<20 {
				t.Fatalf("sum = %+v, want cpu %v, memory %v MB-h, rx %d, tx %d, 1 creation", got, cpu.Seconds(), wantMem, rx, tx)
			}
			samples, err := r.store.ListUsage(ctx, store.UsageFilter{SandboxID: sb.ID})
			if err != nil {
				t.Fatal(err)
			}
			for i, u := range samples {
				if u.Start.Truncate(time.Hour) != u.End.Add(-time.Millisecond).Truncate(time.Hour) {
					t.Errorf("sample %s crosses an hour: [%s, %s)", u.ID, u.Start, u.End)
				}
				if i > 0 && u.Start != samples[i-1].End {
					t.Errorf("gap or overlap between samples %s and %s", samples[i-1].ID, u.ID)
				}
			}
		})
	}
}

func TestStopWithoutCounters(t *testing.T) {
	r := newRig(t)
	sb := r.create("team-a", "")
	m := r.meter()
	r.clock.Advance(time.Minute)
	r.counters(sb.ID, 2*time.Second, 10, 20)
	if err := m.SampleSandboxes(t.Context()); err != nil {
		t.Fatal(err)
	}
	r.clock.Advance(time.Minute)
	if err := m.Final(t.Context(), Stopped{SandboxID: sb.ID, TeamID: "team-a", MemoryMB: 512, Start: sb.StartedAt,
		End: r.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	got := r.sum(store.UsageFilter{SandboxID: sb.ID})
	// CPU and bytes stay at the last reading; provisioned memory runs to the stop.
	if !near(got.CPUSeconds, 2) || got.NetTxBytes != 20 || !near(got.MemoryMBHours, 1024.0/60+512.0/60) {
		t.Fatalf("sum = %+v", got)
	}
}

func TestRollUpKeepsTotals(t *testing.T) {
	r := newRig(t)
	r.cfg.RawRetention = 3 * time.Hour
	m := r.meter()
	ctx := t.Context()
	a1, a2, b := r.create("team-a", "prj-1"), r.create("team-a", "prj-2"), r.create("team-b", "")
	cpu := time.Duration(0)
	for range 6 * 6 { // six hours, every ten minutes
		r.clock.Advance(10 * time.Minute)
		cpu += time.Second
		for _, sb := range []sandbox.Sandbox{a1, a2, b} {
			r.counters(sb.ID, cpu, 0, uint64(cpu.Seconds())*1000)
		}
		m.Tick(ctx)
	}
	before, err := m.Query(ctx, Query{Granularity: Hour, Limit: MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.RollUp(ctx); err != nil {
		t.Fatal(err)
	}
	samples, _ := r.store.ListUsage(ctx, store.UsageFilter{})
	rollups, _ := r.store.ListUsageRollups(ctx, store.UsageFilter{})
	if len(rollups) == 0 || len(samples) == 0 {
		t.Fatalf("after roll-up: %d samples, %d roll-ups; want some of each", len(samples), len(rollups))
	}
	horizon := m.horizon(m.now())
	for _, u := range samples {
		if u.Start.Before(horizon) {
			t.Fatalf("sample %s before the horizon %s survived", u.ID, horizon)
		}
	}
	if err := m.RollUp(ctx); err != nil { // again: the same
		t.Fatal(err)
	}
	after, err := m.Query(ctx, Query{Granularity: Hour, Limit: MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	if len(before.Rows) != len(after.Rows) {
		t.Fatalf("rows: %d before the roll-up, %d after", len(before.Rows), len(after.Rows))
	}
	for i := range before.Rows {
		bt, at := before.Rows[i].Totals, after.Rows[i].Totals
		if !near(bt.CPUSeconds, at.CPUSeconds) || !near(bt.MemoryGBHours, at.MemoryGBHours) || bt.NetTxBytes != at.NetTxBytes ||
			bt.Creations != at.Creations {
			t.Fatalf("row %d: %+v before, %+v after", i, before.Rows[i], after.Rows[i])
		}
	}
	day, err := m.Query(ctx, Query{TeamID: "team-a", Granularity: Day})
	if err != nil {
		t.Fatal(err)
	}
	var dayCPU float64
	for _, row := range day.Rows {
		dayCPU += row.Totals.CPUSeconds
	}
	if len(day.Rows) != 2 || !near(dayCPU, 2*cpu.Seconds()) {
		t.Fatalf("team-a by day: %+v, want 2 rows (one per project) with %v s of CPU", day.Rows, 2*cpu.Seconds())
	}
}

func TestQuery(t *testing.T) {
	r := newRig(t)
	m := r.meter()
	ctx := t.Context()
	sbs := []sandbox.Sandbox{r.create("team-a", "prj-1"), r.create("team-a", "prj-2"), r.create("team-b", "prj-9")}
	for i := range 3 * 60 { // three hours, every minute
		r.clock.Advance(time.Minute)
		for _, sb := range sbs {
			r.counters(sb.ID, time.Duration(i+1)*time.Second, 0, 0)
		}
		if err := m.SampleSandboxes(ctx); err != nil {
			t.Fatal(err)
		}
	}
	keys := func(p Page) []string {
		var out []string
		for _, row := range p.Rows {
			out = append(out, row.Start.Format("15")+" "+row.TeamID+" "+row.ProjectID+" "+row.SandboxID)
		}
		return out
	}
	tests := []struct {
		name string
		q    Query
		want []string
	}{
		{"team by hour", Query{TeamID: "team-a", Granularity: Hour},
			[]string{"10 team-a prj-1 ", "10 team-a prj-2 ", "11 team-a prj-1 ", "11 team-a prj-2 ",
				"12 team-a prj-1 ", "12 team-a prj-2 ", "13 team-a prj-1 ", "13 team-a prj-2 "}},
		{"project", Query{TeamID: "team-a", ProjectID: "prj-2", Granularity: Hour, Since: t0.Add(time.Hour), Until: t0.Add(2 * time.Hour)},
			[]string{"11 team-a prj-2 ", "12 team-a prj-2 "}},
		{"sandbox", Query{TeamID: "team-b", SandboxID: sbs[2].ID, Granularity: Day}, []string{"00 team-b prj-9 " + sbs[2].ID}},
		{"another team's sandbox", Query{TeamID: "team-a", SandboxID: sbs[2].ID}, nil},
		{"every team by day", Query{}, []string{"00 team-a prj-1 ", "00 team-a prj-2 ", "00 team-b prj-9 "}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := m.Query(ctx, tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if got := keys(p); !slices.Equal(got, tc.want) {
				t.Fatalf("rows = %q, want %q", got, tc.want)
			}
		})
	}

	t.Run("paging", func(t *testing.T) {
		var got []string
		q := Query{Granularity: Hour, Limit: 3}
		for pages := 0; ; pages++ {
			p, err := m.Query(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, keys(p)...)
			if p.NextCursor == "" {
				break
			}
			if pages > 10 {
				t.Fatal("paging does not end")
			}
			q.Cursor = p.NextCursor
		}
		all, err := m.Query(ctx, Query{Granularity: Hour, Limit: MaxLimit})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, keys(all)) || len(got) != 12 {
			t.Fatalf("paged rows %q, want %q", got, keys(all))
		}
	})
	t.Run("cost", func(t *testing.T) {
		p, err := m.Query(ctx, Query{TeamID: "team-b"})
		if err != nil {
			t.Fatal(err)
		}
		row := p.Rows[0]
		want := row.Totals.CPUSeconds*0.01 + row.Totals.MemoryGBHours*0.1 + 0.5
		if !near(row.Cost.Total, want) || row.Totals.Creations != 1 || !near(row.Totals.MemoryGBHours, 3) {
			t.Fatalf("row %+v, want total cost %v, 3 GB-h", row, want)
		}
	})
	t.Run("sandbox by minute", func(t *testing.T) {
		from := t0.Add(time.Hour)
		p, err := m.Query(ctx, Query{TeamID: "team-b", SandboxID: sbs[2].ID, Granularity: Minute, Since: from, Until: from.Add(3 * time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Rows) != 3 {
			t.Fatalf("%d rows, want one a minute for 3 minutes: %+v", len(p.Rows), p.Rows)
		}
		for i, row := range p.Rows {
			if start := from.Add(time.Duration(i) * time.Minute); !row.Start.Equal(start) || !row.End.Equal(start.Add(time.Minute)) ||
				!near(row.Totals.CPUSeconds, 1) || row.Totals.MemoryPeakBytes != 64<<20 || row.SandboxID != sbs[2].ID {
				t.Errorf("row %d %+v, want [%s, +1m) with 1 CPU second", i, row, start)
			}
		}
	})
	for _, bad := range []Query{{Granularity: "week"}, {Granularity: Minute, TeamID: "team-a"}, {Cursor: "!!"}, {Since: t0, Until: t0}} {
		if _, err := m.Query(ctx, bad); !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("Query(%+v) = %v, want ErrInvalid", bad, err)
		}
	}
}

type storage map[string]uint64

func (s storage) TeamStorage(context.Context) (map[string]uint64, error) { return s, nil }

func TestStorage(t *testing.T) {
	r := newRig(t)
	r.cfg.Storage = storage{"team-a": 2e9}
	m := r.meter()
	ctx := t.Context()
	for range 3 {
		r.clock.Advance(30 * time.Minute)
		if err := m.SampleStorage(ctx); err != nil {
			t.Fatal(err)
		}
	}
	m = r.meter() // a restart: continues from the last sample
	r.clock.Advance(time.Minute)
	if err := m.SampleStorage(ctx); err != nil {
		t.Fatal(err)
	}
	got := r.sum(store.UsageFilter{TeamID: "team-a"})
	// The first sample covers the Interval before the first tick, then
	// 30 + 30 minutes, then the minute after the restart.
	want := 2 * (DefaultInterval + 61*time.Minute).Hours()
	if !near(got.StorageGBHours, want) {
		t.Fatalf("storage = %v GB-h, want %v", got.StorageGBHours, want)
	}

	// Another host on the same store books the storage it holds, at the
	// same moments, without clashing with this one's.
	cfgB := r.cfg
	cfgB.Node, cfgB.Storage = "b", storage{"team-a": 1e9}
	b, err := New(cfgB)
	if err != nil {
		t.Fatal(err)
	}
	next := r.clock.Now().Truncate(time.Hour).Add(time.Hour) // 12:00; a's chain ends at 11:46
	r.clock.Set(next.Add(-30 * time.Second))
	if err := b.SampleStorage(ctx); err != nil { // b: [11:58:30, 11:59:30)
		t.Fatal(err)
	}
	r.clock.Set(next.Add(30 * time.Minute))
	for _, meter := range []*Meter{m, b} { // both book a piece from 12:00
		if err := meter.SampleStorage(ctx); err != nil {
			t.Fatal(err)
		}
	}
	more := r.sum(store.UsageFilter{TeamID: "team-a"}).StorageGBHours - got.StorageGBHours
	if wantMore := 2*(44*time.Minute).Hours() + 1*(31*time.Minute+30*time.Second).Hours(); !near(more, wantMore) {
		t.Fatalf("two hosts booked %v GB-h more, want %v", more, wantMore)
	}
}

// TestSharedStorage: what the replicas keep together (every replica reads
// the same 2 GB from the snapshot directory) is booked once, by the
// leader, in one chain the next leader continues: a handover neither
// drops nor repeats a minute, and the hosts' own storage is still booked
// by each.
func TestSharedStorage(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	leader := "a"
	meters := map[string]*Meter{}
	for _, node := range []string{"a", "b"} {
		cfg := r.cfg
		cfg.Node, cfg.Storage, cfg.SharedStorage = node, storage{"team-a": 1e9}, storage{"team-a": 2e9}
		cfg.Leader = func() bool { return leader == node }
		m, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		meters[node] = m
	}
	tick := func(n int) {
		t.Helper()
		for range n {
			r.clock.Advance(DefaultInterval)
			for _, node := range []string{"a", "b"} {
				if err := meters[node].SampleStorage(ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	// a leads for 10 minutes, b for 20, a again for 30.
	tick(10)
	leader = "b"
	tick(20)
	leader = "a"
	tick(30)

	var shared, host float64
	us, err := r.store.ListUsage(ctx, store.UsageFilter{TeamID: "team-a"})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range us {
		if strings.HasPrefix(u.ID, "storage-shared/") {
			shared += u.StorageGBHours
		} else {
			host += u.StorageGBHours
		}
	}
	// Each chain starts an Interval before its first tick: at t0.
	if want := 2 * time.Hour.Hours(); !near(shared, want) {
		t.Errorf("shared storage = %v GB-h, want %v (2 GB once, for the hour)", shared, want)
	}
	if want := 2 * 1 * time.Hour.Hours(); !near(host, want) {
		t.Errorf("the hosts' storage = %v GB-h, want %v (1 GB on each host)", host, want)
	}
}

func TestBudget(t *testing.T) {
	r := newRig(t)
	m := r.meter()
	ctx := t.Context()
	sb := r.create("team-a", "")
	other := r.create("team-b", "")
	// 1 CPU-second costs 0.01; 1 GB-hour 0.1; the creation 0.5.
	if _, err := m.SetBudget(ctx, store.Budget{TeamID: "team-a", MonthlyLimit: 1, HardCap: true}); err != nil {
		t.Fatal(err)
	}
	if err := m.Admit("team-a"); err != nil {
		t.Fatalf("admit under budget: %v", err)
	}
	cpu := time.Duration(0)
	for range 6 {
		r.clock.Advance(time.Minute)
		cpu += 10 * time.Second // 0.1 a minute
		r.counters(sb.ID, cpu, 0, 0)
		r.counters(other.ID, cpu, 0, 0)
		m.Tick(ctx)
	}
	st, err := m.Budget(ctx, "team-a")
	if err != nil {
		t.Fatal(err)
	}
	if st.Percent < 100 || !st.Capped {
		t.Fatalf("status %+v, want capped", st)
	}
	err = m.Admit("team-a")
	if !errors.Is(err, sandbox.ErrBudgetExceeded) || sandbox.CodeOf(err) != "budget_exceeded" {
		t.Fatalf("admit over budget = %v", err)
	}
	if err := m.Admit("team-b"); err != nil {
		t.Fatalf("another team: %v", err)
	}
	if got := r.stops.teams; len(got) == 0 || slices.ContainsFunc(got, func(s string) bool { return s != "team-a" }) {
		t.Fatalf("teams stopped: %q", got)
	}
	want := []string{"budget.threshold:50", "budget.threshold:80", "budget.capped:", "budget.threshold:100"}
	if got := r.ev.types(); !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
	// Warnings go once a month, even from a new meter (another replica).
	r.meter().Tick(ctx)
	if got := r.ev.types(); len(got) != len(want) {
		t.Fatalf("events after another check: %q", got)
	}
	// Raising the budget lifts the cap at once.
	if _, err := m.SetBudget(ctx, store.Budget{TeamID: "team-a", MonthlyLimit: 100, HardCap: true}); err != nil {
		t.Fatal(err)
	}
	if err := m.Admit("team-a"); err != nil {
		t.Fatalf("admit after raise: %v", err)
	}
	// A new month starts afresh.
	if _, err := m.SetBudget(ctx, store.Budget{TeamID: "team-a", MonthlyLimit: 1, Thresholds: []int{90}}); err != nil {
		t.Fatal(err)
	}
	if err := m.Admit("team-a"); err != nil {
		t.Fatalf("no hard cap: %v", err)
	}
	r.clock.Set(time.Date(2027, 1, 1, 0, 5, 0, 0, time.UTC))
	m.Tick(ctx)
	st, err = m.Budget(ctx, "team-a")
	if err != nil {
		t.Fatal(err)
	}
	if st.Budget.Month != "2027-01" || st.Spend >= 1 {
		t.Fatalf("new month: %+v", st)
	}
	if err := m.DeleteBudget(ctx, "team-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Budget(ctx, "team-a"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("deleted budget: %v", err)
	}
}

func TestMeterLoopStopsOnClose(t *testing.T) {
	r := newRig(t)
	r.cfg.Interval = time.Millisecond
	r.cfg.Now = nil
	m := r.meter()
	r.create("team-a", "")
	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
}

// A restart after a downtime longer than the raw retention: the first
// sample after it books the whole gap from the booking floor on, and the
// roll-up that follows keeps every figure.
func TestLongDowntime(t *testing.T) {
	r := newRig(t)
	r.cfg.RawRetention = 3 * time.Hour
	sb := r.create("team-a", "prj-1")
	ctx := t.Context()
	r.clock.Advance(time.Minute)
	r.counters(sb.ID, time.Second, 0, 100)
	if err := r.meter().SampleSandboxes(ctx); err != nil {
		t.Fatal(err)
	}
	r.clock.Advance(10 * time.Hour) // paddock down
	r.counters(sb.ID, 5*time.Second, 0, 700)
	m := r.meter()
	m.Tick(ctx) // as the loop does: sample first, then roll up
	if err := m.RollUp(ctx); err != nil {
		t.Fatal(err)
	}
	got := r.sum(store.UsageFilter{TeamID: "team-a"})
	wantMem := 1024 * (10*time.Hour + time.Minute).Hours()
	if !near(got.CPUSeconds, 5) || got.NetTxBytes != 700 || !near(got.MemoryMBHours, wantMem) || got.Creations != 1 {
		t.Fatalf("sum %+v, want 5 CPU s, 700 bytes, %v MB-h, 1 creation", got, wantMem)
	}
	samples, _ := r.store.ListUsage(ctx, store.UsageFilter{})
	for _, u := range samples {
		if u.Start.Before(m.horizon(m.now())) {
			t.Errorf("sample %s starts before the horizon", u.ID)
		}
	}
	// Rolled-up and raw hours are never both counted by a query.
	p, err := m.Query(ctx, Query{TeamID: "team-a", Granularity: Day})
	if err != nil {
		t.Fatal(err)
	}
	var cpu float64
	for _, row := range p.Rows {
		cpu += row.Totals.CPUSeconds
	}
	if !near(cpu, 5) {
		t.Fatalf("query: %v CPU s, want 5", cpu)
	}
}

// A stop whose counters were read before the loop's last reading (the two
// raced) adds nothing and takes nothing back; its time still counts.
func TestStopRacingTheLoop(t *testing.T) {
	r := newRig(t)
	sb := r.create("team-a", "")
	m := r.meter()
	r.clock.Advance(time.Minute)
	r.counters(sb.ID, 3*time.Second, 0, 300)
	if err := m.SampleSandboxes(t.Context()); err != nil {
		t.Fatal(err)
	}
	r.clock.Advance(time.Second)
	if err := m.Final(t.Context(), Stopped{SandboxID: sb.ID, TeamID: "team-a", MemoryMB: 1024, Start: sb.StartedAt,
		End: r.clock.Now(), CountersOK: true, CPUSeconds: 2.5, NetTxBytes: 250}); err != nil {
		t.Fatal(err)
	}
	got := r.sum(store.UsageFilter{SandboxID: sb.ID})
	if !near(got.CPUSeconds, 3) || got.NetTxBytes != 300 || !near(got.MemoryMBHours, 1024*(61*time.Second).Hours()) {
		t.Fatalf("sum %+v", got)
	}
}
