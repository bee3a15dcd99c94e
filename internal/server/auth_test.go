package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/server"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/sqlite"
	"github.com/paddock-dev/paddock/sdk"
)

// teamsEnv is a server over a real SQLite store with two teams, each with
// an admin and a member token, and the bootstrap host admin.
type teamsEnv struct {
	srv                              *server.Server
	sbs                              *fake.Sandboxes
	fa                               *fake.Agent
	snaps                            *fake.Snapshots
	auth                             *auth.Authenticator
	url                              string
	host                             string // host admin token
	teamA, teamB                     string
	adminA, memberA, adminB, memberB string
}

func setupTeams(t *testing.T) *teamsEnv {
	t.Helper()
	ctx := t.Context()
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "paddock.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	a, err := auth.New(ctx, auth.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	e := &teamsEnv{auth: a}
	if e.host, _, err = a.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	token := func(team, name, role string) string {
		secret, _, err := a.CreateToken(ctx, team, "", name, role, 0)
		if err != nil {
			t.Fatal(err)
		}
		return secret
	}
	for _, x := range []struct {
		id            *string
		name          string
		admin, member *string
	}{{&e.teamA, "a", &e.adminA, &e.memberA}, {&e.teamB, "b", &e.adminB, &e.memberB}} {
		team, err := a.CreateTeam(ctx, x.name)
		if err != nil {
			t.Fatal(err)
		}
		*x.id = team.ID
		*x.admin = token(team.ID, x.name+"-admin", store.RoleAdmin)
		*x.member = token(team.ID, x.name+"-member", store.RoleMember)
	}
	fa, ac := startFakeAgent(t)
	e.fa = fa
	e.sbs = newFakeSandboxes(ac)
	e.snaps = fake.NewSnapshots(e.sbs, "")
	e.srv, err = server.New(server.Config{Sandboxes: e.sbs, Auth: a, Accounts: a, Snapshots: e.snaps})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(e.srv.Handler())
	t.Cleanup(hs.Close)
	e.url = hs.URL
	for _, sb := range []sandbox.Sandbox{
		{ID: "sb-a", TeamID: e.teamA, State: sandbox.Running, Image: "host", CreatedAt: time.Unix(0, 0), Ports: []sandbox.Port{{Port: 3000}}},
		{ID: "sb-b", TeamID: e.teamB, State: sandbox.Running, Image: "host", CreatedAt: time.Unix(0, 0), Ports: []sandbox.Port{{Port: 3000}}},
		{ID: "sb-legacy", State: sandbox.Running, Image: "host", CreatedAt: time.Unix(0, 0)},
	} {
		e.sbs.Add(sb)
	}
	e.snaps.Add(&image.Snapshot{ID: "snap-b", Source: "sb-b", TeamID: e.teamB})
	return e
}

// do sends a request with token and returns the status and body.
func (e *teamsEnv) do(t *testing.T, token, method, path, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, e.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// expect checks a status and, when code is set, the error code.
func (e *teamsEnv) expect(t *testing.T, token, method, path, body string, status int, code string) []byte {
	t.Helper()
	got, data := e.do(t, token, method, path, body)
	if got != status {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, got, status, data)
	}
	if code != "" {
		if c := errorCode(t, data).Code; c != code {
			t.Fatalf("%s %s: code %q, want %q", method, path, c, code)
		}
	}
	return data
}

// sandboxRoutes reads the per-sandbox routes from api/openapi.yaml, which
// TestOpenAPICoversRoutes keeps equal to the server's route table, so a
// new route is covered here without editing this test.
func sandboxRoutes(t *testing.T) [][2]string {
	t.Helper()
	f, err := os.Open("../../api/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pathLine := regexp.MustCompile(`^  (/sandboxes/\{id\}\S*):\s*$`)
	otherPath := regexp.MustCompile(`^  /\S*:\s*$`)
	methodLine := regexp.MustCompile(`^    (get|put|post|delete|patch):\s*$`)
	var out [][2]string
	current := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case pathLine.MatchString(line):
			current = pathLine.FindStringSubmatch(line)[1]
		case otherPath.MatchString(line):
			current = ""
		case current != "" && methodLine.MatchString(line):
			out = append(out, [2]string{strings.ToUpper(methodLine.FindStringSubmatch(line)[1]), current})
		}
	}
	if len(out) < 20 {
		t.Fatalf("found only %d per-sandbox routes in openapi.yaml: %v", len(out), out)
	}
	return out
}

