package e2e

import (
	"errors"
	"math"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/sdk"
)

// TestHistorySurvivesStopAndRestart: commands run in a team's sandbox
// (waited, detached, one killed, one still running at the stop); the
// sandbox stops; the whole stack restarts on the same data dir. The
// stopped sandbox's commands are all listed from the store with their exit
// codes (the one still running then as "unknown"; a tagged terminal
// session with its tag and terminal size), its logs answer 410,
// its usage has one record with CPU time and provisioned memory, and
// another team sees none of it.
func TestHistorySurvivesStopAndRestart(t *testing.T) {
	historyPool := netip.MustParsePrefix("10.213.247.0/24")
	dir := newDataDir(t)
	// With a network of its own, so that the usage has veth counters.
	first := startStack(t, dir, stackOptions{network: historyPool})
	ctx := ctxFor(t, 3*time.Minute)
	secret := func(s *stack, name string) string {
		t.Helper()
		team, err := s.auth.CreateTeam(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		sec, _, err := s.auth.CreateToken(ctx, team.ID, "", name+"-ci", store.RoleMember, 0)
		if err != nil {
			t.Fatal(err)
		}
		return sec
	}
	tokA, tokB := secret(first, "alpha"), secret(first, "beta")
	a := sdk.New(first.http.URL, tokA)
	sb, err := a.Create(ctx, api.CreateSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}

	runCmd := func(req api.CommandRequest) *sdk.Command {
		t.Helper()
		c, err := sb.RunCommand(ctx, req)
		if err != nil {
			t.Fatalf("run %s: %v", req.Cmd, err)
		}
		return c
	}
	// Waited: some CPU work, then a non-zero exit.
	burn := runCmd(api.CommandRequest{Cmd: "sh", Args: []string{"-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"}})
	fail := runCmd(api.CommandRequest{Cmd: "sh", Args: []string{"-c", "exit 3"}})
	// Traffic over the veth: a lookup the host's resolver for the sandbox
	// answers (it fails: the test's upstream is unreachable).
	lookup := runCmd(api.CommandRequest{Cmd: "python3", Args: []string{"-c", "import socket\ntry: socket.getaddrinfo('example.test', 80)\nexcept OSError: pass"}})
	// Detached: one that finishes, one killed, one still running at the stop.
	done := runCmd(api.CommandRequest{Cmd: "sh", Args: []string{"-c", "echo hi"}, Detached: true})
	if _, err := done.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	killed := runCmd(api.CommandRequest{Cmd: "sleep", Args: []string{"300"}, Detached: true})
	if err := killed.Kill(ctx, "TERM"); err != nil {
		t.Fatal(err)
	}
	if _, err := killed.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	sleeper := runCmd(api.CommandRequest{Cmd: "sleep", Args: []string{"300"}, Detached: true})
	// A terminal session, still running at the stop.
	term, err := sb.StartPTY(ctx, api.PTYRequest{Cmd: "sleep", Args: []string{"300"}, Rows: 30, Cols: 100, Tag: "shell-1"})
	if err != nil {
		t.Fatalf("start a terminal session: %v", err)
	}
	if burn.ExitCodeOr(-1) != 0 || fail.ExitCodeOr(-1) != 3 {
		t.Fatalf("waited commands exited %d and %d, want 0 and 3", burn.ExitCodeOr(-1), fail.ExitCodeOr(-1))
	}
	if err := sb.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	first.shutdown(t)

	second := startStack(t, dir, stackOptions{network: historyPool})
	a = sdk.New(second.http.URL, tokA) // tokens live in the store too
	b := sdk.New(second.http.URL, tokB)
	sb, err = a.Get(ctx, sb.ID)
	if err != nil || sb.Status != api.StatusStopped {
		t.Fatalf("after the restart the sandbox is %v, %v; want stopped", sb, err)
	}
	cmds, err := sb.Commands(ctx)
	if err != nil {
		t.Fatalf("commands of the stopped sandbox: %v", err)
	}
	want := []struct {
		id     string
		status string
		exit   int // -1: none
	}{
		{burn.ID, api.CommandExited, 0},
		{fail.ID, api.CommandExited, 3},
		{lookup.ID, api.CommandExited, 0},
		{done.ID, api.CommandExited, 0},
		{killed.ID, api.CommandExited, 128 + 15}, // as the agent reported it
		{sleeper.ID, api.CommandUnknown, -1},
		{term.ID, api.CommandUnknown, -1},
	}
	if len(cmds) != len(want) {
		t.Fatalf("history lists %d commands, want %d", len(cmds), len(want))
	}
	for i, w := range want {
		c := cmds[i]
		if c.ID != w.id || c.Status != w.status || c.ExitCodeOr(-1) != w.exit || c.SandboxID != sb.ID {
			t.Errorf("command %d = %s %s exit %d, want %s %s exit %d", i, c.ID, c.Status, c.ExitCodeOr(-1), w.id, w.status, w.exit)
		}
	}
	if c := cmds[len(cmds)-1]; c.Tag != "shell-1" || c.PTY == nil || *c.PTY != (api.PTYSize{Rows: 30, Cols: 100}) {
		t.Errorf("the terminal session from history = %+v, want its tag and terminal", c)
	}
	if c := cmds[0]; c.Tag != "" || c.PTY != nil {
		t.Errorf("a plain command from history = %+v, want no tag nor terminal", c)
	}
	if got, err := sb.Command(ctx, fail.ID); err != nil || got.ExitCodeOr(-1) != 3 || got.Cmd != "sh" {
		t.Errorf("one command from history: %+v, %v", got, err)
	}
	// The output went with the sandbox.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, second.http.URL+"/api/v1/sandboxes/"+sb.ID+"/commands/"+fail.ID+"/logs", nil)
	req.Header.Set("Authorization", "Bearer "+tokA)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusGone {
		t.Errorf("logs of a stopped sandbox's command: %d, want 410", resp.StatusCode)
	}

	usage, err := a.AllUsage(ctx, sdk.UsageQuery{SandboxID: sb.ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(usage.Usage) != 1 {
		t.Fatalf("%d usage rows, want 1: %+v", len(usage.Usage), usage)
	}
	u := usage.Usage[0]
	hours := sb.StoppedAt.Sub(sb.StartedAt).Hours()
	// Samples keep times to the millisecond: equal within a few
	// milliseconds' worth.
	wantGBh := float64(sb.Resources.MemoryMB) / 1024 * hours
	if u.SandboxID != sb.ID || u.TeamID != sb.TeamID || u.CPUSeconds <= 0 || hours <= 0 || u.NetTxBytes == 0 || u.Creations != 1 ||
		math.Abs(u.MemoryGBHours-wantGBh) > float64(sb.Resources.MemoryMB)/1024*5e-3/3600 {
		t.Errorf("usage = %+v; want cpu > 0 and %d MB × %g h", u, sb.Resources.MemoryMB, hours)
	}
	t.Logf("usage of %s: %.3f CPU s, %.6f GB·h over %s, net rx %d tx %d bytes", sb.ID, u.CPUSeconds, u.MemoryGBHours, sb.StoppedAt.Sub(sb.StartedAt), u.NetRxBytes, u.NetTxBytes)

	// Another team: not found, and no usage of alpha's.
	if _, err := b.Sandbox(sb.ID).Commands(ctx); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("beta lists alpha's history: %v", err)
	}
	if _, err := b.Sandbox(sb.ID).Command(ctx, fail.ID); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("beta gets alpha's command: %v", err)
	}
	if bu, err := b.ListUsage(ctx, sdk.UsageQuery{}); err != nil || len(bu.Usage) != 0 {
		t.Errorf("beta's usage = %+v, %v; want none", bu, err)
	}
	if _, err := b.ListUsage(ctx, sdk.UsageQuery{TeamID: sb.TeamID}); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("beta asks for alpha's usage: %v", err)
	}
}
