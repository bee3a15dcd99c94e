package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/metering"
	"github.com/paddock-dev/paddock/internal/node"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

func TestHistoryFinished(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "paddock.db"))
	h := newNodeHistory(s, newTestMeter(t, s))
	ctx := t.Context()
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	sb := sandbox.Sandbox{ID: "sb-hist", TeamID: "team-a"}

	// c1 was recorded by Started; c2 and c3 (still running at the stop)
	// were not (their writes failed); c4 was, and still runs.
	for _, c := range []store.Command{
		{ID: "c1", SandboxID: sb.ID, TeamID: "team-a", Cmd: "make", StartedAt: t0},
		{ID: "c4", SandboxID: sb.ID, TeamID: "team-a", Cmd: "serve", StartedAt: t0.Add(4 * time.Second)},
	} {
		if err := s.AddCommand(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	one, killed := 1, 137
	cmds := []agent.Command{
		{ID: "c1", Cmd: "make", Status: agent.StatusExited, ExitCode: &one, StartedAt: t0, FinishedAt: t0.Add(time.Second)},
		{ID: "c2", Cmd: "install", Args: []string{"-y"}, Status: agent.StatusKilled, Signal: "SIGKILL", ExitCode: &killed,
			StartedAt: t0.Add(2 * time.Second), FinishedAt: t0.Add(3 * time.Second)},
		{ID: "c3", Cmd: "sleep", Status: agent.StatusRunning, StartedAt: t0.Add(3 * time.Second)},
		{ID: "c4", Cmd: "serve", Status: agent.StatusRunning, StartedAt: t0.Add(4 * time.Second)},
	}
	// Twice: a retried stop must not fail or duplicate.
	for range 2 {
		if err := h.Finished(ctx, sb, cmds); err != nil {
			t.Fatalf("Finished: %v", err)
		}
	}
	got, _, err := s.ListCommands(ctx, sb.ID, store.Page{})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		id   string
		exit *int
	}{{"c1", &one}, {"c2", &killed}, {"c3", nil}, {"c4", nil}}
	if len(got) != len(want) {
		t.Fatalf("history has %d commands, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		c := got[i]
		switch {
		case c.ID != w.id || c.TeamID != "team-a":
			t.Errorf("command %d = %s of team %q, want %s of team-a", i, c.ID, c.TeamID, w.id)
		case (c.ExitCode == nil) != (w.exit == nil) || (w.exit != nil && *c.ExitCode != *w.exit):
			t.Errorf("command %s exit = %v, want %v", c.ID, c.ExitCode, w.exit)
		case w.exit != nil && c.FinishedAt.IsZero():
			t.Errorf("command %s has no finish time", c.ID)
		}
	}
	if got[1].Cmd != "install" || len(got[1].Args) != 1 {
		t.Errorf("added command = %+v, want the agent's cmd and args", got[1])
	}
}

func TestHistoryStarted(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "paddock.db"))
	h := newNodeHistory(s, newTestMeter(t, s))
	ctx := t.Context()
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	sb := sandbox.Sandbox{ID: "sb-start", TeamID: "team-a"}
	zero := 0
	running := agent.Command{ID: "c1", Cmd: "sleep", Args: []string{"60"}, Cwd: "/work", Sudo: true, Tag: "nap",
		PTY: &agent.PTYSize{Rows: 24, Cols: 80}, Status: agent.StatusRunning, StartedAt: t0}
	waited := agent.Command{ID: "c2", Cmd: "true", Status: agent.StatusExited, ExitCode: &zero, StartedAt: t0, FinishedAt: t0.Add(time.Second)}
	for _, c := range []agent.Command{running, waited} {
		if err := h.Started(ctx, sb, c); err != nil {
			t.Fatalf("Started %s: %v", c.ID, err)
		}
	}
	// A stop that recorded it first, or a retry, is no error.
	if err := h.Started(ctx, sb, running); err != nil {
		t.Fatalf("Started again: %v", err)
	}
	got, _, err := s.ListCommands(ctx, sb.ID, store.Page{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("history has %d commands, want 2: %+v", len(got), got)
	}
	if c := got[0]; c.ID != "c1" || c.TeamID != "team-a" || c.Cmd != "sleep" || len(c.Args) != 1 || c.Cwd != "/work" || !c.Sudo ||
		c.Tag != "nap" || c.PTYRows != 24 || c.PTYCols != 80 || !c.StartedAt.Equal(t0) || c.ExitCode != nil {
		t.Errorf("running command recorded as %+v", c)
	}
	if c := got[1]; c.ID != "c2" || c.ExitCode == nil || *c.ExitCode != 0 || !c.FinishedAt.Equal(t0.Add(time.Second)) ||
		c.Tag != "" || c.PTYRows != 0 {
		t.Errorf("waited command recorded as %+v, want its exit", c)
	}
	// The stop then adds the exit of the one that ran on.
	one := 1
	finished := running
	finished.Status, finished.ExitCode, finished.FinishedAt = agent.StatusExited, &one, t0.Add(time.Minute)
	if err := h.Finished(ctx, sb, []agent.Command{finished, waited}); err != nil {
		t.Fatal(err)
	}
	if got, _, _ = s.ListCommands(ctx, sb.ID, store.Page{}); len(got) != 2 || got[0].ExitCode == nil || *got[0].ExitCode != 1 {
		t.Errorf("after the stop: %+v", got)
	}
}

