package vercel

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// lastCreate is the last create request the node got.
func (e *env) lastCreate() sandbox.CreateRequest {
	e.t.Helper()
	creates := e.sbs.Creates()
	if len(creates) == 0 {
		e.t.Fatal("no sandbox was created")
	}
	return creates[len(creates)-1]
}

func TestTeamResolution(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name, token, team string
		status            int
		code              string
		want              string // the paddock team the sandbox gets
	}{
		{"own team by id", testToken, "team_1", 200, "", "team_1"},
		{"own team by name", testToken, "one", 200, "", "team_1"},
		{"another team by id", testToken, "team_2", 403, "forbidden", ""},
		{"another team by name", testToken, "two", 403, "forbidden", ""},
		{"unknown team", testToken, "team_none", 403, "forbidden", ""},
		{"second member, own team", tokenTwo, "two", 200, "", "team_2"},
		{"host admin, any team by id", adminToken, "team_2", 200, "", "team_2"},
		{"host admin, any team by name", adminToken, "one", 200, "", "team_1"},
		{"host admin, own team", adminToken, "default", 200, "", "default"},
		{"host admin, unknown team", adminToken, "team_none", 403, "forbidden", ""},
		{"bad token", "pdk_nope", "team_1", 401, "unauthorized", ""},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(e.sbs.Creates())
			name := "resolve" + string(rune('a'+i))
			resp, data := e.doAs(tc.token, tc.team, "POST", "/v3/sandboxes", map[string]any{"projectId": "prj_1", "name": name}, "")
			if tc.status != 200 {
				wantError(t, resp, data, tc.status, tc.code)
				if len(e.sbs.Creates()) != before {
					t.Error("a refused request created a sandbox")
				}
				return
			}
			if resp.StatusCode != 200 {
				t.Fatalf("create: %d %s", resp.StatusCode, data)
			}
			if got := e.lastCreate().TeamID; got != tc.want {
				t.Errorf("sandbox team %q, want %q", got, tc.want)
			}
			// The record is the resolved team's, whichever way it was named.
			for _, ref := range []string{tc.want, nameOf(tc.want)} {
				if resp, data := e.doAs(adminToken, ref, "GET", "/v2/sandboxes/"+name, nil, "projectId=prj_1"); resp.StatusCode != 200 {
					t.Errorf("get in %q: %d %s", ref, resp.StatusCode, data)
				}
			}
		})
	}
}

func nameOf(id string) string {
	for _, t := range testTeams {
		if t.ID == id {
			return t.Name
		}
	}
	return ""
}

