package vercel

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/proxy"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/sqlite"
)

// Tokens of the fake Authenticator: a member of team_1 (the one env.do
// sends), a member of team_2, and the host admin (bootstrap team).
const (
	testToken  = "pdk_test-token"
	tokenTwo   = "pdk_team-two"
	adminToken = "pdk_host-admin"
)

// testTeams are the paddock teams of the tests: id and name.
var testTeams = []store.Team{{ID: "team_1", Name: "one"}, {ID: "team_2", Name: "two"}, {ID: auth.BootstrapTeamID, Name: "default"}}

type fakeAuth struct{}

func (fakeAuth) AuthenticateBearer(_ context.Context, secret string) (auth.Principal, error) {
	switch secret {
	case testToken:
		return auth.Principal{TeamID: "team_1", Name: "one", Role: store.RoleMember}, nil
	case tokenTwo:
		return auth.Principal{TeamID: "team_2", Name: "two", Role: store.RoleMember}, nil
	case adminToken:
		return auth.Principal{TeamID: auth.BootstrapTeamID, Name: "admin", Role: store.RoleAdmin, HostAdmin: true}, nil
	}
	return auth.Principal{}, auth.ErrInvalidToken
}

// fakeTeams serves testTeams.
type fakeTeams struct{}

func (fakeTeams) GetTeam(_ context.Context, id string) (store.Team, error) {
	for _, t := range testTeams {
		if t.ID == id {
			return t, nil
		}
	}
	return store.Team{}, store.NotFound("team", id)
}

func (fakeTeams) ListTeams(context.Context) ([]store.Team, error) { return testTeams, nil }

type env struct {
	t     *testing.T
	h     *Handler
	srv   *httptest.Server
	sbs   *fake.Sandboxes
	agent *fake.Agent // every sandbox's
	snaps *fake.Snapshots
	db    Records
}

// hosts numbers the envs of a test binary, whose fakes make ids of their own.
var hosts atomic.Int64

// newSQLite opens a store on a new SQLite file, as serve does.
func newSQLite(t *testing.T) *sqlite.Store {
	t.Helper()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "paddock.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvOn(t, newSQLite(t))
}

// newEnvOn is a handler with sandboxes and snapshots of its own on the
// store db: one paddock replica when several share db.
func newEnvOn(t *testing.T, db Records) *env {
	t.Helper()
	host := fmt.Sprintf("h%d-", hosts.Add(1))
	fa := startFakeAgent(t)
	e := &env{t: t, db: db, agent: fa, sbs: fake.NewSandboxes(fake.SandboxesConfig{Agent: fa.Client(), IDPrefix: "sb-fake" + host,
		Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 1024, PIDs: 512}})}
	e.snaps = fake.NewSnapshots(e.sbs, "snap-fake"+host)
	var err error
	e.h, err = New(Config{Sandboxes: e.sbs, Snapshots: e.snaps, Auth: fakeAuth{}, Teams: fakeTeams{}, Store: NewStore(db),
		Signer: &proxy.Signer{Key: bytes.Repeat([]byte("k"), proxy.MinKeyLen)}, PortBaseURL: "http://localhost:7420"})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(e.h)
	t.Cleanup(e.srv.Close)
	return e
}

// do sends a request as the SDK would: bearer token, teamId, JSON; as a
// member of team_1, naming it by id.
func (e *env) do(method, path string, body any, query string) (*http.Response, []byte) {
	e.t.Helper()
	return e.doAs(testToken, "team_1", method, path, body, query)
}

// doAs is do with another token and teamId.
func (e *env) doAs(token, team, method, path string, body any, query string) (*http.Response, []byte) {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		rd = bytes.NewReader(data)
	}
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	u := e.srv.URL + Prefix + path + sep + url.Values{"teamId": {team}}.Encode()
	if query != "" {
		u += "&" + query
	}
	req, _ := http.NewRequest(method, u, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, data
}

func decode(t *testing.T, data []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("not JSON: %v: %s", err, data)
	}
	return m
}