// bodies are valid request bodies, so a route would act if the ownership
// check let it through.
var bodies = map[string]string{
	"POST /sandboxes/{id}/extend-timeout":          `{"durationMs":1000}`,
	"POST /sandboxes/{id}/ports":                   `{"ports":[{"port":8080}]}`,
	"POST /sandboxes/{id}/ports/{port}/signed-url": `{}`,
	"PUT /sandboxes/{id}/network-policy":           `{"mode":"deny-all"}`,
	"POST /sandboxes/{id}/commands":                `{"cmd":"echo","detached":true}`,
	"POST /sandboxes/{id}/commands/{cmd}/kill":     `{}`,
	"POST /sandboxes/{id}/directories":             `{"path":"/tmp/x"}`,
	"POST /sandboxes/{id}/fork":                    `{}`,
}

func TestAnotherTeamsSandboxIsNotFound(t *testing.T) {
	e := setupTeams(t)
	for _, rt := range sandboxRoutes(t) {
		method, tmpl := rt[0], rt[1]
		path := strings.NewReplacer("{cmd}", "cmd-1", "{port}", "3000").Replace(tmpl)
		if strings.HasSuffix(tmpl, "/files") || strings.HasSuffix(tmpl, "/archive") || strings.HasSuffix(tmpl, "/directories") {
			path += "?path=/tmp/f"
		}
		t.Run(method+" "+tmpl, func(t *testing.T) {
			for _, tok := range []string{e.memberA, e.adminA} {
				// Put back what an earlier stop or delete of the own one changed.
				e.sbs.Add(sandbox.Sandbox{ID: "sb-a", TeamID: e.teamA, State: sandbox.Running, Image: "host",
					CreatedAt: time.Unix(0, 0), Ports: []sandbox.Port{{Port: 3000}}})
				other := strings.Replace(path, "{id}", "sb-b", 1)
				e.expect(t, tok, method, "/api/v1"+other, bodies[method+" "+tmpl], http.StatusNotFound, "sandbox_not_found")
				// A team's own, and a pre-teams sandbox, differ: not a
				// sandbox_not_found (a host admin's, the second).
				own := strings.Replace(path, "{id}", "sb-a", 1)
				if status, body := e.do(t, tok, method, "/api/v1"+own, bodies[method+" "+tmpl]); status == http.StatusNotFound && errorCode(t, body).Code == "sandbox_not_found" {
					t.Errorf("own sandbox: %d %s", status, body)
				}
				legacy := strings.Replace(path, "{id}", "sb-legacy", 1)
				e.expect(t, tok, method, "/api/v1"+legacy, bodies[method+" "+tmpl], http.StatusNotFound, "sandbox_not_found")
			}
		})
	}
	// Nothing of team B's was touched: no mutation, no agent call, no snapshot.
	for _, m := range e.sbs.Mutations() {
		if strings.Contains(m, "sb-b") || strings.Contains(m, "sb-legacy") {
			t.Errorf("mutation of another team's sandbox: %s", m)
		}
	}
	if n := e.snaps.Taken("sb-b"); n != 0 {
		t.Errorf("%d snapshots of sb-b taken", n)
	}
	// The host admin reaches every team's sandbox.
	e.expect(t, e.host, "GET", "/api/v1/sandboxes/sb-b", "", http.StatusOK, "")
	e.expect(t, e.host, "GET", "/api/v1/sandboxes/sb-legacy", "", http.StatusOK, "")
}