// TestTeamsAreIsolated: nothing team_1 made through this API is visible to
// team_2, whatever the endpoint.
func TestTeamsAreIsolated(t *testing.T) {
	e := newEnv(t)
	sid := e.create("box", nil)["session"].(map[string]any)["id"].(string)
	if resp, data := e.do("POST", "/v2/sandboxes/sessions/"+sid+"/snapshot", nil, ""); resp.StatusCode != 200 {
		t.Fatalf("snapshot: %d %s", resp.StatusCode, data)
	}
	resp, data := e.do("GET", "/v2/sandboxes/box", nil, "projectId=prj_1")
	if resp.StatusCode != 200 {
		t.Fatalf("get: %d %s", resp.StatusCode, data)
	}
	snap, _ := decode(t, data)["sandbox"].(map[string]any)["currentSnapshotId"].(string)
	if snap == "" {
		t.Fatalf("no current snapshot: %s", data)
	}
	// Snapshots carry the team, as /api/v1's do.
	if s, err := e.snaps.GetSnapshot(t.Context(), snap); err != nil || s.TeamID != "team_1" {
		t.Fatalf("snapshot %+v, %v: want team_1", s, err)
	}
	resp, data = e.do("POST", "/v1/sandboxes", map[string]any{"projectId": "prj_1"}, "")
	if resp.StatusCode != 200 {
		t.Fatalf("v1 create: %d %s", resp.StatusCode, data)
	}
	v1ID := decode(t, data)["sandbox"].(map[string]any)["id"].(string)
	if got := e.lastCreate().TeamID; got != "team_1" {
		t.Errorf("v1 sandbox team %q", got)
	}
	// A snapshot paddock took of another team's sandbox, outside this API.
	e.sbs.Add(sandbox.Sandbox{ID: "sb-other", State: sandbox.Stopped, TeamID: "team_2"})
	other, _ := e.snaps.Snapshot(t.Context(), "sb-other")

	notFound := []struct {
		name, method, path, query string
		body                      any
	}{
		{"get", "GET", "/v2/sandboxes/box", "projectId=prj_1", nil},
		{"get with resume", "GET", "/v2/sandboxes/box", "projectId=prj_1&resume=true", nil},
		{"update", "PATCH", "/v2/sandboxes/box", "projectId=prj_1", map[string]any{"persistent": false}},
		{"delete", "DELETE", "/v2/sandboxes/box", "projectId=prj_1", nil},
		{"fork", "POST", "/v2/sandboxes/box/fork", "projectId=prj_1", map[string]any{}},
		{"sessions", "GET", "/v2/sandboxes/sessions", "project=prj_1&name=box", nil},
		{"session", "GET", "/v2/sandboxes/sessions/" + sid, "", nil},
		{"command", "POST", "/v2/sandboxes/sessions/" + sid + "/cmd", "", map[string]any{"command": "true"}},
		{"read", "POST", "/v2/sandboxes/sessions/" + sid + "/fs/read", "", map[string]any{"path": "/etc/hostname"}},
		{"stop", "POST", "/v2/sandboxes/sessions/" + sid + "/stop", "", nil},
		{"snapshot get", "GET", "/v2/sandboxes/snapshots/" + snap, "", nil},
		{"snapshot delete", "DELETE", "/v2/sandboxes/snapshots/" + snap, "", nil},
		{"create from the snapshot", "POST", "/v3/sandboxes", "", map[string]any{"projectId": "prj_1",
			"source": map[string]any{"type": "snapshot", "snapshotId": snap}}},
		{"v1 get", "GET", "/v1/sandboxes/" + v1ID, "", nil},
		{"v1 command", "POST", "/v1/sandboxes/" + v1ID + "/cmd", "", map[string]any{"command": "true"}},
		{"v1 snapshot get", "GET", "/v1/sandboxes/snapshots/" + snap, "", nil},
	}
	for _, tc := range notFound {
		t.Run("team_2: "+tc.name, func(t *testing.T) {
			resp, data := e.doAs(tokenTwo, "team_2", tc.method, tc.path, tc.body, tc.query)
			wantError(t, resp, data, 404, "not_found")
		})
	}
	// team_1 may not use team_2's snapshot either, by any path.
	for _, p := range []string{"/v2/sandboxes/snapshots/" + other.ID, "/v1/sandboxes/snapshots/" + other.ID} {
		resp, data := e.do("GET", p, nil, "")
		wantError(t, resp, data, 404, "not_found")
	}
	resp, data = e.do("PATCH", "/v2/sandboxes/box", map[string]any{"currentSnapshotId": other.ID}, "projectId=prj_1")
	wantError(t, resp, data, 404, "not_found")
	// team_2 owns it; a host admin sees it only through team_2.
	if resp, data := e.doAs(tokenTwo, "team_2", "GET", "/v2/sandboxes/snapshots/"+other.ID, nil, ""); resp.StatusCode != 200 {
		t.Errorf("team_2's own snapshot: %d %s", resp.StatusCode, data)
	}
	resp, data = e.doAs(adminToken, "default", "GET", "/v2/sandboxes/snapshots/"+other.ID, nil, "")
	wantError(t, resp, data, 404, "not_found")

	lists := []struct{ path, query, key string }{
		{"/v2/sandboxes", "project=prj_1", "sandboxes"},
		{"/v2/sandboxes", "", "sandboxes"},
		{"/v2/sandboxes/snapshots", "project=prj_1", "snapshots"},
		{"/v1/sandboxes", "project=prj_1", "sandboxes"},
		{"/v1/sandboxes/snapshots", "project=prj_1", "snapshots"},
	}
	for _, l := range lists {
		resp, data := e.doAs(tokenTwo, "team_2", "GET", l.path, nil, l.query)
		items, _ := decode(t, data)[l.key].([]any)
		if resp.StatusCode != 200 || len(items) != 0 {
			t.Errorf("team_2 lists %s?%s: %d %s", l.path, l.query, resp.StatusCode, data)
		}
		resp, data = e.do("GET", l.path, nil, l.query)
		if items, _ := decode(t, data)[l.key].([]any); resp.StatusCode != 200 || len(items) == 0 {
			t.Errorf("team_1 lists %s?%s: %d %s", l.path, l.query, resp.StatusCode, data)
		}
	}
	// Names are per team: team_2 may have its own "box".
	if resp, data := e.doAs(tokenTwo, "team_2", "POST", "/v3/sandboxes", map[string]any{"projectId": "prj_1", "name": "box"}, ""); resp.StatusCode != 200 {
		t.Fatalf("team_2's box: %d %s", resp.StatusCode, data)
	}
	if got := e.lastCreate().TeamID; got != "team_2" {
		t.Errorf("team_2's box in team %q", got)
	}
}