// wantError checks Vercel's error shape.
func wantError(t *testing.T, resp *http.Response, data []byte, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, data)
	}
	m := decode(t, data)
	e, _ := m["error"].(map[string]any)
	if e == nil || e["code"] != code || e["message"] == "" {
		t.Fatalf("error body %s, want code %q and a message", data, code)
	}
}

// requireKeys checks that obj has every key, each a non-null value, and
// that times are epoch milliseconds.
func requireKeys(t *testing.T, what string, obj map[string]any, keys ...string) {
	t.Helper()
	for _, k := range keys {
		v, ok := obj[k]
		if !ok || v == nil {
			t.Errorf("%s: required field %q missing in %v", what, k, obj)
			continue
		}
		if strings.HasSuffix(k, "At") {
			if n, ok := v.(float64); !ok || n < 1e12 {
				t.Errorf("%s.%s = %v, want epoch milliseconds", what, k, v)
			}
		}
	}
}

func (e *env) create(name string, extra map[string]any) map[string]any {
	e.t.Helper()
	body := map[string]any{"projectId": "prj_1", "ports": []int{3000}, "name": name}
	for k, v := range extra {
		body[k] = v
	}
	resp, data := e.do("POST", "/v3/sandboxes", body, "")
	if resp.StatusCode != 200 {
		e.t.Fatalf("create: %d %s", resp.StatusCode, data)
	}
	return decode(e.t, data)
}

func TestAuthAndErrorShape(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name, method, path, token, query string
		body                             any
		status                           int
		code                             string
	}{
		{"no token", "GET", "/v2/sandboxes", "", "teamId=team_1", nil, 401, "unauthorized"},
		{"bad token", "GET", "/v2/sandboxes", "nope", "teamId=team_1", nil, 401, "unauthorized"},
		{"no teamId", "GET", "/v2/sandboxes", testToken, "", nil, 400, "bad_request"},
		{"unknown team", "GET", "/v2/sandboxes", testToken, "teamId=t", nil, 403, "forbidden"},
		{"another team", "GET", "/v2/sandboxes", testToken, "teamId=team_2", nil, 403, "forbidden"},
		{"unknown endpoint", "GET", "/v9/nothing", testToken, "teamId=team_1", nil, 404, "not_found"},
		{"drives", "GET", "/v2/sandboxes/drives", testToken, "teamId=team_1", nil, 501, "not_implemented"},
		{"interactive, unknown session", "POST", "/v2/sandboxes/sessions/sb-x/interactive", testToken, "teamId=team_1", map[string]any{}, 404, "not_found"},
		{"create without project", "POST", "/v3/sandboxes", testToken, "teamId=team_1", map[string]any{"ports": []int{}}, 400, "bad_request"},
		{"mounts", "POST", "/v3/sandboxes", testToken, "teamId=team_1", map[string]any{"projectId": "p", "mounts": map[string]any{"/d": map[string]any{"drive": "x"}}}, 400, "unsupported_option"},
		{"unknown option", "POST", "/v3/sandboxes", testToken, "teamId=team_1", map[string]any{"projectId": "p", "gpu": true}, 400, "unsupported_option"},
		{"policy rules", "POST", "/v3/sandboxes", testToken, "teamId=team_1", map[string]any{"projectId": "p",
			"networkPolicy": map[string]any{"allow": map[string]any{"api.example.com": []any{map[string]any{"forwardURL": "https://x"}}}}}, 400, "unsupported_option"},
		{"bad name", "POST", "/v3/sandboxes", testToken, "teamId=team_1", map[string]any{"projectId": "p", "name": "no spaces"}, 400, "bad_request"},
		{"v1 with a v2 field", "POST", "/v1/sandboxes", testToken, "teamId=team_1", map[string]any{"projectId": "p", "name": "x"}, 400, "unsupported_option"},
		{"update tags", "PATCH", "/v2/sandboxes/x", testToken, "teamId=team_1&projectId=p", map[string]any{"tags": map[string]string{"a": "", "b": "", "c": "", "d": "", "e": "", "f": ""}}, 400, "bad_request"},
		{"get without projectId", "GET", "/v2/sandboxes/x", testToken, "teamId=team_1", nil, 400, "bad_request"},
		{"missing sandbox", "GET", "/v2/sandboxes/x", testToken, "teamId=team_1&projectId=p", nil, 404, "not_found"},
		{"missing session", "POST", "/v2/sandboxes/sessions/sb-none/cmd", testToken, "teamId=team_1", map[string]any{"command": "x"}, 404, "not_found"},
		{"missing snapshot", "GET", "/v2/sandboxes/snapshots/snap-none", testToken, "teamId=team_1", nil, 404, "not_found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var rd io.Reader
			if tc.body != nil {
				data, _ := json.Marshal(tc.body)
				rd = bytes.NewReader(data)
			}
			req, _ := http.NewRequest(tc.method, e.srv.URL+Prefix+tc.path+"?"+tc.query, rd)
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			data, _ := io.ReadAll(resp.Body)
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("content-type %q", ct)
			}
			wantError(t, resp, data, tc.status, tc.code)
		})
	}
}