func TestSandboxTeamAndListFiltering(t *testing.T) {
	e := setupTeams(t)
	create := func(tok string) api.Sandbox {
		t.Helper()
		var sb api.Sandbox
		if err := json.Unmarshal(e.expect(t, tok, "POST", "/api/v1/sandboxes", `{}`, http.StatusCreated, ""), &sb); err != nil {
			t.Fatal(err)
		}
		return sb
	}
	// Interleaved, so that team A's list must skip B's between its own.
	var wantA, wantB []string
	for range 3 {
		a, b := create(e.memberA), create(e.adminB)
		if a.TeamID != e.teamA || b.TeamID != e.teamB {
			t.Fatalf("teams of new sandboxes: %q %q", a.TeamID, b.TeamID)
		}
		wantA, wantB = append(wantA, a.ID), append(wantB, b.ID)
	}
	wantA, wantB = append(wantA, "sb-a"), append(wantB, "sb-b")
	slices.Sort(wantA)
	slices.Sort(wantB)
	e.expect(t, e.memberB, "GET", "/api/v1/sandboxes/"+wantA[0], "", http.StatusNotFound, "sandbox_not_found")

	list := func(tok string, limit int) []string {
		t.Helper()
		var ids []string
		cursor := ""
		for range 50 {
			var page api.SandboxList
			q := fmt.Sprintf("/api/v1/sandboxes?limit=%d&cursor=%s", limit, cursor)
			if err := json.Unmarshal(e.expect(t, tok, "GET", q, "", http.StatusOK, ""), &page); err != nil {
				t.Fatal(err)
			}
			if len(page.Sandboxes) > limit {
				t.Fatalf("page of %d with limit %d", len(page.Sandboxes), limit)
			}
			for _, sb := range page.Sandboxes {
				ids = append(ids, sb.ID)
			}
			if page.NextCursor == "" {
				return ids
			}
			cursor = page.NextCursor
		}
		t.Fatal("list never ended")
		return nil
	}
	for _, limit := range []int{1, 2, 100} {
		if got := list(e.memberA, limit); !slices.Equal(got, wantA) {
			t.Errorf("team A, limit %d: %v, want %v", limit, got, wantA)
		}
		if got := list(e.memberB, limit); !slices.Equal(got, wantB) {
			t.Errorf("team B, limit %d: %v, want %v", limit, got, wantB)
		}
	}
	if got := list(e.host, 100); len(got) != len(wantA)+len(wantB)+1 {
		t.Errorf("host admin sees %v", got)
	}
}

func TestSnapshotsBelongToTeams(t *testing.T) {
	e := setupTeams(t)
	var snap api.Snapshot
	if err := json.Unmarshal(e.expect(t, e.memberA, "POST", "/api/v1/sandboxes/sb-a/snapshot", "", http.StatusCreated, ""), &snap); err != nil {
		t.Fatal(err)
	}
	e.expect(t, e.memberB, "GET", "/api/v1/snapshots/"+snap.ID, "", http.StatusNotFound, "snapshot_not_found")
	e.expect(t, e.memberB, "DELETE", "/api/v1/snapshots/"+snap.ID, "", http.StatusNotFound, "snapshot_not_found")
	e.expect(t, e.memberB, "POST", "/api/v1/sandboxes", `{"snapshot":"`+snap.ID+`"}`, http.StatusNotFound, "snapshot_not_found")
	e.expect(t, e.memberA, "GET", "/api/v1/snapshots/snap-b", "", http.StatusNotFound, "snapshot_not_found")

	var listA api.SnapshotList
	if err := json.Unmarshal(e.expect(t, e.memberA, "GET", "/api/v1/snapshots", "", http.StatusOK, ""), &listA); err != nil {
		t.Fatal(err)
	}
	if len(listA.Snapshots) != 1 || listA.Snapshots[0].ID != snap.ID {
		t.Errorf("team A's snapshots: %+v", listA.Snapshots)
	}
	var listHost api.SnapshotList
	if err := json.Unmarshal(e.expect(t, e.host, "GET", "/api/v1/snapshots", "", http.StatusOK, ""), &listHost); err != nil {
		t.Fatal(err)
	}
	if ids := []string{}; len(listHost.Snapshots) != 2 || !slices.ContainsFunc(listHost.Snapshots, func(s api.Snapshot) bool { return s.ID == snap.ID }) ||
		!slices.ContainsFunc(listHost.Snapshots, func(s api.Snapshot) bool { return s.ID == "snap-b" }) {
		for _, s := range listHost.Snapshots {
			ids = append(ids, s.ID)
		}
		t.Errorf("the host admin's snapshots: %v, want every team's", ids)
	}
	var fork api.Sandbox
	if err := json.Unmarshal(e.expect(t, e.memberA, "POST", "/api/v1/sandboxes/sb-a/fork", `{}`, http.StatusCreated, ""), &fork); err != nil {
		t.Fatal(err)
	}
	if fork.TeamID != e.teamA {
		t.Errorf("fork's team = %q", fork.TeamID)
	}
	var fromSnap api.Sandbox
	if err := json.Unmarshal(e.expect(t, e.adminA, "POST", "/api/v1/sandboxes", `{"snapshot":"`+snap.ID+`"}`, http.StatusCreated, ""), &fromSnap); err != nil {
		t.Fatal(err)
	}
	e.expect(t, e.memberA, "DELETE", "/api/v1/snapshots/"+snap.ID, "", http.StatusNoContent, "")
	e.expect(t, e.host, "DELETE", "/api/v1/snapshots/snap-b", "", http.StatusNoContent, "")
}

