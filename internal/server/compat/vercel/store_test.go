package vercel

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// oldState is a state.json as the file store wrote it: a persistent v2
// sandbox with two sessions and a snapshot, a v1 sandbox, one record from
// before teams (no team: the store refuses it), and their snapshots.
const oldState = `{
  "sandboxes": [
    {"team": "team_1", "project": "prj_1", "name": "kept", "api": 2, "persistent": true,
     "config": {"ports": [3000], "timeoutMs": 60000, "vcpus": 2, "env": {"A.B": "1", "$X": "2"}, "tags": {"k": "v"},
                "networkPolicy": {"mode": "custom", "allowDomains": ["example.com"]},
                "source": {"type": "git", "url": "https://git.example.com/r.git", "depth": 1, "private": true}},
     "createdAt": 1767225600000, "updatedAt": 1767225700000, "currentSnapshotId": "snap-old1",
     "sessions": [
       {"id": "sb-old1", "createdAt": 1767225600000, "stopRequestedAt": 1767225650000, "snapshotId": "snap-old1",
        "snapshottedAt": 1767225660000, "last": {"status": "stopped", "startedAt": 1767225600100, "stoppedAt": 1767225650100,
        "vcpus": 2, "memoryMB": 4096, "cwd": "/home/user"}},
       {"id": "sb-old2", "createdAt": 1767225700000, "sourceSnapshotId": "snap-old1",
        "last": {"status": "running", "startedAt": 1767225700100, "vcpus": 2, "memoryMB": 4096, "cwd": "/home/user"}}
     ]},
    {"team": "team_1", "project": "prj_1", "name": "sb-old3", "api": 1, "config": {},
     "createdAt": 1767225800000, "updatedAt": 1767225800000,
     "sessions": [{"id": "sb-old3", "createdAt": 1767225800000}]},
    {"team": "", "project": "prj_1", "name": "teamless", "api": 2, "config": {}, "createdAt": 1767225600000,
     "sessions": [{"id": "sb-old4", "createdAt": 1767225600000}]}
  ],
  "snapshots": [
    {"team": "team_1", "project": "prj_1", "id": "snap-old1", "sandboxName": "kept", "sourceSession": "sb-old1",
     "creationMethod": "automatic", "createdAt": 1767225660000},
    {"team": "team_2", "project": "prj_9", "id": "snap-old2", "sandboxName": "theirs", "sourceSession": "sb-x",
     "creationMethod": "manual", "createdAt": 1767225670000}
  ]
}`