func TestCreateGetListShapes(t *testing.T) {
	e := newEnv(t)
	out := e.create("box", map[string]any{"env": map[string]string{"A": "1"}, "tags": map[string]string{"team": "x"}, "resources": map[string]any{"vcpus": 2}})
	sb, _ := out["sandbox"].(map[string]any)
	sess, _ := out["session"].(map[string]any)
	requireKeys(t, "sandbox", sb, "name", "persistent", "createdAt", "updatedAt", "currentSessionId", "status")
	requireKeys(t, "session", sess, "id", "memory", "vcpus", "region", "timeout", "status", "requestedAt", "createdAt", "cwd", "updatedAt")
	if sb["currentSessionId"] != sess["id"] || sess["status"] != "running" || sb["persistent"] != true || sess["memory"] != 4096.0 {
		t.Errorf("sandbox %v session %v", sb, sess)
	}
	routes, _ := out["routes"].([]any)
	if len(routes) != 1 {
		t.Fatalf("routes %v", out["routes"])
	}
	rt := routes[0].(map[string]any)
	requireKeys(t, "route", rt, "url", "subdomain", "port")
	// The host form: a page the sandbox serves gets an origin of its own.
	if u := rt["url"].(string); !strings.HasPrefix(u, "http://3000-"+sess["id"].(string)+".localhost:7420/?paddock_token=") {
		t.Errorf("route url %s", u)
	}

	resp, data := e.do("POST", "/v3/sandboxes", map[string]any{"projectId": "prj_1", "name": "box"}, "")
	wantError(t, resp, data, 409, "sandbox_exists")
	// The same name in another project is another sandbox.
	resp, data = e.do("POST", "/v3/sandboxes", map[string]any{"projectId": "prj_2", "name": "box"}, "")
	if resp.StatusCode != 200 {
		t.Fatalf("same name, other project: %d %s", resp.StatusCode, data)
	}

	resp, data = e.do("GET", "/v2/sandboxes/box", nil, "projectId=prj_1")
	if resp.StatusCode != 200 || decode(t, data)["resumed"] != nil {
		t.Fatalf("get: %d %s", resp.StatusCode, data)
	}
	resp, data = e.do("GET", "/v2/sandboxes", nil, "project=prj_1&tags=team:x")
	list := decode(t, data)
	sbs, _ := list["sandboxes"].([]any)
	page, _ := list["pagination"].(map[string]any)
	if resp.StatusCode != 200 || len(sbs) != 1 || page["count"] != 1.0 || page["next"] != nil {
		t.Fatalf("list: %d %s", resp.StatusCode, data)
	}
	if _, ok := page["next"]; !ok {
		t.Error("pagination.next must be present (null)")
	}
}

// ndjsonLines reads an NDJSON answer.
func ndjsonLines(t *testing.T, data []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		out = append(out, decode(t, sc.Bytes()))
	}
	return out
}