func TestProxyOwnerTokenChecksTeam(t *testing.T) {
	e := setupTeams(t)
	ctx := t.Context()
	expired, _, err := e.auth.CreateToken(ctx, e.teamA, "", "short", store.RoleMember, time.Nanosecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Millisecond)
	tests := []struct {
		name, token, sandbox string
		kind                 error
		code                 string
	}{
		{"own team", e.memberA, "sb-a", nil, ""},
		{"host admin", e.host, "sb-b", nil, ""},
		{"other team", e.memberA, "sb-b", sandbox.ErrNotFound, "sandbox_not_found"},
		{"pre-teams sandbox", e.adminB, "sb-legacy", sandbox.ErrNotFound, "sandbox_not_found"},
		{"unknown sandbox", e.memberA, "sb-zzz", sandbox.ErrNotFound, "sandbox_not_found"},
		{"no token", "", "sb-a", sandbox.ErrUnauthorized, "missing_token"},
		{"bad token", "pdk_nope", "sb-a", sandbox.ErrUnauthorized, "invalid_token"},
		{"expired token", expired, "sb-a", sandbox.ErrUnauthorized, "expired_token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := e.srv.Authorize(ctx, tt.token, tt.sandbox)
			if tt.kind == nil {
				if err != nil {
					t.Fatalf("Authorize = %v", err)
				}
				return
			}
			if !errors.Is(err, tt.kind) || sandbox.CodeOf(err) != tt.code {
				t.Errorf("Authorize = %v (code %q), want %v %s", err, sandbox.CodeOf(err), tt.kind, tt.code)
			}
		})
	}
}