func writeState(t *testing.T, dataDir, content string) string {
	t.Helper()
	path := filepath.Join(dataDir, "compat-vercel", "state.json")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestImportFileState(t *testing.T) {
	ctx := context.Background()
	dataDir := t.TempDir()
	path := writeState(t, dataDir, oldState)
	var want fileState
	if err := json.Unmarshal([]byte(oldState), &want); err != nil {
		t.Fatal(err)
	}
	db := newSQLite(t)
	s, err := OpenStore(ctx, db, dataDir, nil)
	if err != nil {
		t.Fatal(err)
	}

	// Every record with a team is in the store, as it was.
	for _, old := range want.Sandboxes[:2] {
		got, err := s.get(ctx, old.Scope, old.Name)
		if err != nil {
			t.Fatalf("%s: %v", old.Name, err)
		}
		if got.Version != 1 {
			t.Errorf("%s: version %d", old.Name, got.Version)
		}
		got.Version = 0
		if !reflect.DeepEqual(got, old) {
			t.Errorf("%s imported as\n %+v\nwant\n %+v", old.Name, got, old)
		}
		for _, sess := range old.Sessions {
			if owner, err := s.bySession(ctx, "team_1", sess.ID); err != nil || owner.Name != old.Name {
				t.Errorf("session %s: %q %v", sess.ID, owner.Name, err)
			}
		}
	}
	if _, err := s.bySession(ctx, "", "sb-old4"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("the record without a team: %v", err)
	}
	for _, old := range want.Snapshots {
		got, err := s.getSnapshot(ctx, old.Team, old.ID)
		if err != nil || got != old {
			t.Errorf("snapshot %s imported as %+v (%v), want %+v", old.ID, got, err, old)
		}
	}
	// The file is renamed, not left to be imported again.
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state.json after the import: %v", err)
	}
	if data, err := os.ReadFile(path + ".imported"); err != nil || string(data) != oldState {
		t.Errorf("state.json.imported: %v", err)
	}

	// The imported records serve the API: get, list, the session.
	e := newEnvOn(t, db)
	resp, data := e.do("GET", "/v2/sandboxes/kept", nil, "projectId=prj_1")
	sb, _ := decode(t, data)["sandbox"].(map[string]any)
	if resp.StatusCode != 200 || sb["currentSnapshotId"] != "snap-old1" || sb["currentSessionId"] != "sb-old2" || sb["status"] != "stopped" {
		t.Fatalf("get: %d %s", resp.StatusCode, data)
	}
	resp, data = e.do("GET", "/v2/sandboxes/sessions", nil, "project=prj_1&name=kept")
	if n := len(decode(t, data)["sessions"].([]any)); resp.StatusCode != 200 || n != 2 {
		t.Errorf("sessions: %d %s", resp.StatusCode, data)
	}
	resp, data = e.do("GET", "/v1/sandboxes/sb-old3", nil, "")
	if resp.StatusCode != 200 {
		t.Errorf("v1 get: %d %s", resp.StatusCode, data)
	}

	// A second start finds nothing to import; one that crashed before the
	// rename imports again and keeps what the store holds.
	if _, err := OpenStore(ctx, db, dataDir, nil); err != nil {
		t.Fatal(err)
	}
	rec, err := s.get(ctx, Scope{Team: "team_1", Project: "prj_1"}, "kept")
	if err != nil {
		t.Fatal(err)
	}
	rec.Config.Tags = map[string]string{"changed": "after the import"}
	if err := s.update(ctx, &rec); err != nil {
		t.Fatal(err)
	}
	writeState(t, dataDir, oldState)
	if _, err := OpenStore(ctx, db, dataDir, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := s.get(ctx, rec.Scope, "kept"); err != nil || got.Config.Tags["changed"] == "" || got.Version != rec.Version {
		t.Errorf("a re-import replaced a newer record: %+v %v", got.Config.Tags, err)
	}
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 2 {
		t.Errorf("state dir holds %v, want state.json.imported and the second import's", ents)
	}

	// A file that is not JSON stops the start rather than being renamed.
	bad := t.TempDir()
	badPath := writeState(t, bad, "{")
	if _, err := OpenStore(ctx, newSQLite(t), bad, nil); err == nil {
		t.Error("a broken state.json was accepted")
	}
	if _, err := os.Stat(badPath); err != nil {
		t.Errorf("a broken state.json was moved: %v", err)
	}
}

// TestRecordBounds: what a record keeps is bounded, with clear errors.
func TestRecordBounds(t *testing.T) {
	e := newEnv(t)
	big := map[string]string{}
	for i := range 16 {
		big[string(rune('A'+i))] = string(bytesOf('x', 5000))
	}
	many := map[string]string{}
	for i := range maxEnvVars + 1 {
		many["V"+string(rune('a'+i%26))+string(rune('a'+i/26))] = "x"
	}
	long := string(bytesOf('x', maxShortField+1))
	domains := make([]string, maxPolicyRules+1)
	for i := range domains {
		domains[i] = "d" + string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + ".example.com"
	}
	cases := []struct {
		name   string
		method string
		path   string
		query  string
		body   map[string]any
		status int
		code   string
	}{
		{"env too large", "POST", "/v3/sandboxes", "", map[string]any{"projectId": "p", "env": big}, 413, "env_too_large"},
		{"too many env vars", "POST", "/v3/sandboxes", "", map[string]any{"projectId": "p", "env": many}, 400, "bad_request"},
		{"v1 env too large", "POST", "/v1/sandboxes", "", map[string]any{"projectId": "p", "env": big}, 413, "env_too_large"},
		{"long project", "POST", "/v3/sandboxes", "", map[string]any{"projectId": "p" + long}, 400, "bad_request"},
		{"v1 long project", "POST", "/v1/sandboxes", "", map[string]any{"projectId": "p" + long}, 400, "bad_request"},
		{"long tag", "POST", "/v3/sandboxes", "", map[string]any{"projectId": "p", "tags": map[string]string{"k": long}}, 400, "bad_request"},
		{"long region", "POST", "/v3/sandboxes", "", map[string]any{"projectId": "p", "region": long}, 400, "bad_request"},
		{"many failover regions", "POST", "/v3/sandboxes", "", map[string]any{"projectId": "p", "failoverRegions": make([]string, maxFailover+1)}, 400, "bad_request"},
		{"long source url", "POST", "/v3/sandboxes", "", map[string]any{"projectId": "p",
			"source": map[string]any{"type": "git", "url": "https://x/" + string(bytesOf('x', maxURLBytes))}}, 400, "bad_request"},
		{"many domains", "POST", "/v3/sandboxes", "", map[string]any{"projectId": "p", "networkPolicy": map[string]any{"allow": domains}}, 400, "bad_request"},
		{"update: long tag", "PATCH", "/v2/sandboxes/bounded", "projectId=prj_1", map[string]any{"tags": map[string]string{long: "v"}}, 400, "bad_request"},
		{"update: long region", "PATCH", "/v2/sandboxes/bounded", "projectId=prj_1", map[string]any{"region": long}, 400, "bad_request"},
		{"update: many domains", "PATCH", "/v2/sandboxes/bounded", "projectId=prj_1", map[string]any{"networkPolicy": map[string]any{"allow": domains}}, 400, "bad_request"},
		{"fork: env too large", "POST", "/v2/sandboxes/bounded/fork", "projectId=prj_1", map[string]any{"env": big}, 413, "env_too_large"},
	}
	e.create("bounded", nil)
	before := e.sbs.Count()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, data := e.do(tc.method, tc.path, tc.body, tc.query)
			wantError(t, resp, data, tc.status, tc.code)
		})
	}
	if n := e.sbs.Count(); n != before {
		t.Errorf("%d sandboxes started by refused requests", n-before)
	}
	// At the bounds, all is kept.
	resp, data := e.do("POST", "/v3/sandboxes", map[string]any{"projectId": "prj_1", "name": "at-bounds",
		"env": map[string]string{"K": string(bytesOf('x', maxEnvBytes-1))}, "tags": map[string]string{"k": string(bytesOf('v', maxTagBytes))}}, "")
	if resp.StatusCode != 200 {
		t.Fatalf("at the bounds: %d %s", resp.StatusCode, data)
	}
	v, err := e.db.GetVercelSandbox(context.Background(), "team_1", "prj_1", "at-bounds")
	if err != nil || len(v.Data) > 2*maxEnvBytes {
		t.Errorf("record at the bounds: %d bytes, %v", len(v.Data), err)
	}
}