func TestCommandsAndFiles(t *testing.T) {
	e := newEnv(t)
	sid := e.create("cmds", nil)["session"].(map[string]any)["id"].(string)

	resp, data := e.do("POST", "/v2/sandboxes/sessions/"+sid+"/cmd", map[string]any{"command": "echo", "args": []string{"héllo"}, "env": map[string]string{}, "sudo": false, "wait": true, "logs": true}, "")
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Fatalf("content-type %q (must be exact)", ct)
	}
	lines := ndjsonLines(t, data)
	if len(lines) < 3 {
		t.Fatalf("lines %s", data)
	}
	first := lines[0]["command"].(map[string]any)
	if v, ok := first["exitCode"]; !ok || v != nil {
		t.Errorf("first record exitCode %v (present: %v), want null", v, ok)
	}
	requireKeys(t, "command", first, "id", "name", "args", "cwd", "sessionId", "startedAt")
	var stdout string
	for _, l := range lines[1 : len(lines)-1] {
		if l["stream"] != "stdout" {
			t.Errorf("log line %v", l)
		}
		stdout += l["data"].(string)
	}
	if stdout != "héllo\n" {
		t.Errorf("stdout %q: a rune split across frames must arrive whole", stdout)
	}
	last := lines[len(lines)-1]["command"].(map[string]any)
	if last["exitCode"] != 0.0 || last["durationMs"] == nil {
		t.Errorf("last record %v", last)
	}

	resp, data = e.do("POST", "/v2/sandboxes/sessions/"+sid+"/cmd", map[string]any{"command": "exit", "args": []string{"3"}}, "")
	cmd := decode(t, data)["command"].(map[string]any)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("detached: %d %s", resp.StatusCode, data)
	}
	if v, ok := cmd["exitCode"]; !ok || v != nil {
		t.Errorf("detached exitCode %v (present %v), want null", v, ok)
	}
	resp, data = e.do("GET", "/v2/sandboxes/sessions/"+sid+"/cmd/"+cmd["id"].(string), nil, "wait=true")
	if resp.StatusCode != 200 || decode(t, data)["command"].(map[string]any)["exitCode"] != 3.0 {
		t.Errorf("wait: %d %s", resp.StatusCode, data)
	}
	resp, data = e.do("GET", "/v2/sandboxes/sessions/"+sid+"/cmd/"+cmd["id"].(string)+"/logs", nil, "")
	if resp.Header.Get("Content-Type") != "application/x-ndjson" || len(ndjsonLines(t, data)) == 0 {
		t.Errorf("logs: %q %s", resp.Header.Get("Content-Type"), data)
	}
	resp, data = e.do("POST", "/v2/sandboxes/sessions/"+sid+"/fs/read", map[string]any{"path": "missing.txt"}, "")
	wantError(t, resp, data, 404, "file_not_found")
	resp, data = e.do("POST", "/v2/sandboxes/sessions/"+sid+"/fs/mkdir", map[string]any{"path": "/tmp/d"}, "")
	if resp.StatusCode != 200 || string(bytes.TrimSpace(data)) != "{}" {
		t.Errorf("mkdir: %d %s", resp.StatusCode, data)
	}
	resp, data = e.do("POST", "/v2/sandboxes/sessions/"+sid+"/extend-timeout", map[string]any{"duration": 60000}, "")
	if resp.StatusCode != 200 || decode(t, data)["session"].(map[string]any)["timeout"] != float64(5*60000+60000) {
		t.Errorf("extend: %d %s", resp.StatusCode, data)
	}
}