func TestAdminEndpoints(t *testing.T) {
	e := setupTeams(t)

	// Teams: the host admin only creates; others see their own team.
	e.expect(t, e.memberA, "POST", "/api/v1/teams", `{"name":"c"}`, http.StatusForbidden, "host_admin_required")
	e.expect(t, e.adminA, "POST", "/api/v1/teams", `{"name":"c"}`, http.StatusForbidden, "host_admin_required")
	var teamC api.Team
	if err := json.Unmarshal(e.expect(t, e.host, "POST", "/api/v1/teams", `{"name":"c"}`, http.StatusCreated, ""), &teamC); err != nil {
		t.Fatal(err)
	}
	e.expect(t, e.host, "POST", "/api/v1/teams", `{"name":"c"}`, http.StatusConflict, "")
	e.expect(t, e.host, "POST", "/api/v1/teams", `{"name":""}`, http.StatusBadRequest, "invalid_name")
	var teams api.TeamList
	json.Unmarshal(e.expect(t, e.memberA, "GET", "/api/v1/teams", "", http.StatusOK, ""), &teams) //nolint:errcheck
	if len(teams.Teams) != 1 || teams.Teams[0].ID != e.teamA {
		t.Errorf("member's teams: %+v", teams)
	}
	json.Unmarshal(e.expect(t, e.host, "GET", "/api/v1/teams", "", http.StatusOK, ""), &teams) //nolint:errcheck
	if len(teams.Teams) != 4 {                                                                 // default, a, b, c
		t.Errorf("host admin's teams: %+v", teams)
	}

	// Users: a team's admins add them; members list them; other teams are 404.
	usersA := "/api/v1/teams/" + e.teamA + "/users"
	e.expect(t, e.memberA, "POST", usersA, `{"email":"x@example.com"}`, http.StatusForbidden, "admin_required")
	e.expect(t, e.adminB, "POST", usersA, `{"email":"x@example.com"}`, http.StatusNotFound, "team_not_found")
	e.expect(t, e.host, "POST", usersA, `{"subject":"x"}`, http.StatusBadRequest, "invalid_user") // no OIDC issuer to default to
	e.expect(t, e.adminA, "POST", usersA, `{"email":"x@example.com","role":"owner"}`, http.StatusBadRequest, "invalid_role")
	// Binding an OIDC identity decides which team a person lands in: a team
	// admin squatting on someone meant for another team is refused.
	e.expect(t, e.adminA, "POST", usersA, `{"issuer":"https://id.example.com","subject":"x","email":"x@example.com"}`, http.StatusForbidden, "host_admin_required")
	var u, plain api.User
	json.Unmarshal(e.expect(t, e.host, "POST", usersA, `{"issuer":"https://id.example.com","subject":"x","email":"x@example.com"}`, http.StatusCreated, ""), &u) //nolint:errcheck
	if u.TeamID != e.teamA || u.Role != store.RoleMember || u.ID == "" {
		t.Errorf("user = %+v", u)
	}
	json.Unmarshal(e.expect(t, e.adminA, "POST", usersA, `{"name":"Plain"}`, http.StatusCreated, ""), &plain) //nolint:errcheck
	var users api.UserList
	json.Unmarshal(e.expect(t, e.memberA, "GET", usersA, "", http.StatusOK, ""), &users) //nolint:errcheck
	if len(users.Users) != 2 || !slices.ContainsFunc(users.Users, func(x api.User) bool { return x.ID == u.ID }) {
		t.Errorf("users = %+v", users)
	}
	e.expect(t, e.memberB, "GET", usersA, "", http.StatusNotFound, "team_not_found")
	e.expect(t, e.host, "GET", usersA, "", http.StatusOK, "")

	// Removing a user revokes its tokens and frees its identity.
	var plainTok api.CreatedToken
	json.Unmarshal(e.expect(t, e.adminA, "POST", "/api/v1/tokens", `{"name":"plain","userId":"`+plain.ID+`"}`, http.StatusCreated, ""), &plainTok) //nolint:errcheck
	e.expect(t, plainTok.Secret, "GET", "/api/v1/sandboxes/sb-a", "", http.StatusOK, "")
	e.expect(t, e.memberA, "DELETE", usersA+"/"+plain.ID, "", http.StatusForbidden, "admin_required")
	e.expect(t, e.adminB, "DELETE", usersA+"/"+plain.ID, "", http.StatusNotFound, "team_not_found")
	e.expect(t, e.adminB, "DELETE", "/api/v1/teams/"+e.teamB+"/users/"+plain.ID, "", http.StatusNotFound, "user_not_found")
	e.expect(t, e.adminA, "DELETE", usersA+"/"+plain.ID, "", http.StatusNoContent, "")
	e.expect(t, plainTok.Secret, "GET", "/api/v1/sandboxes/sb-a", "", http.StatusUnauthorized, "")
	e.expect(t, e.adminA, "DELETE", usersA+"/"+plain.ID, "", http.StatusNotFound, "user_not_found")
	e.expect(t, e.host, "DELETE", usersA+"/"+u.ID, "", http.StatusNoContent, "")
	json.Unmarshal(e.expect(t, e.host, "POST", "/api/v1/teams/"+e.teamB+"/users", `{"issuer":"https://id.example.com","subject":"x"}`, http.StatusCreated, ""), &u) //nolint:errcheck

	// Tokens: team admins for their own team, the host admin for any.
	e.expect(t, e.memberA, "POST", "/api/v1/tokens", `{"name":"x"}`, http.StatusForbidden, "admin_required")
	e.expect(t, e.adminA, "POST", "/api/v1/tokens", `{"name":"x","teamId":"`+e.teamB+`"}`, http.StatusNotFound, "team_not_found")
	e.expect(t, e.adminA, "POST", "/api/v1/tokens", `{"name":"x","teamId":"`+auth.BootstrapTeamID+`","role":"admin"}`, http.StatusNotFound, "team_not_found")
	e.expect(t, e.adminA, "POST", "/api/v1/tokens", `{"name":"x","ttlSeconds":-1}`, http.StatusBadRequest, "invalid_ttl")
	var made api.CreatedToken
	json.Unmarshal(e.expect(t, e.adminA, "POST", "/api/v1/tokens", `{"name":"ci","ttlSeconds":3600}`, http.StatusCreated, ""), &made) //nolint:errcheck
	if made.TeamID != e.teamA || made.Role != store.RoleMember || !strings.HasPrefix(made.Secret, "pdk_") || made.ExpiresAt.IsZero() {
		t.Fatalf("created token = %+v", made)
	}
	e.expect(t, made.Secret, "GET", "/api/v1/sandboxes/sb-a", "", http.StatusOK, "")
	var forB api.CreatedToken
	json.Unmarshal(e.expect(t, e.host, "POST", "/api/v1/tokens", `{"name":"ops","teamId":"`+e.teamB+`"}`, http.StatusCreated, ""), &forB) //nolint:errcheck
	if forB.TeamID != e.teamB {
		t.Errorf("host-made token = %+v", forB)
	}

	var tokens api.TokenList
	json.Unmarshal(e.expect(t, e.adminA, "GET", "/api/v1/tokens", "", http.StatusOK, ""), &tokens) //nolint:errcheck
	for _, tk := range tokens.Tokens {
		if tk.TeamID != e.teamA {
			t.Errorf("team A's admin sees %+v", tk)
		}
	}
	if len(tokens.Tokens) != 3 { // admin, member, ci
		t.Errorf("team A's tokens: %+v", tokens.Tokens)
	}
	if body := e.expect(t, e.adminA, "GET", "/api/v1/tokens", "", http.StatusOK, ""); strings.Contains(string(body), "hash") || strings.Contains(string(body), made.Secret) {
		t.Errorf("token list leaks hashes or secrets: %s", body)
	}
	e.expect(t, e.adminA, "GET", "/api/v1/tokens?teamId="+e.teamB, "", http.StatusNotFound, "team_not_found")
	e.expect(t, e.memberA, "GET", "/api/v1/tokens", "", http.StatusForbidden, "admin_required")
	e.expect(t, e.host, "GET", "/api/v1/tokens?teamId="+e.teamB, "", http.StatusOK, "")

	e.expect(t, e.adminA, "DELETE", "/api/v1/tokens/"+forB.ID, "", http.StatusNotFound, "token_not_found")
	e.expect(t, e.memberA, "DELETE", "/api/v1/tokens/"+made.ID, "", http.StatusForbidden, "admin_required")
	e.expect(t, e.adminA, "DELETE", "/api/v1/tokens/"+made.ID, "", http.StatusNoContent, "")
	e.expect(t, made.Secret, "GET", "/api/v1/sandboxes/sb-a", "", http.StatusUnauthorized, "invalid_token")
	e.expect(t, e.host, "DELETE", "/api/v1/tokens/"+forB.ID, "", http.StatusNoContent, "")
	e.expect(t, forB.Secret, "GET", "/api/v1/sandboxes/sb-b", "", http.StatusUnauthorized, "invalid_token")
}

