package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/metering"
	"github.com/paddock-dev/paddock/internal/server"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/sqlite"
)

// withHistory points e at a second server over the same fakes whose
// History is a real SQLite store, and returns that store.
func withHistory(t *testing.T, e *teamsEnv) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "history.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv, err := server.New(server.Config{Sandboxes: e.sbs, Auth: e.auth, Accounts: e.auth, Snapshots: e.snaps, History: st})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	e.url = hs.URL
	return st
}

// TestCommandHistoryAfterStop: the server only reads the history (the
// node writes it): while a sandbox runs its agent answers for its
// commands, once it stopped the history does.
func TestCommandHistoryAfterStop(t *testing.T) {
	e := setupTeams(t)
	st := withHistory(t, e)

	var waited, detached api.Command
	json.Unmarshal(e.expect(t, e.memberA, "POST", "/api/v1/sandboxes/sb-a/commands", `{"cmd":"fail"}`, http.StatusCreated, ""), &waited)
	json.Unmarshal(e.expect(t, e.memberA, "POST", "/api/v1/sandboxes/sb-a/commands", `{"cmd":"sleep","args":["60"],"detached":true}`, http.StatusCreated, ""), &detached)

	// What the node records as they start: the waited one with its exit.
	for _, c := range []store.Command{
		{ID: waited.ID, SandboxID: "sb-a", TeamID: e.teamA, Cmd: "fail", StartedAt: waited.StartedAt, ExitCode: waited.ExitCode, FinishedAt: waited.FinishedAt},
		{ID: detached.ID, SandboxID: "sb-a", TeamID: e.teamA, Cmd: "sleep", Args: []string{"60"}, StartedAt: detached.StartedAt,
			Tag: "nap", PTYRows: 24, PTYCols: 80}, // as a tagged PTY session is recorded
	} {
		if err := st.AddCommand(t.Context(), c); err != nil {
			t.Fatal(err)
		}
	}

	// While it runs, the agent answers (the detached one is running).
	var live api.CommandList
	json.Unmarshal(e.expect(t, e.memberA, "GET", "/api/v1/sandboxes/sb-a/commands", "", http.StatusOK, ""), &live)
	if len(live.Commands) != 2 || live.Commands[1].Status != api.CommandRunning {
		t.Errorf("live list = %+v", live.Commands)
	}

	e.expect(t, e.memberA, "POST", "/api/v1/sandboxes/sb-a/stop", "", http.StatusOK, "")

	// Stopped: the history answers, the logs are gone.
	var past api.CommandList
	json.Unmarshal(e.expect(t, e.memberA, "GET", "/api/v1/sandboxes/sb-a/commands", "", http.StatusOK, ""), &past)
	if len(past.Commands) != 2 {
		t.Fatalf("history list = %+v", past.Commands)
	}
	if c := past.Commands[0]; c.Status != api.CommandExited || c.ExitCode == nil || *c.ExitCode != 3 || c.SandboxID != "sb-a" {
		t.Errorf("waited command from history = %+v", c)
	}
	if c := past.Commands[1]; c.Status != api.CommandUnknown || c.ExitCode != nil || c.Tag != "nap" ||
		c.PTY == nil || *c.PTY != (api.PTYSize{Rows: 24, Cols: 80}) {
		t.Errorf("detached command from history = %+v, want status unknown, its tag and terminal", c)
	}
	if c := past.Commands[0]; c.Tag != "" || c.PTY != nil {
		t.Errorf("waited command from history = %+v, want no tag nor terminal", c)
	}
	var one api.Command
	json.Unmarshal(e.expect(t, e.memberA, "GET", "/api/v1/sandboxes/sb-a/commands/"+waited.ID, "", http.StatusOK, ""), &one)
	if one.ID != waited.ID || one.ExitCode == nil {
		t.Errorf("get from history = %+v", one)
	}
	e.expect(t, e.memberA, "GET", "/api/v1/sandboxes/sb-a/commands/"+waited.ID+"/wait", "", http.StatusOK, "")
	e.expect(t, e.memberA, "GET", "/api/v1/sandboxes/sb-a/commands/cmd-99", "", http.StatusNotFound, "command_not_found")
	e.expect(t, e.memberA, "GET", "/api/v1/sandboxes/sb-a/commands/"+waited.ID+"/logs", "", http.StatusGone, "logs_gone")

	// Another team sees nothing of it.
	e.expect(t, e.memberB, "GET", "/api/v1/sandboxes/sb-a/commands", "", http.StatusNotFound, "sandbox_not_found")
	e.expect(t, e.memberB, "GET", "/api/v1/sandboxes/sb-a/commands/"+waited.ID, "", http.StatusNotFound, "sandbox_not_found")
}