// TestCommandThroughExec: a command goes to the sandbox layer's Exec as
// the SDK asked, with Vercel's cwd rules applied here; what Exec refuses
// is a 400.
func TestCommandThroughExec(t *testing.T) {
	e := newEnv(t)
	sid := e.create("exec", nil)["session"].(map[string]any)["id"].(string)
	home := DefaultCwd // the fake's sandboxes have no WorkingDir, nor does it matter: Vercel's cwd
	tests := []struct {
		name string
		body map[string]any
		want sandbox.ExecRequest
	}{
		{"defaults", map[string]any{"command": "true"},
			sandbox.ExecRequest{Cmd: "true", Cwd: home}},
		{"everything", map[string]any{"command": "ls", "args": []string{"-l"}, "cwd": "/srv", "env": map[string]string{"K": "v"}, "sudo": true, "timeout": 1500},
			sandbox.ExecRequest{Cmd: "ls", Args: []string{"-l"}, Cwd: "/srv", Env: map[string]string{"K": "v"}, Sudo: true, TimeoutMs: 1500}},
		{"relative cwd", map[string]any{"command": "ls", "cwd": "src/../app"},
			sandbox.ExecRequest{Cmd: "ls", Cwd: home + "/app"}},
		{"wait streams, Exec starts detached", map[string]any{"command": "true", "wait": true},
			sandbox.ExecRequest{Cmd: "true", Cwd: home}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, data := e.do("POST", "/v2/sandboxes/sessions/"+sid+"/cmd", tt.body, "")
			if resp.StatusCode != 200 {
				t.Fatalf("run: %d %s", resp.StatusCode, data)
			}
			if got := e.sbs.LastExec(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Exec got %+v, want %+v", got, tt.want)
			}
		})
	}
	bad := []struct {
		name string
		body map[string]any
		code string
	}{
		{"no command", map[string]any{"command": ""}, "invalid_command"},
		{"NUL in an arg", map[string]any{"command": "echo", "args": []string{"a\x00"}}, "invalid_command"},
		{"bad env name", map[string]any{"command": "true", "env": map[string]string{"A=B": "x"}}, "invalid_env"},
		{"negative timeout", map[string]any{"command": "true", "timeout": -1}, "invalid_timeout"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			resp, data := e.do("POST", "/v2/sandboxes/sessions/"+sid+"/cmd", tt.body, "")
			wantError(t, resp, data, 400, tt.code)
		})
	}
}

func TestStopResumeSemantics(t *testing.T) {
	e := newEnv(t)
	out := e.create("persist", nil)
	sid := out["session"].(map[string]any)["id"].(string)

	// A session being stopped answers 422, on which the SDK resumes and retries.
	e.h.setTransient(sid, "snapshotting")
	resp, data := e.do("POST", "/v2/sandboxes/sessions/"+sid+"/cmd", map[string]any{"command": "true"}, "")
	wantError(t, resp, data, 422, "sandbox_snapshotting")
	e.h.setTransient(sid, "")

	resp, data = e.do("POST", "/v2/sandboxes/sessions/"+sid+"/stop", nil, "")
	if resp.StatusCode != 200 {
		t.Fatalf("stop: %d %s", resp.StatusCode, data)
	}
	stop := decode(t, data)
	snap, _ := stop["snapshot"].(map[string]any)
	requireKeys(t, "snapshot", snap, "id", "sourceSessionId", "region", "status", "sizeBytes", "createdAt", "updatedAt")
	if stop["session"].(map[string]any)["status"] != "stopped" || stop["sandbox"].(map[string]any)["currentSnapshotId"] != snap["id"] {
		t.Fatalf("stop answer %s", data)
	}
	resp, data = e.do("POST", "/v2/sandboxes/sessions/"+sid+"/cmd", map[string]any{"command": "true"}, "")
	wantError(t, resp, data, 410, "sandbox_stopped")

	resp, data = e.do("GET", "/v2/sandboxes/persist", nil, "projectId=prj_1&resume=true")
	got := decode(t, data)
	sess := got["session"].(map[string]any)
	if resp.StatusCode != 200 || got["resumed"] != true || sess["id"] == sid || sess["sourceSnapshotId"] != snap["id"] || sess["status"] != "running" {
		t.Fatalf("resume: %d %s", resp.StatusCode, data)
	}
	// A session that stops on its own (timeout) is snapshotted at resume.
	sid2 := sess["id"].(string)
	e.sbs.SetState(sid2, sandbox.Stopped)
	resp, data = e.do("GET", "/v2/sandboxes/persist", nil, "projectId=prj_1&resume=true")
	got = decode(t, data)
	if resp.StatusCode != 200 || got["sandbox"].(map[string]any)["currentSnapshotId"] == snap["id"] {
		t.Fatalf("resume after timeout: %d %s", resp.StatusCode, data)
	}
	// Resuming from a snapshot that is gone is 410 snapshot_not_found.
	sid3 := got["session"].(map[string]any)["id"].(string)
	resp, data = e.do("POST", "/v2/sandboxes/sessions/"+sid3+"/stop", nil, "")
	if resp.StatusCode != 200 {
		t.Fatal(string(data))
	}
	cur := decode(t, data)["sandbox"].(map[string]any)["currentSnapshotId"].(string)
	e.snaps.DeleteSnapshot(context.Background(), cur)
	resp, data = e.do("GET", "/v2/sandboxes/persist", nil, "projectId=prj_1&resume=true")
	wantError(t, resp, data, 410, "snapshot_not_found")

	resp, data = e.do("GET", "/v2/sandboxes/sessions", nil, "project=prj_1&name=persist")
	if n := len(decode(t, data)["sessions"].([]any)); resp.StatusCode != 200 || n != 3 {
		t.Errorf("sessions: %d, %d sessions", resp.StatusCode, n)
	}
	resp, data = e.do("DELETE", "/v2/sandboxes/persist", nil, "projectId=prj_1")
	if resp.StatusCode != 200 {
		t.Fatalf("delete: %d %s", resp.StatusCode, data)
	}
	resp, data = e.do("GET", "/v2/sandboxes/persist", nil, "projectId=prj_1")
	wantError(t, resp, data, 404, "not_found")
}