// TestFileTokensAreHostAdmins keeps the file token store's callers working:
// its tokens see every sandbox, as before teams.
func TestFileTokensAreHostAdmins(t *testing.T) {
	ts, err := server.OpenFileTokenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	secret, _, err := ts.EnsureAdminToken()
	if err != nil {
		t.Fatal(err)
	}
	a := server.TokenStoreAuthenticator(ts)
	p, err := a.AuthenticateBearer(t.Context(), secret)
	if err != nil || !p.HostAdmin || !p.CanAccessTeam("team-x") || !p.CanAccessTeam("") {
		t.Errorf("file token principal = %+v, %v", p, err)
	}
	if _, err := a.AuthenticateBearer(t.Context(), "pdk_nope"); sandbox.CodeOf(err) != "invalid_token" {
		t.Errorf("bad file token: %v", err)
	}
	// Without Accounts the admin API says so.
	srv, err := server.New(server.Config{Sandboxes: newFakeSandboxes(nil), Tokens: ts})
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("GET", "/api/v1/teams", nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusNotImplemented || errorCode(t, rec.Body.Bytes()).Code != "accounts_disabled" {
		t.Errorf("teams without accounts: %d %s", rec.Code, rec.Body)
	}
}

// TestImagesPerTeam: pulls, imports and removals act on the caller's
// team's refs; only the host admin writes published ones or sees every
// team's; tenants' pulls do not get the server's keychain nor plain HTTP;
// lists hide Env.
func TestImagesPerTeam(t *testing.T) {
	e := setupTeams(t)
	images := &fakeImages{}
	srv, err := server.New(server.Config{Sandboxes: e.sbs, Auth: e.auth, Accounts: e.auth, Images: images})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	e.url = hs.URL

	tests := []struct {
		name, token, method, path, body string
		status                          int
		want                            string // the store call, "" for none
	}{
		{"member imports into its team", e.memberA, "POST", "/api/v1/images/import", "tar", 201, "import " + e.teamA},
		{"member cannot publish an import", e.memberB, "POST", "/api/v1/images/import?published=true", "tar", 403, ""},
		{"host admin publishes an import", e.host, "POST", "/api/v1/images/import?published=true", "tar", 201, "import "},
		{"member pulls into its team without the keychain", e.memberB, "POST", "/api/v1/images/pull", `{"ref":"x"}`, 200, "pull " + e.teamB + " keychain=false"},
		{"member cannot publish a pull", e.memberA, "POST", "/api/v1/images/pull", `{"ref":"x","published":true}`, 403, ""},
		{"host admin pulls with the keychain", e.host, "POST", "/api/v1/images/pull", `{"ref":"x","published":true}`, 200, "pull  keychain=true"},
		{"member cannot pull over plain HTTP", e.memberA, "POST", "/api/v1/images/pull", `{"ref":"x","insecure":true}`, 403, ""},
		{"team admin cannot pull over plain HTTP", e.adminA, "POST", "/api/v1/images/pull", `{"ref":"x","insecure":true}`, 403, ""},
		{"host admin pulls over plain HTTP", e.host, "POST", "/api/v1/images/pull", `{"ref":"x","insecure":true,"published":true}`, 200, "pull  keychain=true insecure"},
		{"member removes its team's ref", e.memberA, "DELETE", "/api/v1/images?ref=busybox", "", 204, "remove " + e.teamA},
		{"team admin cannot remove a published ref", e.adminA, "DELETE", "/api/v1/images?ref=busybox&published=true", "", 403, ""},
		{"host admin removes a published ref", e.host, "DELETE", "/api/v1/images?ref=busybox&published=true", "", 204, "remove "},
		{"member lists its team's and published refs", e.memberB, "GET", "/api/v1/images", "", 200, "list " + e.teamB},
		{"host admin lists every scope", e.host, "GET", "/api/v1/images", "", 200, "list " + image.AllScopes},
		{"get looks up as the caller's team", e.memberA, "GET", "/api/v1/images/?ref=busybox", "", 200, "get " + e.teamA},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			images.reset()
			data := e.expect(t, tt.token, tt.method, tt.path, tt.body, tt.status, "")
			if got := images.last(); got != tt.want {
				t.Errorf("store call %q, want %q", got, tt.want)
			}
			if tt.method == "GET" && strings.Contains(string(data), "SECRET") != strings.Contains(tt.path, "ref=") {
				t.Errorf("answer %s: Env shown in a list or hidden from a get", data)
			}
		})
	}
}