// TestSnapshotsBeforeTeams: a snapshot with no team (taken before teams)
// is a host admin's only.
func TestSnapshotsBeforeTeams(t *testing.T) {
	e := newEnv(t)
	e.snaps.Add(&image.Snapshot{ID: "snap-old", Source: "sb-old"})
	resp, data := e.do("GET", "/v2/sandboxes/snapshots/snap-old", nil, "")
	wantError(t, resp, data, 404, "not_found")
	if resp, data := e.doAs(adminToken, "default", "GET", "/v2/sandboxes/snapshots/snap-old", nil, ""); resp.StatusCode != 200 {
		t.Errorf("host admin: %d %s", resp.StatusCode, data)
	}
}

func TestSourcesMapped(t *testing.T) {
	e := newEnv(t)
	snapSession := e.create("base", nil)["session"].(map[string]any)["id"].(string)
	resp, data := e.do("POST", "/v2/sandboxes/sessions/"+snapSession+"/snapshot", nil, "")
	if resp.StatusCode != 200 {
		t.Fatalf("snapshot: %d %s", resp.StatusCode, data)
	}
	snap := decode(t, data)["snapshot"].(map[string]any)["id"].(string)

	const secret = "s3cret-pass"
	cases := []struct {
		name       string
		path       string
		source     map[string]any
		wantSource *sandbox.Source
		wantSnap   string
	}{
		{"v3 git", "/v3/sandboxes", map[string]any{"type": "git", "url": "https://git.example.com/r.git", "depth": 1, "revision": "main"},
			&sandbox.Source{Type: "git", URL: "https://git.example.com/r.git", Dir: DefaultCwd, Depth: 1, Revision: "main"}, ""},
		{"v3 git, whole history", "/v3/sandboxes", map[string]any{"type": "git", "url": "https://git.example.com/r.git"},
			&sandbox.Source{Type: "git", URL: "https://git.example.com/r.git", Dir: DefaultCwd, Depth: -1}, ""},
		{"v3 private git", "/v3/sandboxes", map[string]any{"type": "git", "url": "https://git.example.com/p.git", "username": "x-access-token", "password": secret},
			&sandbox.Source{Type: "git", URL: "https://git.example.com/p.git", Dir: DefaultCwd, Depth: -1, Username: "x-access-token", Password: secret}, ""},
		{"v3 tarball", "/v3/sandboxes", map[string]any{"type": "tarball", "url": "https://files.example.com/a.tgz"},
			&sandbox.Source{Type: "tarball", URL: "https://files.example.com/a.tgz", Dir: DefaultCwd}, ""},
		{"v3 snapshot", "/v3/sandboxes", map[string]any{"type": "snapshot", "snapshotId": snap}, nil, snap},
		{"v1 git", "/v1/sandboxes", map[string]any{"type": "git", "url": "https://git.example.com/p.git", "username": "u", "password": secret, "depth": 3},
			&sandbox.Source{Type: "git", URL: "https://git.example.com/p.git", Dir: DefaultCwd, Depth: 3, Username: "u", Password: secret}, ""},
		{"v1 tarball", "/v1/sandboxes", map[string]any{"type": "tarball", "url": "https://files.example.com/a.tgz"},
			&sandbox.Source{Type: "tarball", URL: "https://files.example.com/a.tgz", Dir: DefaultCwd}, ""},
		{"v1 snapshot", "/v1/sandboxes", map[string]any{"type": "snapshot", "snapshotId": snap}, nil, snap},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, data := e.do("POST", tc.path, map[string]any{"projectId": "prj_src", "source": tc.source}, "")
			if resp.StatusCode != 200 {
				t.Fatalf("create: %d %s", resp.StatusCode, data)
			}
			got := e.lastCreate()
			switch {
			case tc.wantSource == nil && got.Source != nil:
				t.Errorf("source %+v, want none", got.Source)
			case tc.wantSource != nil && (got.Source == nil || *got.Source != *tc.wantSource):
				t.Errorf("source %+v, want %+v", got.Source, tc.wantSource)
			}
			if got.Snapshot != tc.wantSnap || got.TeamID != "team_1" {
				t.Errorf("snapshot %q team %q, want %q team_1", got.Snapshot, got.TeamID, tc.wantSnap)
			}
		})
	}
	// Credentials reach the node and nothing else.
	recs, _, err := e.db.ListVercelSandboxes(context.Background(), store.VercelSandboxFilter{TeamID: "team_1"}, store.Page{Limit: store.MaxPageLimit})
	if err != nil || len(recs) == 0 {
		t.Fatalf("records: %d, %v", len(recs), err)
	}
	for _, rec := range recs {
		if data, _ := json.Marshal(rec); strings.Contains(string(data), secret) || strings.Contains(string(data), "x-access-token") {
			t.Errorf("the store holds a credential:\n%s", data)
		}
	}

	refused := []struct {
		name   string
		source map[string]any
		status int
		code   string
	}{
		{"tarball with a revision", map[string]any{"type": "tarball", "url": "https://x/a.tgz", "revision": "main"}, 400, "bad_request"},
		{"git without url", map[string]any{"type": "git"}, 400, "bad_request"},
		{"negative depth", map[string]any{"type": "git", "url": "https://x/r.git", "depth": -2}, 400, "bad_request"},
		{"unknown type", map[string]any{"type": "svn", "url": "https://x/r"}, 400, "bad_request"},
		{"snapshot without id", map[string]any{"type": "snapshot"}, 400, "bad_request"},
		{"unknown snapshot", map[string]any{"type": "snapshot", "snapshotId": "snap-none"}, 404, "not_found"},
	}
	for _, tc := range refused {
		t.Run("refused: "+tc.name, func(t *testing.T) {
			resp, data := e.do("POST", "/v3/sandboxes", map[string]any{"projectId": "prj_src", "source": tc.source}, "")
			wantError(t, resp, data, tc.status, tc.code)
		})
	}

	// A fetch that fails answers the source's error in Vercel's shape, and
	// leaves no record behind.
	e.sbs.SetCreateErr(sandbox.Errorf(sandbox.ErrInvalid, "source_auth_failed", "the git server refused the credentials"))
	resp, data = e.do("POST", "/v3/sandboxes", map[string]any{"projectId": "prj_src", "name": "failing",
		"source": map[string]any{"type": "git", "url": "https://git.example.com/p.git", "username": "u", "password": "wrong"}}, "")
	wantError(t, resp, data, 400, "source_auth_failed")
	e.sbs.SetCreateErr(nil)
	resp, data = e.do("GET", "/v2/sandboxes/failing", nil, "projectId=prj_src")
	wantError(t, resp, data, 404, "not_found")
}