func TestV1Shapes(t *testing.T) {
	e := newEnv(t)
	resp, data := e.do("POST", "/v1/sandboxes", map[string]any{"projectId": "prj_1", "ports": []int{}, "env": map[string]string{}}, "")
	if resp.StatusCode != 200 {
		t.Fatalf("create: %d %s", resp.StatusCode, data)
	}
	sb := decode(t, data)["sandbox"].(map[string]any)
	requireKeys(t, "v1 sandbox", sb, "id", "memory", "vcpus", "region", "runtime", "timeout", "status", "requestedAt", "createdAt", "cwd", "updatedAt")
	id := sb["id"].(string)
	resp, data = e.do("POST", "/v1/sandboxes/"+id+"/cmd", map[string]any{"command": "echo", "args": []string{"x"}, "wait": true}, "")
	lines := ndjsonLines(t, data)
	if resp.Header.Get("Content-Type") != "application/x-ndjson" || len(lines) != 2 || lines[1]["command"].(map[string]any)["sandboxId"] != id {
		t.Fatalf("v1 run: %s", data)
	}
	cmdID := lines[0]["command"].(map[string]any)["id"].(string)
	resp, data = e.do("POST", "/v1/sandboxes/"+id+"/"+cmdID+"/kill", map[string]any{"signal": 15}, "")
	if resp.StatusCode != 200 {
		t.Errorf("v1 kill: %d %s", resp.StatusCode, data)
	}
	resp, data = e.do("POST", "/v1/sandboxes/"+id+"/snapshot", nil, "")
	if resp.StatusCode != 200 {
		t.Fatalf("v1 snapshot: %d %s", resp.StatusCode, data)
	}
	snap := decode(t, data)
	requireKeys(t, "v1 snapshot", snap["snapshot"].(map[string]any), "id", "sourceSandboxId", "region", "status", "sizeBytes", "createdAt", "updatedAt")
	if snap["sandbox"].(map[string]any)["status"] != "stopped" {
		t.Errorf("v1 snapshot leaves %s", data)
	}
	resp, data = e.do("GET", "/v1/sandboxes", nil, "project=prj_1")
	page := decode(t, data)["pagination"].(map[string]any)
	if _, ok := page["prev"]; resp.StatusCode != 200 || !ok || page["count"] != 1.0 {
		t.Errorf("v1 list: %d %s", resp.StatusCode, data)
	}
	// A v1 sandbox is not a v2 session, nor visible to another team.
	resp, data = e.do("GET", "/v2/sandboxes/sessions/"+id, nil, "")
	wantError(t, resp, data, 404, "not_found")
}