func bytesOf(c byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = c
	}
	return b
}

// TestSessionsBounded: a record keeps its latest maxSessions sessions,
// and the store finds it by those only.
func TestSessionsBounded(t *testing.T) {
	ctx := context.Background()
	s := NewStore(newSQLite(t))
	rec := Record{Scope: Scope{Team: "team_1", Project: "prj_1"}, Name: "long-lived", API: apiV2, CreatedAt: 1}
	rec.addSession(SessionRecord{ID: "sb-0"})
	if err := s.create(ctx, &rec); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= maxSessions+4; i++ {
		rec.addSession(SessionRecord{ID: "sb-" + strconv.Itoa(i)})
	}
	if err := s.update(ctx, &rec); err != nil {
		t.Fatal(err)
	}
	if len(rec.Sessions) != maxSessions || rec.Sessions[0].ID != "sb-5" || rec.current().ID != "sb-"+strconv.Itoa(maxSessions+4) {
		t.Fatalf("%d sessions, first %s, current %s", len(rec.Sessions), rec.Sessions[0].ID, rec.current().ID)
	}
	for id, want := range map[string]bool{"sb-0": false, "sb-4": false, "sb-5": true, "sb-104": true} {
		if _, err := s.bySession(ctx, "team_1", id); (err == nil) != want {
			t.Errorf("session %s: %v, want found %v", id, err, want)
		}
	}
}