// teamless authenticates every token as a member of no team.
type teamless struct{}

func (teamless) AuthenticateBearer(context.Context, string) (auth.Principal, error) {
	return auth.Principal{Name: "teamless", Role: store.RoleMember}, nil
}

// withMetering points e at a server whose Metering is a Meter on a real
// SQLite store, and returns that store.
func withMetering(t *testing.T, e *teamsEnv) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "usage.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	m, err := metering.New(metering.Config{Store: st, Prices: metering.Prices{CPUSecond: 0.5},
		Now: func() time.Time { return time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Sandboxes: e.sbs, Auth: e.auth, Accounts: e.auth, Metering: m})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	e.url = hs.URL
	return st
}

func TestUsage(t *testing.T) {
	e := setupTeams(t)
	// Without metering: 501.
	e.expect(t, e.memberA, "GET", "/api/v1/usage", "", http.StatusNotImplemented, "usage_unsupported")
	e.expect(t, e.host, "GET", "/api/v1/teams/"+e.teamA+"/budget", "", http.StatusNotImplemented, "usage_unsupported")
	st := withMetering(t, e)
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	for _, u := range []store.Usage{
		{ID: "sb-a1/1", SandboxID: "sb-a1", TeamID: e.teamA, ProjectID: "prj-1", Start: t0, End: t0.Add(time.Minute), CPUSeconds: 2, MemoryMBHours: 512, Creations: 1},
		{ID: "sb-a1/2", SandboxID: "sb-a1", TeamID: e.teamA, ProjectID: "prj-1", Start: t0.Add(time.Hour), End: t0.Add(61 * time.Minute), CPUSeconds: 4},
		{ID: "sb-a2/1", SandboxID: "sb-a2", TeamID: e.teamA, Start: t0.Add(2 * time.Hour), End: t0.Add(121 * time.Minute), CPUSeconds: 1},
		{ID: "sb-b1/1", SandboxID: "sb-b1", TeamID: e.teamB, Start: t0, End: t0.Add(time.Minute), CPUSeconds: 8},
	} {
		if err := st.AddUsage(t.Context(), u); err != nil {
			t.Fatal(err)
		}
	}
	list := func(token, query string) ([]string, api.UsageList) {
		t.Helper()
		var out api.UsageList
		if err := json.Unmarshal(e.expect(t, token, "GET", "/api/v1/usage"+query, "", http.StatusOK, ""), &out); err != nil {
			t.Fatal(err)
		}
		var rows []string
		for _, u := range out.Usage {
			row := u.Start.Format("15") + " " + u.ProjectID + " " + strconv.FormatFloat(u.CPUSeconds, 'f', -1, 64)
			if u.TeamID != e.teamA {
				row += " b"
			}
			if u.SandboxID != "" {
				row += " " + u.SandboxID
			}
			rows = append(rows, row)
		}
		return rows, out
	}
	everyTeam := []string{"10 prj-1 2", "10  8 b", "11 prj-1 4", "12  1"}
	if e.teamB < e.teamA { // rows of one bucket are ordered by team
		everyTeam[0], everyTeam[1] = everyTeam[1], everyTeam[0]
	}
	tests := []struct {
		name, token, query string
		want               []string
	}{
		{"own team by day", e.memberA, "", []string{"00  1", "00 prj-1 6"}},
		{"own team by hour", e.memberA, "?granularity=hour", []string{"10 prj-1 2", "11 prj-1 4", "12  1"}},
		{"project", e.memberA, "?projectId=prj-1&granularity=hour", []string{"10 prj-1 2", "11 prj-1 4"}},
		{"sandbox", e.memberA, "?sandboxId=sb-a1&granularity=hour", []string{"10 prj-1 2 sb-a1", "11 prj-1 4 sb-a1"}},
		{"another team's sandbox", e.memberA, "?sandboxId=sb-b1", nil},
		{"window", e.memberA, "?granularity=hour&since=" + t0.Add(90*time.Minute).Format(time.RFC3339) + "&until=" + t0.Add(4*time.Hour).Format(time.RFC3339),
			[]string{"11 prj-1 4", "12  1"}},
		{"own team by id", e.adminA, "?teamId=" + e.teamA + "&granularity=hour", []string{"10 prj-1 2", "11 prj-1 4", "12  1"}},
		{"the second team sees only its own", e.memberB, "?granularity=hour", []string{"10  8 b"}},
		{"host admin, every team", e.host, "?granularity=hour", everyTeam},
		{"host admin, one team", e.host, "?teamId=" + e.teamB, []string{"00  8 b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _ := list(tt.token, tt.query)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("usage = %q, want %q", got, tt.want)
			}
		})
	}
	t.Run("paging", func(t *testing.T) {
		var got []string
		query := "?granularity=hour&limit=1"
		for range 5 {
			rows, out := list(e.memberA, query)
			got = append(got, rows...)
			if out.NextCursor == "" {
				break
			}
			query = "?granularity=hour&limit=1&cursor=" + out.NextCursor
		}
		if want := []string{"10 prj-1 2", "11 prj-1 4", "12  1"}; !slices.Equal(got, want) {
			t.Fatalf("paged usage = %q, want %q", got, want)
		}
		// A's cursor shows B nothing of A's.
		_, first := list(e.memberA, "?granularity=hour&limit=1")
		rows, _ := list(e.memberB, "?granularity=hour&cursor="+first.NextCursor)
		for _, row := range rows {
			if !strings.HasSuffix(row, " b") {
				t.Fatalf("team B with A's cursor: %q", rows)
			}
		}
	})
	t.Run("cost", func(t *testing.T) {
		_, out := list(e.memberA, "?projectId=prj-1")
		if len(out.Usage) != 1 || out.Usage[0].Cost.CPU != 3 || out.Usage[0].Cost.Total != 3 || out.Currency != "USD" ||
			out.Usage[0].Creations != 1 || out.Granularity != "day" {
			t.Fatalf("usage %+v", out)
		}
	})
	e.expect(t, e.memberA, "GET", "/api/v1/usage?teamId="+e.teamB, "", http.StatusNotFound, "team_not_found")
	e.expect(t, e.memberA, "GET", "/api/v1/usage?since=yesterday", "", http.StatusBadRequest, "invalid_query")
	e.expect(t, e.memberA, "GET", "/api/v1/usage?granularity=week", "", http.StatusBadRequest, "invalid_query")
	e.expect(t, e.memberA, "GET", "/api/v1/usage?limit=0", "", http.StatusBadRequest, "invalid_query")
	e.expect(t, e.memberA, "GET", "/api/v1/usage?cursor=%21", "", http.StatusBadRequest, "invalid_cursor")
	e.expect(t, e.memberA, "GET", "/api/v1/usage?since=2026-03-02T00:00:00Z&until=2026-03-01T00:00:00Z", "", http.StatusBadRequest, "invalid_query")

	// A principal without a team (not one the token store makes today, but
	// any authenticator might) lists nothing, not every team's usage.
	m, err := metering.New(metering.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Sandboxes: e.sbs, Auth: teamless{}, Metering: m})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	e.url = hs.URL
	if got, _ := list("any", ""); len(got) != 0 {
		t.Errorf("a teamless principal lists %v", got)
	}
}