func TestTextEncoderKeepsRunesWhole(t *testing.T) {
	var enc textEncoder
	b := []byte("é€")
	var got string
	for i := range b { // one byte per frame, the worst split
		for _, l := range enc.chunk(1, b[i:i+1]) {
			got += l.Data.(string)
		}
	}
	if got != "é€" {
		t.Errorf("got %q", got)
	}
	lines := enc.chunk(2, []byte{0xff, 'x'})
	if len(lines) != 1 || lines[0].Data != "\uFFFDx" || lines[0].Stream != "stderr" {
		t.Errorf("invalid bytes: %+v", lines)
	}
}

// TestSnapshotUnsupportedKeepsSession: on a runtime that cannot snapshot,
// snapshot() is refused before the session stops (it runs on, and the
// SDK's next command works), and a persistent sandbox's stop still stops
// it, without a snapshot. Before, the stop came first and the session was
// lost with the snapshot's 501.
func TestSnapshotUnsupportedKeepsSession(t *testing.T) {
	e := newEnv(t)
	e.snaps.SetUnsupported(sandbox.Errorf(sandbox.ErrUnsupported, "snapshots_unsupported", "runtime \"kubernetes\" cannot snapshot"))
	out := e.create("nosnap", nil)
	sid := out["session"].(map[string]any)["id"].(string)

	resp, data := e.do("POST", "/v2/sandboxes/sessions/"+sid+"/snapshot", map[string]any{}, "")
	if resp.StatusCode != http.StatusNotImplemented {
		t.Fatalf("snapshot: %d %s, want 501", resp.StatusCode, data)
	}
	resp, data = e.do("POST", "/v2/sandboxes/sessions/"+sid+"/cmd", map[string]any{"command": "true"}, "")
	if resp.StatusCode != 200 {
		t.Fatalf("command after a refused snapshot: %d %s", resp.StatusCode, data)
	}
	if n := e.snaps.Count(); n != 0 {
		t.Errorf("%d snapshots", n)
	}

	resp, data = e.do("POST", "/v2/sandboxes/sessions/"+sid+"/stop", nil, "")
	if resp.StatusCode != 200 {
		t.Fatalf("stop: %d %s", resp.StatusCode, data)
	}
	stop := decode(t, data)
	if stop["session"].(map[string]any)["status"] != "stopped" || stop["snapshot"] != nil {
		t.Errorf("stop answer %s", data)
	}
}

// TestSnapshotRunningOnlyRuntime: on a runtime that snapshots running
// sandboxes only (Kubernetes, where a stopped sandbox's Pod is gone),
// snapshot() and a persistent sandbox's stop take the snapshot before the
// stop (the fake fails one of a stopped sandbox), and the session stops.
// Before, both were refused (snapshot) or lost the changes (stop).
func TestSnapshotRunningOnlyRuntime(t *testing.T) {
	e := newEnv(t)
	e.snaps.SetRunningOnly(true)
	for _, tc := range []struct{ name, path string }{
		{"snapshot", "/snapshot"},
		{"persistent stop", "/stop"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := e.create("live-"+strings.ReplaceAll(tc.name, " ", "-"), nil)
			sid := out["session"].(map[string]any)["id"].(string)
			resp, data := e.do("POST", "/v2/sandboxes/sessions/"+sid+tc.path, map[string]any{}, "")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s: %d %s", tc.path, resp.StatusCode, data)
			}
			if got := decode(t, data); got["snapshot"] == nil {
				t.Errorf("%s answered no snapshot: %s", tc.path, data)
			}
			if n := e.snaps.Taken(sid); n != 1 {
				t.Errorf("%d snapshots of %s", n, sid)
			}
			if sb, err := e.sbs.Get(t.Context(), sid); err != nil || sb.State != sandbox.Stopped {
				t.Errorf("session after %s: %v %v, want stopped", tc.path, sb.State, err)
			}
		})
	}
}
