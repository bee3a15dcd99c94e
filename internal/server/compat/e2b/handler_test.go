package e2b

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/server/compat/e2b/envd"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/sqlite"
)

// env is the layer over fake sandboxes and snapshots, a real store and
// real authentication, with an E2B key for each of two teams.
type env struct {
	sbs        *fake.Sandboxes
	snaps      *fake.Snapshots
	st         store.Store
	url        string
	keyA, keyB string
	teamA      string
	clock      *fake.Clock
	tokens     *envd.Tokens
}

func setup(t *testing.T) *env {
	t.Helper()
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "paddock.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clock := fake.NewClock(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC))
	a, err := auth.New(t.Context(), auth.Config{Store: st, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{st: st, clock: clock}
	var keys []string
	for _, name := range []string{"team-a", "team-b"} {
		team, err := a.CreateTeam(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		key, _, err := a.CreateTokenFormat(t.Context(), auth.FormatE2B, team.ID, "", "sdk", store.RoleMember, 0)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, key)
		if e.teamA == "" {
			e.teamA = team.ID
		}
	}
	e.keyA, e.keyB = keys[0], keys[1]
	e.sbs = fake.NewSandboxes(fake.SandboxesConfig{Now: clock.Now, MaxTimeout: time.Hour})
	e.snaps = fake.NewSnapshots(e.sbs, "")
	if e.tokens, err = envd.NewTokens(bytes.Repeat([]byte{9}, 32)); err != nil {
		t.Fatal(err)
	}
	h, err := New(Config{Sandboxes: e.sbs, Auth: a, Records: st, Snapshots: e.snaps, Tokens: e.tokens, Domain: "paddock.localhost:7420", Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	e.url = hs.URL + Prefix
	return e
}

// do sends a request with key and decodes a JSON answer into out.
func (e *env) do(t *testing.T, key, method, path, body string, out any) (int, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, e.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: %d %q: %v", method, path, resp.StatusCode, data, err)
		}
	}
	return resp.StatusCode, resp.Header
}

func (e *env) create(t *testing.T, key, body string) sandboxWire {
	t.Helper()
	var sb sandboxWire
	if status, _ := e.do(t, key, "POST", "/sandboxes", body, &sb); status != http.StatusCreated {
		t.Fatalf("create %s = %d", body, status)
	}
	return sb
}

// TestCreateGetKill: a create keeps metadata and env, answers what the
// SDKs read, and get, list and kill see it.
func TestCreateGetKill(t *testing.T) {
	e := setup(t)
	sb := e.create(t, e.keyA, `{"templateID":"base","timeout":120,"metadata":{"user":"ada"},"envVars":{"K":"v"},"secure":true,"allow_internet_access":true}`)
	if sb.SandboxID == "" || sb.TemplateID != "base" || sb.EnvdVersion != EnvdVersion || sb.ClientID == "" || sb.Domain != "paddock.localhost:7420" {
		t.Errorf("created %+v", sb)
	}
	creq := e.sbs.Creates()[0]
	if creq.Image != "" || creq.Timeout != 2*time.Minute || creq.Env["K"] != "v" || creq.TeamID != e.teamA || creq.NetworkPolicy != nil {
		t.Errorf("paddock create request %+v", creq)
	}
	var d sandboxDetail
	if status, _ := e.do(t, e.keyA, "GET", "/sandboxes/"+sb.SandboxID, "", &d); status != 200 ||
		d.Metadata["user"] != "ada" || d.State != "running" || !d.EndAt.Equal(e.clock.Now().Add(2*time.Minute)) {
		t.Errorf("get = %d %+v", status, d)
	}
	if status, _ := e.do(t, e.keyA, "DELETE", "/sandboxes/"+sb.SandboxID, "", nil); status != http.StatusNoContent {
		t.Errorf("kill = %d", status)
	}
	var eb errorBody
	if status, _ := e.do(t, e.keyA, "GET", "/sandboxes/"+sb.SandboxID, "", &eb); status != 404 || eb.Code != 404 || eb.Message == "" {
		t.Errorf("get after kill = %d %+v", status, eb)
	}
	if _, err := e.st.GetE2BSandbox(t.Context(), e.teamA, sb.SandboxID); err == nil {
		t.Error("the record outlived the kill")
	}
}

// TestCreateRequests: templates, network rules and what is refused.
func TestCreateRequests(t *testing.T) {
	e := setup(t)
	snap := e.create(t, e.keyA, `{}`)
	var si snapshotInfo
	if status, _ := e.do(t, e.keyA, "POST", "/sandboxes/"+snap.SandboxID+"/snapshots", `{}`, &si); status != 201 || si.SnapshotID == "" {
		t.Fatalf("snapshot = %d %+v", status, si)
	}
	for _, tc := range []struct {
		name, body string
		status     int
		check      func(t *testing.T, req sandbox.CreateRequest)
	}{
		{"an image", `{"templateID":"python:3.12"}`, 201, func(t *testing.T, req sandbox.CreateRequest) {
			if req.Image != "python:3.12" {
				t.Errorf("image %q", req.Image)
			}
		}},
		{"a snapshot", `{"templateID":"` + si.SnapshotID + `"}`, 201, func(t *testing.T, req sandbox.CreateRequest) {
			if req.Snapshot != si.SnapshotID || req.Image != "" {
				t.Errorf("snapshot %q image %q", req.Snapshot, req.Image)
			}
		}},
		{"no internet", `{"allow_internet_access":false}`, 201, func(t *testing.T, req sandbox.CreateRequest) {
			if p := req.NetworkPolicy; p == nil || p.Mode != "deny-all" {
				t.Errorf("policy %+v", p)
			}
		}},
		{"deny all but some", `{"network":{"denyOut":["0.0.0.0/0"],"allowOut":["pypi.org","1.2.3.4"]}}`, 201, func(t *testing.T, req sandbox.CreateRequest) {
			p := req.NetworkPolicy
			if p == nil || p.Mode != "custom" || !slices.Equal(p.AllowDomains, []string{"pypi.org"}) || len(p.AllowCIDRs) != 1 || p.AllowCIDRs[0].String() != "1.2.3.4/32" {
				t.Errorf("policy %+v", p)
			}
		}},
		{"deny a range", `{"network":{"denyOut":["8.8.8.0/24"]}}`, 201, func(t *testing.T, req sandbox.CreateRequest) {
			if p := req.NetworkPolicy; p == nil || p.Mode != "allow-all" || len(p.DenyCIDRs) != 1 {
				t.Errorf("policy %+v", p)
			}
		}},
		{"deny a name", `{"network":{"denyOut":["example.com"]}}`, 400, nil},
		{"another team's snapshot", `{"templateID":"` + si.SnapshotID + `"}`, 404, nil},
		{"auto pause", `{"autoPause":true}`, 501, nil},
		{"bad env", `{"envVars":{"A=B":"1"}}`, 400, nil},
		{"negative timeout", `{"timeout":-1}`, 400, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := e.keyA
			if tc.name == "another team's snapshot" {
				key = e.keyB
			}
			before := len(e.sbs.Creates())
			var eb errorBody
			status, _ := e.do(t, key, "POST", "/sandboxes", tc.body, &eb)
			if status != tc.status {
				t.Fatalf("status %d (%+v), want %d", status, eb, tc.status)
			}
			if tc.check != nil {
				tc.check(t, e.sbs.Creates()[before])
			} else if len(e.sbs.Creates()) != before || eb.Code != status {
				t.Errorf("a refused create reached paddock, or the error %+v is not E2B's shape", eb)
			}
		})
	}
}

// TestList: v2 filters by metadata and state and pages with x-next-token;
// another team's key sees none of it.
func TestList(t *testing.T) {
	e := setup(t)
	var ids []string
	for i, user := range []string{"ada", "bob", "ada", "ada"} {
		sb := e.create(t, e.keyA, `{"metadata":{"user":"`+user+`","n":"`+string(rune('0'+i))+`"}}`)
		ids = append(ids, sb.SandboxID)
	}
	if status, _ := e.do(t, e.keyA, "POST", "/sandboxes/"+ids[3]+"/pause", "", nil); status != http.StatusNoContent {
		t.Fatalf("pause = %d", status)
	}
	list := func(key, query string) ([]string, string) {
		var out []sandboxDetail
		status, hdr := e.do(t, key, "GET", "/v2/sandboxes?"+query, "", &out)
		if status != 200 {
			t.Fatalf("list %s = %d", query, status)
		}
		var got []string
		for _, d := range out {
			got = append(got, d.SandboxID)
		}
		return got, hdr.Get("X-Next-Token")
	}
	md := url.QueryEscape("user=ada")
	for _, tc := range []struct {
		name, query string
		want        []string
	}{
		{"all", "", ids},
		{"metadata", "metadata=" + md, []string{ids[0], ids[2], ids[3]}},
		{"metadata and running", "metadata=" + md + "&state=running", []string{ids[0], ids[2]}},
		{"paused", "state=paused", []string{ids[3]}},
		{"both states", "state=running,paused", ids},
		{"two keys", "metadata=" + url.QueryEscape("user=ada&n=2"), []string{ids[2]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, _ := list(e.keyA, tc.query); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	var all []string
	token := ""
	for range 10 {
		page, next := list(e.keyA, "limit=3&nextToken="+url.QueryEscape(token))
		all = append(all, page...)
		if next == "" {
			break
		}
		token = next
	}
	if !slices.Equal(all, ids) {
		t.Errorf("paged: %v, want %v", all, ids)
	}
	if got, _ := list(e.keyB, ""); len(got) != 0 {
		t.Errorf("team B lists %v", got)
	}
	var v1 []sandboxDetail
	if status, _ := e.do(t, e.keyA, "GET", "/sandboxes?metadata="+md, "", &v1); status != 200 || len(v1) != 2 {
		t.Errorf("v1 list = %d, %d sandboxes (running only)", status, len(v1))
	}
}

// TestTimeoutPauseConnect: set timeout moves the end (never earlier),
// connect resumes a paused sandbox and otherwise only extends.
func TestTimeoutPauseConnect(t *testing.T) {
	e := setup(t)
	sb := e.create(t, e.keyA, `{"timeout":60}`)
	path := "/sandboxes/" + sb.SandboxID
	end := func() time.Time {
		var d sandboxDetail
		e.do(t, e.keyA, "GET", path, "", &d)
		return d.EndAt
	}
	if status, _ := e.do(t, e.keyA, "POST", path+"/timeout", `{"timeout":600}`, nil); status != 204 || !end().Equal(e.clock.Now().Add(10*time.Minute)) {
		t.Errorf("set timeout = %d, end %s", status, end())
	}
	if status, _ := e.do(t, e.keyA, "POST", path+"/timeout", `{"timeout":700}`, nil); status != 204 || !end().Equal(e.clock.Now().Add(700*time.Second)) {
		t.Errorf("set timeout again = %d, end %s", status, end())
	}
	if status, _ := e.do(t, e.keyA, "POST", path+"/timeout", `{"timeout":600}`, nil); status != 204 || !end().Equal(e.clock.Now().Add(10*time.Minute)) {
		t.Errorf("shortening = %d, end %s; E2B's set timeout moves the end either way", status, end())
	}
	var w sandboxWire
	if status, _ := e.do(t, e.keyA, "POST", path+"/connect", `{"timeout":60}`, &w); status != 200 || w.SandboxID != sb.SandboxID || !end().Equal(e.clock.Now().Add(10*time.Minute)) {
		t.Errorf("connect to a running sandbox = %d %+v, end %s (must not shorten)", status, w, end())
	}
	if status, _ := e.do(t, e.keyA, "POST", path+"/pause", "", nil); status != 204 {
		t.Fatalf("pause = %d", status)
	}
	if status, _ := e.do(t, e.keyA, "POST", path+"/pause", "", nil); status != 409 {
		t.Errorf("pause again = %d, want 409", status)
	}
	var d sandboxDetail
	if e.do(t, e.keyA, "GET", path, "", &d); d.State != "paused" {
		t.Errorf("state after pause %q", d.State)
	}
	e.clock.Advance(time.Hour)
	if status, _ := e.do(t, e.keyA, "POST", path+"/connect", `{"timeout":300}`, &w); status != 201 || w.SandboxID != sb.SandboxID {
		t.Fatalf("connect to a paused sandbox = %d %+v", status, w)
	}
	if e.do(t, e.keyA, "GET", path, "", &d); d.State != "running" || !d.EndAt.Equal(e.clock.Now().Add(5*time.Minute)) {
		t.Errorf("after connect: %s, end %s", d.State, d.EndAt)
	}
	var m []metric
	if status, _ := e.do(t, e.keyA, "GET", path+"/metrics", "", &m); status != 200 || len(m) != 1 {
		t.Errorf("metrics = %d %+v", status, m)
	}
}

// TestAnotherTeam: team B's key gets 404 on every route of team A's
// sandbox and changes nothing; no key is 401.
func TestAnotherTeam(t *testing.T) {
	e := setup(t)
	sb := e.create(t, e.keyA, `{}`)
	path := "/sandboxes/" + sb.SandboxID
	before := e.sbs.Mutations()
	for _, rt := range []struct{ method, path, body string }{
		{"GET", path, ""},
		{"DELETE", path, ""},
		{"POST", path + "/timeout", `{"timeout":600}`},
		{"POST", path + "/connect", `{"timeout":600}`},
		{"POST", path + "/pause", ""},
		{"POST", path + "/resume", ""},
		{"GET", path + "/metrics", ""},
		{"POST", path + "/snapshots", `{}`},
		{"PUT", path + "/network", `{"denyOut":["0.0.0.0/0"]}`},
		{"POST", path + "/refreshes", `{}`},
	} {
		if status, _ := e.do(t, e.keyB, rt.method, rt.path, rt.body, nil); status != 404 {
			t.Errorf("team B: %s %s = %d, want 404", rt.method, rt.path, status)
		}
	}
	if after := e.sbs.Mutations(); !slices.Equal(after, before) {
		t.Errorf("team B changed %v", after[len(before):])
	}
	var snaps []snapshotInfo
	if e.do(t, e.keyB, "GET", "/snapshots", "", &snaps); len(snaps) != 0 {
		t.Errorf("team B sees snapshots %v", snaps)
	}
	var eb errorBody
	if status, _ := e.do(t, "", "GET", path, "", &eb); status != 401 || eb.Code != 401 {
		t.Errorf("no key = %d %+v", status, eb)
	}
	if status, _ := e.do(t, "e2b_"+strings.Repeat("0", 40), "GET", path, "", nil); status != 401 {
		t.Errorf("an unknown key = %d", status)
	}
}

// TestTokens: create and connect hand the owner the sandbox's envd and
// traffic tokens; another team's connect is not found and gets none.
func TestTokens(t *testing.T) {
	e := setup(t)
	sb := e.create(t, e.keyA, `{"templateID":"base"}`)
	if sb.EnvdAccessToken != e.tokens.Access(sb.SandboxID) || sb.TrafficAccessToken != e.tokens.Traffic(sb.SandboxID) || sb.EnvdAccessToken == sb.TrafficAccessToken {
		t.Fatalf("create answered tokens %q %q", sb.EnvdAccessToken, sb.TrafficAccessToken)
	}
	if sb.EnvdVersion != envd.Version {
		t.Errorf("envdVersion %q, want what envd serves, %q", sb.EnvdVersion, envd.Version)
	}
	var w sandboxWire
	if status, _ := e.do(t, e.keyA, "POST", "/sandboxes/"+sb.SandboxID+"/connect", `{"timeout":60}`, &w); status != 200 || w.EnvdAccessToken != sb.EnvdAccessToken {
		t.Fatalf("connect = %d %+v", status, w)
	}
	var other map[string]any
	if status, _ := e.do(t, e.keyB, "POST", "/sandboxes/"+sb.SandboxID+"/connect", `{"timeout":60}`, &other); status != 404 || other["envdAccessToken"] != nil {
		t.Fatalf("another team's connect = %d %v", status, other)
	}
}

// TestGoneSandboxRecordForgotten: a sandbox deleted or stopped through
// paddock's own API leaves no E2B record behind once a get or a list has
// seen it gone.
func TestGoneSandboxRecordForgotten(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	gotten := e.create(t, e.keyA, `{"metadata":{"k":"1"}}`)
	listed := e.create(t, e.keyA, `{"metadata":{"k":"2"}}`)
	stopped := e.create(t, e.keyA, `{"metadata":{"k":"3"}}`)
	kept := e.create(t, e.keyA, `{"metadata":{"k":"4"}}`)
	other := e.create(t, e.keyB, `{}`)
	for _, id := range []string{gotten.SandboxID, listed.SandboxID, other.SandboxID} {
		if err := e.sbs.Delete(ctx, id); err != nil { // as DELETE /api/v1/sandboxes/{id} does
			t.Fatal(err)
		}
	}
	if _, err := e.sbs.Stop(ctx, stopped.SandboxID); err != nil {
		t.Fatal(err)
	}
	if status, _ := e.do(t, e.keyA, "GET", "/sandboxes/"+gotten.SandboxID, "", nil); status != 404 {
		t.Fatalf("get a deleted sandbox = %d", status)
	}
	if _, err := e.st.GetE2BSandbox(ctx, e.teamA, gotten.SandboxID); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("the record of a sandbox get saw gone: %v, want not found", err)
	}
	var list []sandboxDetail
	if status, _ := e.do(t, e.keyA, "GET", "/v2/sandboxes", "", &list); status != 200 || len(list) != 1 || list[0].SandboxID != kept.SandboxID {
		t.Fatalf("list = %d %+v, want only %s", status, list, kept.SandboxID)
	}
	for _, id := range []string{listed.SandboxID, stopped.SandboxID} {
		if _, err := e.st.GetE2BSandbox(ctx, e.teamA, id); !errors.Is(err, sandbox.ErrNotFound) {
			t.Errorf("the record of %s after a list: %v, want not found", id, err)
		}
	}
	if _, err := e.st.GetE2BSandbox(ctx, e.teamA, kept.SandboxID); err != nil {
		t.Errorf("the record of a live sandbox: %v", err)
	}
	// Team A's calls never touch team B's records.
	recs, _, err := e.st.ListE2BSandboxes(ctx, store.E2BSandboxFilter{TeamID: teamOfKey(t, e, e.keyB)}, store.Page{})
	if err != nil || len(recs) != 1 || recs[0].ID != other.SandboxID {
		t.Fatalf("team B's records %+v %v", recs, err)
	}
}

// teamOfKey is the team a key's sandboxes are made in.
func teamOfKey(t *testing.T, e *env, key string) string {
	t.Helper()
	sb := e.create(t, key, `{}`)
	got, err := e.sbs.Get(t.Context(), sb.SandboxID)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.sbs.Delete(t.Context(), sb.SandboxID); err != nil {
		t.Fatal(err)
	}
	if err := e.st.DeleteE2BSandbox(t.Context(), got.TeamID, sb.SandboxID); err != nil {
		t.Fatal(err)
	}
	return got.TeamID
}