// fakeImages is a server.Images that records the last call it got and
// answers with one image whose config carries a secret in its Env.
type fakeImages struct {
	mu    sync.Mutex // guards calls
	calls []string
}

func (f *fakeImages) record(call string) *image.Image {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	return &image.Image{Ref: "busybox", Digest: "sha256:1", Config: image.ImageConfig{Env: []string{"SECRET=1"}}}
}

func (f *fakeImages) StartPull(_ context.Context, scope, _ string, opts image.PullOptions, _ func(image.LayerProgress)) <-chan image.PullResult {
	call := fmt.Sprintf("pull %s keychain=%v", scope, opts.Keychain)
	if opts.Insecure {
		call += " insecure"
	}
	res := make(chan image.PullResult, 1)
	res <- image.PullResult{Image: f.record(call)}
	return res
}

func (f *fakeImages) Import(_ context.Context, scope, _ string) (*image.Image, error) {
	return f.record("import " + scope), nil
}

func (f *fakeImages) List(team string) []*image.Image {
	return []*image.Image{f.record("list " + team)}
}

func (f *fakeImages) Get(team, _ string) (*image.Image, error) { return f.record("get " + team), nil }

func (f *fakeImages) Remove(_ context.Context, scope, _ string) error {
	f.record("remove " + scope)
	return nil
}