func TestBudgets(t *testing.T) {
	e := setupTeams(t)
	withMetering(t, e)
	path := "/api/v1/teams/" + e.teamA + "/budget"
	e.expect(t, e.memberA, "GET", path, "", http.StatusNotFound, "budget_not_found")
	// Only the host admin sets or removes a budget; another team sees none.
	e.expect(t, e.adminA, "PUT", path, `{"monthlyLimit":10}`, http.StatusForbidden, "host_admin_required")
	e.expect(t, e.adminB, "PUT", path, `{"monthlyLimit":10}`, http.StatusNotFound, "team_not_found")
	e.expect(t, e.host, "PUT", "/api/v1/teams/team-nope/budget", `{"monthlyLimit":10}`, http.StatusNotFound, "team_not_found")
	e.expect(t, e.host, "PUT", path, `{"monthlyLimit":-1}`, http.StatusBadRequest, "")
	e.expect(t, e.host, "PUT", path, `{"monthlyLimit":10,"thresholds":[0]}`, http.StatusBadRequest, "invalid_budget")
	var b api.Budget
	json.Unmarshal(e.expect(t, e.host, "PUT", path, `{"monthlyLimit":6,"thresholds":[80,50],"hardCap":true}`, http.StatusOK, ""), &b)
	if b.TeamID != e.teamA || b.MonthlyLimit != 6 || !b.HardCap || !slices.Equal(b.Thresholds, []int{50, 80}) || b.Currency != "USD" {
		t.Fatalf("budget %+v", b)
	}
	json.Unmarshal(e.expect(t, e.memberA, "GET", path, "", http.StatusOK, ""), &b)
	if b.MonthlyLimit != 6 || b.Capped {
		t.Fatalf("budget as its team sees it: %+v", b)
	}
	e.expect(t, e.memberB, "GET", path, "", http.StatusNotFound, "team_not_found")
	e.expect(t, e.adminA, "DELETE", path, "", http.StatusForbidden, "host_admin_required")
	e.expect(t, e.host, "DELETE", path, "", http.StatusNoContent, "")
	e.expect(t, e.host, "DELETE", path, "", http.StatusNotFound, "budget_not_found")
}
