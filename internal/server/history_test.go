package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/auth"
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
		{ID: detached.ID, SandboxID: "sb-a", TeamID: e.teamA, Cmd: "sleep", Args: []string{"60"}, StartedAt: detached.StartedAt},
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
	if c := past.Commands[1]; c.Status != api.CommandUnknown || c.ExitCode != nil {
		t.Errorf("detached command from history = %+v, want status unknown", c)
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

func TestUsage(t *testing.T) {
	e := setupTeams(t)
	// Without a history: 501.
	e.expect(t, e.memberA, "GET", "/api/v1/usage", "", http.StatusNotImplemented, "usage_unsupported")
	st := withHistory(t, e)
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	for _, u := range []store.Usage{
		{ID: "sb-a1", SandboxID: "sb-a1", TeamID: e.teamA, ProjectID: "prj-1", Start: t0, End: t0.Add(time.Hour), CPUSeconds: 2, MemoryMBHours: 512},
		{ID: "sb-a2", SandboxID: "sb-a2", TeamID: e.teamA, Start: t0.Add(2 * time.Hour), End: t0.Add(3 * time.Hour), CPUSeconds: 1},
		{ID: "sb-b1", SandboxID: "sb-b1", TeamID: e.teamB, Start: t0, End: t0.Add(time.Hour)},
	} {
		if err := st.AddUsage(t.Context(), u); err != nil {
			t.Fatal(err)
		}
	}
	list := func(token, query string) []string {
		t.Helper()
		var out api.UsageList
		if err := json.Unmarshal(e.expect(t, token, "GET", "/api/v1/usage"+query, "", http.StatusOK, ""), &out); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, u := range out.Usage {
			ids = append(ids, u.SandboxID)
		}
		return ids
	}
	tests := []struct {
		name, token, query string
		want               []string
	}{
		{"own team", e.memberA, "", []string{"sb-a1", "sb-a2"}},
		{"project", e.memberA, "?projectId=prj-1", []string{"sb-a1"}},
		{"window", e.memberA, "?since=" + t0.Add(90*time.Minute).Format(time.RFC3339) + "&until=" + t0.Add(4*time.Hour).Format(time.RFC3339), []string{"sb-a2"}},
		{"own team by id", e.adminA, "?teamId=" + e.teamA, []string{"sb-a1", "sb-a2"}},
		{"host admin, every team", e.host, "", []string{"sb-a1", "sb-b1", "sb-a2"}},
		{"host admin, one team", e.host, "?teamId=" + e.teamB, []string{"sb-b1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := list(tt.token, tt.query)
			if len(got) != len(tt.want) {
				t.Fatalf("usage = %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("usage = %v, want %v", got, tt.want)
				}
			}
		})
	}
	e.expect(t, e.memberA, "GET", "/api/v1/usage?teamId="+e.teamB, "", http.StatusNotFound, "team_not_found")
	e.expect(t, e.memberA, "GET", "/api/v1/usage?since=yesterday", "", http.StatusBadRequest, "invalid_query")

	e.expect(t, e.memberA, "GET", "/api/v1/usage?since=2026-03-02T00:00:00Z&until=2026-03-01T00:00:00Z", "", http.StatusBadRequest, "invalid_query")
	// A principal without a team (not one the token store makes today, but
	// any authenticator might) lists nothing, not every team's usage.
	srv, err := server.New(server.Config{Sandboxes: e.sbs, Auth: teamless{}, History: st})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	e.url = hs.URL
	if got := list("any", ""); len(got) != 0 {
		t.Errorf("a teamless principal lists %v", got)
	}
}