func (f *fakeImages) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = nil
}

func (f *fakeImages) last() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		return ""
	}
	return f.calls[len(f.calls)-1]
}

// TestAdminSDK drives the admin API through the Go SDK.
func TestAdminSDK(t *testing.T) {
	e := setupTeams(t)
	ctx := t.Context()
	host := sdk.New(e.url, e.host)
	team, err := host.CreateTeam(ctx, "gamma")
	if err != nil {
		t.Fatal(err)
	}
	u, err := host.CreateUser(ctx, team.ID, api.CreateUserRequest{Issuer: "https://id.example.com", Subject: "ada", Role: api.RoleAdmin})
	if err != nil || u.TeamID != team.ID || u.Role != api.RoleAdmin {
		t.Fatalf("CreateUser = %+v, %v", u, err)
	}
	if us, err := host.ListUsers(ctx, team.ID); err != nil || len(us) != 1 {
		t.Errorf("ListUsers = %+v, %v", us, err)
	}
	tok, err := host.CreateToken(ctx, api.CreateTokenRequest{TeamID: team.ID, UserID: u.ID, Name: "ada-cli", Role: api.RoleAdmin})
	if err != nil || tok.Secret == "" || tok.UserID != u.ID {
		t.Fatalf("CreateToken = %+v, %v", tok, err)
	}
	ada := sdk.New(e.url, tok.Secret)
	teams, err := ada.ListTeams(ctx)
	if err != nil || len(teams) != 1 || teams[0].ID != team.ID {
		t.Errorf("ada's teams = %+v, %v", teams, err)
	}
	if _, err := ada.CreateTeam(ctx, "delta"); !errors.Is(err, sdk.ErrForbidden) {
		t.Errorf("team admin creates a team: %v", err)
	}
	toks, err := ada.ListTokens(ctx, "")
	if err != nil || len(toks) != 1 || toks[0].ID != tok.ID {
		t.Errorf("ada's tokens = %+v, %v", toks, err)
	}
	if _, err := ada.ListTokens(ctx, e.teamA); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("another team's tokens: %v", err)
	}
	if err := ada.DeleteToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := ada.ListTeams(ctx); !errors.Is(err, sdk.ErrUnauthorized) || !sdk.IsCode(err, "invalid_token") {
		t.Errorf("revoked token: %v", err)
	}
}