func TestHistoryUsed(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "paddock.db"))
	h := newNodeHistory(s, newTestMeter(t, s))
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	u := node.Usage{SandboxID: "sb-use", TeamID: "team-a", ProjectID: "prj-1", Start: t0, End: t0.Add(time.Hour),
		CPUSeconds: 2.5, MemoryMBHours: 1024, MemoryMB: 1024, NetRxBytes: 10, NetTxBytes: 20, CountersOK: true}
	for range 2 { // a retried write is harmless
		if err := h.Used(t.Context(), u); err != nil {
			t.Fatalf("Used: %v", err)
		}
	}
	got, err := s.ListUsage(t.Context(), store.UsageFilter{TeamID: "team-a"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("%d usage records, want 1", len(got))
	}
	g := got[0]
	if g.SandboxID != "sb-use" || g.ProjectID != "prj-1" || g.CPUSeconds != 2.5 || g.MemoryMBHours != 1024 ||
		g.NetRxBytes != 10 || g.NetTxBytes != 20 || !g.Start.Equal(t0) || !g.End.Equal(t0.Add(time.Hour)) {
		t.Errorf("usage = %+v", g)
	}
}

// newTestMeter is a Meter on s whose clock stands at 2026-03-01 12:00 UTC.
func newTestMeter(t *testing.T, s store.Store) *metering.Meter {
	t.Helper()
	m, err := metering.New(metering.Config{Store: s, Now: func() time.Time { return time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestUpgradeFromFileRecords: an older paddock kept its records as JSON
// files; the first start on the store imports them and re-adopts the
// sandbox that still runs.
func TestUpgradeFromFileRecords(t *testing.T) {
	dir := t.TempDir()
	d := fake.NewDriver(t, fake.DriverConfig{})
	old := startManager(t, dir, d, nil)
	sb, err := old.Create(t.Context(), sandbox.CreateRequest{TeamID: "team-a"})
	if err != nil {
		t.Fatal(err)
	}
	old.Close()

	s := openStore(t, filepath.Join(dir, "paddock.db"))
	m := startManager(t, dir, d, newNodeRecords(s, "local"))
	if got, err := m.Get(t.Context(), sb.ID); err != nil || got.State != sandbox.Running || got.TeamID != "team-a" {
		t.Fatalf("after the upgrade %s is %s (team %q), %v; want running", sb.ID, got.State, got.TeamID, err)
	}
	if _, err := m.Agent(t.Context(), sb.ID); err != nil {
		t.Errorf("re-adopted sandbox has no agent: %v", err)
	}
	if recs, err := s.ListSandboxes(t.Context(), "local"); err != nil || len(recs) != 1 {
		t.Errorf("store holds %d records of node local (%v), want 1", len(recs), err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node", "sandboxes.imported", sb.ID+".json")); err != nil {
		t.Errorf("imported file not kept aside: %v", err)
	}
}

// TestHistoryBounded: a sandbox that runs commands without end keeps its
// newest maxCommandsPerSandbox, another sandbox's history untouched, and
// its stop trims what the last round left.
func TestHistoryBounded(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "paddock.db"))
	h := newNodeHistory(s, newTestMeter(t, s))
	ctx := t.Context()
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	busy, quiet := sandbox.Sandbox{ID: "sb-busy", TeamID: "team-a"}, sandbox.Sandbox{ID: "sb-quiet", TeamID: "team-b"}
	if err := h.Started(ctx, quiet, agent.Command{ID: "q", Cmd: "true", StartedAt: t0}); err != nil {
		t.Fatal(err)
	}
	const n = maxCommandsPerSandbox + trimEvery + trimEvery/2
	for i := range n {
		c := agent.Command{ID: fmt.Sprintf("c%05d", i), Cmd: "true", StartedAt: t0.Add(time.Duration(i) * time.Millisecond)}
		if err := h.Started(ctx, busy, c); err != nil {
			t.Fatal(err)
		}
	}
	count := func(id string) (int, string) {
		t.Helper()
		var all []store.Command
		page := store.Page{Limit: store.MaxPageLimit}
		for {
			got, next, err := s.ListCommands(ctx, id, page)
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, got...)
			if next == "" {
				break
			}
			page.Cursor = next
		}
		if len(all) == 0 {
			return 0, ""
		}
		return len(all), all[0].ID
	}
	// Trimmed at every trimEvery-th command: at most trimEvery-1 over.
	if got, _ := count(busy.ID); got < maxCommandsPerSandbox || got >= maxCommandsPerSandbox+trimEvery {
		t.Errorf("after %d commands the history holds %d, want [%d, %d)", n, got, maxCommandsPerSandbox, maxCommandsPerSandbox+trimEvery)
	}
	if err := h.Finished(ctx, busy, nil); err != nil {
		t.Fatal(err)
	}
	wantFirst := fmt.Sprintf("c%05d", n-maxCommandsPerSandbox)
	if got, first := count(busy.ID); got != maxCommandsPerSandbox || first != wantFirst {
		t.Errorf("after the stop: %d commands from %s, want %d from %s (the newest)", got, first, maxCommandsPerSandbox, wantFirst)
	}
	if got, _ := count(quiet.ID); got != 1 {
		t.Errorf("another sandbox's history: %d commands, want 1", got)
	}
}

// TestCutCommandLine: a command line past the budget keeps what fits, cut
// on a character boundary, and says how much it left out.
func TestCutCommandLine(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cmd      string
		args     []string
		max      int
		wantCmd  string
		wantArgs []string
	}{
		{"fits", "echo", []string{"a", "b"}, 6, "echo", []string{"a", "b"}},
		{"last arg cut", "echo", []string{"abc", "def"}, 8, "echo", []string{"abc", "d", "…[+2 bytes]"}},
		{"args dropped", "echo", []string{"abcd", "efgh", "ijkl"}, 8, "echo", []string{"abcd", "…[+8 bytes]"}},
		{"command cut", "abcdefghij", []string{"x"}, 4, "abcd", []string{"…[+7 bytes]"}},
		{"utf-8 boundary", "é", []string{"ééé"}, 4, "é", []string{"é", "…[+4 bytes]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd, args := cutCommandLine(tc.cmd, tc.args, tc.max)
			if cmd != tc.wantCmd || !slices.Equal(args, tc.wantArgs) {
				t.Errorf("got %q %q, want %q %q", cmd, args, tc.wantCmd, tc.wantArgs)
			}
			for _, a := range args {
				if !utf8.ValidString(a) {
					t.Errorf("argument %q is not valid UTF-8", a)
				}
			}
		})
	}
}

// TestHistoryPrunedAtStart: commands older than the retention are gone
// once the daemon has started; newer ones stay.
func TestHistoryPrunedAtStart(t *testing.T) {
	noGoroutinesLeft(t)
	dir := newDataDir(t)
	st := openStore(t, filepath.Join(dir, "given.db"))
	now := time.Now()
	for id, at := range map[string]time.Time{"old": now.Add(-48 * time.Hour), "new": now.Add(-time.Hour)} {
		if err := st.AddCommand(t.Context(), store.Command{ID: id, SandboxID: "sb-gone", Cmd: "true", StartedAt: at}); err != nil {
			t.Fatal(err)
		}
	}
	serve(t, Config{DataDir: dir, NoNetwork: true, HistoryRetention: 24 * time.Hour}, WithDriver(fake.NewDriver(t, fake.DriverConfig{})), WithStore(st))
	var ids []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		got, _, err := st.ListCommands(t.Context(), "sb-gone", store.Page{})
		if err != nil {
			t.Fatal(err)
		}
		ids = ids[:0]
		for _, c := range got {
			ids = append(ids, c.ID)
		}
		if len(ids) == 1 {
			break
		}
	}
	if !slices.Equal(ids, []string{"new"}) {
		t.Errorf("history after start: %v, want [new]", ids)
	}
}
