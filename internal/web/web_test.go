package web

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/events"
	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/metering"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/server"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/sqlite"
)

// tokens is a hand-written authenticator: token → principal; revoke
// makes a token answer expired_token, as auth does for an expired one.
type tokens struct {
	mu      sync.Mutex // guards the maps
	valid   map[string]auth.Principal
	revoked map[string]bool
}

func (a *tokens) AuthenticateBearer(_ context.Context, token string) (auth.Principal, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.revoked[token] {
		return auth.Principal{}, auth.ErrExpiredToken
	}
	p, ok := a.valid[token]
	if !ok {
		return auth.Principal{}, auth.ErrInvalidToken
	}
	return p, nil
}

func (a *tokens) revoke(token string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.revoked[token] = true
}

const (
	tokenA = "pdk_team_a"
	tokenB = "pdk_team_b"
)

// env is the dashboard over the real API handler, on fake sandboxes:
// sbA belongs to team-a, sbB to team-b.
type env struct {
	srv      *httptest.Server
	auth     *tokens
	sbs      *fake.Sandboxes
	bus      *events.Bus
	agent    *fake.Agent // every sandbox's
	sbA, sbB string
	store    *sqlite.Store
	api      http.Handler // the API's handler, for reads and writes behind the dashboard's back
}

// created makes a sandbox of team-a and publishes its event, as node does.
func (e *env) created(t *testing.T, labels map[string]string) string {
	t.Helper()
	sb, err := e.sbs.Create(context.Background(), sandbox.CreateRequest{TeamID: "team-a", Labels: labels})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.bus.Publish(context.Background(), store.Event{Type: "sandbox.created", TeamID: "team-a", SandboxID: sb.ID}); err != nil {
		t.Fatal(err)
	}
	return sb.ID
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ag := fake.StartAgent(t, fake.AgentConfig{})
	sbs := fake.NewSandboxes(fake.SandboxesConfig{Agent: ag.Client()})
	a := &tokens{valid: map[string]auth.Principal{
		tokenA: {TeamID: "team-a", Name: "alice", Role: "admin", TokenID: "tok-a"},
		tokenB: {TeamID: "team-b", Name: "bob", Role: "admin", TokenID: "tok-b"},
	}, revoked: map[string]bool{}}
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	bus := events.NewBus(st, nil)
	t.Cleanup(func() { bus.Close() })
	meter, err := metering.New(metering.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	apiSrv, err := server.New(server.Config{Sandboxes: sbs, Auth: a, StagingDir: t.TempDir(), Events: bus, Metering: meter})
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(Config{API: apiSrv.Handler(), Auth: a, SecretsKey: []byte("0123456789abcdef0123456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{auth: a, sbs: sbs, bus: bus, agent: ag, store: st, api: apiSrv.Handler()}
	ctx := context.Background()
	for team, id := range map[string]*string{"team-a": &e.sbA, "team-b": &e.sbB} {
		sb, err := sbs.Create(ctx, sandbox.CreateRequest{TeamID: team, Labels: map[string]string{"owner": team}})
		if err != nil {
			t.Fatal(err)
		}
		*id = sb.ID
	}
	e.srv = httptest.NewServer(h)
	// Streams first: Close waits for open connections (event feeds).
	t.Cleanup(func() { apiSrv.CloseStreams(); e.srv.Close() })
	return e
}

// client is a browser without JavaScript: a cookie jar, no redirects followed.
func (e *env) client(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func (e *env) signIn(t *testing.T, c *http.Client, token string) {
	t.Helper()
	resp := post(t, c, e.srv.URL+"/ui/login", url.Values{"token": {token}, "next": {"/ui/"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("sign in: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
}

func get(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func post(t *testing.T, c *http.Client, u string, form url.Values) *http.Response {
	t.Helper()
	resp, err := c.PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

var csrfRE = regexp.MustCompile(`name="csrf-token" content="([^"]+)"`)

func csrfOf(t *testing.T, page string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no CSRF token on the page")
	}
	return m[1]
}

func TestSignIn(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)

	resp, _ := get(t, c, e.srv.URL+"/ui/sandboxes/"+e.sbA)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login?next=%2Fui%2Fsandboxes%2F"+e.sbA {
		t.Fatalf("signed out: %d %q, want a redirect to sign-in that comes back", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp := post(t, c, e.srv.URL+"/ui/login", url.Values{"token": {"pdk_wrong"}}); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d, want 401", resp.StatusCode)
	}

	resp = post(t, c, e.srv.URL+"/ui/login", url.Values{"token": {tokenA}, "next": {"https://evil.example/"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("sign in: %d %q, want 303 to /ui/ (never off-site)", resp.StatusCode, resp.Header.Get("Location"))
	}
	var cookie *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == sessionCookie {
			cookie = ck
		}
	}
	switch {
	case cookie == nil:
		t.Fatal("no session cookie")
	case !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.Path != "/":
		t.Fatalf("cookie %+v: want HttpOnly, SameSite=Strict, Path=/", cookie)
	case strings.Contains(cookie.Value, tokenA):
		t.Fatal("the cookie holds the token in the clear")
	}

	resp, body := get(t, c, e.srv.URL+"/ui/")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, e.sbA) || strings.Contains(body, e.sbB) {
		t.Fatalf("list: %d, want team-a's sandbox %s and not team-b's %s:\n%s", resp.StatusCode, e.sbA, e.sbB, body)
	}

	// Sign out ends the session.
	post(t, c, e.srv.URL+"/ui/logout", nil)
	if resp, _ := get(t, c, e.srv.URL+"/ui/"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("after sign-out: %d, want a redirect to sign-in", resp.StatusCode)
	}
}

func TestSecureCookieWithTLS(t *testing.T) {
	h, err := New(Config{API: http.NotFoundHandler(), Auth: &tokens{valid: map[string]auth.Principal{tokenA: {TeamID: "t"}}},
		SecretsKey: make([]byte, 32), SecureCookies: true})
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("POST", "/ui/login", strings.NewReader("token="+tokenA)).WithContext(context.Background()))
	r := httptest.NewRequest("POST", "/ui/login", strings.NewReader("token="+tokenA))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	res := w.Result()
	if len(res.Cookies()) != 1 || !res.Cookies()[0].Secure {
		t.Fatalf("cookies %+v: want one Secure session cookie", res.Cookies())
	}
}

func TestOtherTeamsSandboxIsNotFound(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)
	e.signIn(t, c, tokenA)
	for _, path := range []string{"/ui/sandboxes/" + e.sbB, "/ui/sandboxes/sb-nonexistent", "/ui/api/v1/sandboxes/" + e.sbB} {
		t.Run(path, func(t *testing.T) {
			resp, body := get(t, c, e.srv.URL+path)
			if resp.StatusCode != http.StatusNotFound || strings.Contains(body, "team-b") {
				t.Fatalf("%d, want 404 that says nothing of the owner:\n%s", resp.StatusCode, body)
			}
		})
	}
}

func TestRevokedTokenLeadsToSignIn(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)
	e.signIn(t, c, tokenA)
	if resp, _ := get(t, c, e.srv.URL+"/ui/"); resp.StatusCode != http.StatusOK {
		t.Fatalf("before revoking: %d", resp.StatusCode)
	}
	e.auth.revoke(tokenA)
	resp, _ := get(t, c, e.srv.URL+"/ui/")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/ui/login") {
		t.Fatalf("after revoking: %d %q, want a redirect to sign-in", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := get(t, c, e.srv.URL+"/ui/api/v1/sandboxes"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bridge after revoking: %d, want 401", resp.StatusCode)
	}
}

func TestTamperedCookieLeadsToSignIn(t *testing.T) {
	e := newEnv(t)
	for name, value := range map[string]string{"garbage": "xyz", "plain token": tokenA, "empty": ""} {
		t.Run(name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", e.srv.URL+"/ui/", nil)
			req.AddCookie(&http.Cookie{Name: sessionCookie, Value: value})
			resp, err := e.client(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("%d, want a redirect to sign-in", resp.StatusCode)
			}
		})
	}
}

// TestPagesRenderWithoutJavaScript reads every page as a browser without
// scripts would: whole HTML, the data in it, labelled controls.
func TestPagesRenderWithoutJavaScript(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)
	e.signIn(t, c, tokenA)
	tests := []struct {
		name, path string
		want       []string
	}{
		{"sandboxes", "/ui/", []string{"<h1>Sandboxes</h1>", e.sbA, "owner=team-a", "running", `aria-label="Stop ` + e.sbA + `"`}},
		{"sandbox", "/ui/sandboxes/" + e.sbA, []string{e.sbA, "Command history", `<label for="minutes">`, "Usage now", `<label for="file-path">`}},
		{"projects", "/ui/projects", []string{"<h1>Projects</h1>"}},
		{"capacity", "/ui/capacity", []string{"<h1>Capacity</h1>", "Warm pools"}},
		{"usage", "/ui/usage", []string{"<h1>Usage and cost</h1>"}},
		{"events", "/ui/events", []string{"<h1>Events</h1>"}},
		{"accounts", "/ui/admin", []string{"<h1>Accounts</h1>"}},
		{"demo", "/ui/demo", []string{"<h1>Demo</h1>"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := get(t, c, e.srv.URL+tc.path)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%d:\n%s", resp.StatusCode, body)
			}
			for _, w := range tc.want {
				if !strings.Contains(body, w) {
					t.Errorf("missing %q in:\n%s", w, body)
				}
			}
			if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
				t.Errorf("CSP %q", csp)
			}
		})
	}
}

func TestFormsNeedCSRFToken(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)
	e.signIn(t, c, tokenA)
	_, page := get(t, c, e.srv.URL+"/ui/sandboxes/"+e.sbA)
	token := csrfOf(t, page)

	if resp := post(t, c, e.srv.URL+"/ui/sandboxes/"+e.sbA+"/stop", url.Values{"csrf": {"forged"}}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("forged CSRF token: %d, want 403", resp.StatusCode)
	}
	if sb, _ := e.sbs.Get(context.Background(), e.sbA); sb.State != sandbox.Running {
		t.Fatalf("stopped without a CSRF token: %s", sb.State)
	}
	// Another team's sandbox with a good token: not found.
	if resp := post(t, c, e.srv.URL+"/ui/sandboxes/"+e.sbB+"/stop", url.Values{"csrf": {token}}); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("stop team-b's: %d, want 404", resp.StatusCode)
	}
	resp := post(t, c, e.srv.URL+"/ui/sandboxes/"+e.sbA+"/stop", url.Values{"csrf": {token}, "back": {"/ui/"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("stop: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if sb, _ := e.sbs.Get(context.Background(), e.sbA); sb.State == sandbox.Running {
		t.Fatal("still running after stop")
	}
}

func TestCrossSiteFormsAreRefused(t *testing.T) {
	e := newEnv(t)
	req, _ := http.NewRequest("POST", e.srv.URL+"/ui/login", strings.NewReader("token="+tokenA))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, err := e.client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site sign-in: %d, want 403", resp.StatusCode)
	}
}

func TestBridge(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)
	e.signIn(t, c, tokenA)
	_, page := get(t, c, e.srv.URL+"/ui/")
	token := csrfOf(t, page)

	resp, body := get(t, c, e.srv.URL+"/ui/api/v1/sandboxes")
	var list api.SandboxList
	if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &list) != nil || len(list.Sandboxes) != 1 || list.Sandboxes[0].ID != e.sbA {
		t.Fatalf("list through the bridge: %d %s", resp.StatusCode, body)
	}
	for name, tc := range map[string]struct {
		csrf string
		want int
	}{"no token": {"", http.StatusForbidden}, "wrong token": {"x", http.StatusForbidden}, "token": {token, http.StatusOK}} {
		t.Run(name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", e.srv.URL+"/ui/api/v1/sandboxes/"+e.sbA+"/extend-timeout", strings.NewReader(`{"durationMs":60000}`))
			req.Header.Set("Content-Type", "application/json")
			if tc.csrf != "" {
				req.Header.Set("X-CSRF-Token", tc.csrf)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("%d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"/ui/sandboxes/x":      "/ui/sandboxes/x",
		"":                     "/ui/",
		"https://evil.example": "/ui/",
		"//evil.example/ui/":   "/ui/",
		"/api/v1/sandboxes":    "/ui/",
		"/ui/\\evil":           "/ui/",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestHandles(t *testing.T) {
	for path, want := range map[string]bool{"/": true, "/ui": true, "/ui/x": true, "/api/v1/sandboxes": false, "/healthz": false, "/uix": false, "/compat/e2b/x": false} {
		if Handles(path) != want {
			t.Errorf("Handles(%q) = %v", path, !want)
		}
	}
}

func TestUpload(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)
	e.signIn(t, c, tokenA)
	_, page := get(t, c, e.srv.URL+"/ui/sandboxes/"+e.sbA)
	token := csrfOf(t, page)
	upload := func(sandboxID, csrf, dir, filename, content string) *http.Response {
		t.Helper()
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		mw.WriteField("csrf", csrf)
		mw.WriteField("dir", dir)
		fw, _ := mw.CreateFormFile("file", filename)
		fw.Write([]byte(content))
		mw.Close()
		resp, err := c.Post(e.srv.URL+"/ui/sandboxes/"+sandboxID+"/upload", mw.FormDataContentType(), &body)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	tests := []struct {
		name, sandbox, csrf, dir, file string
		want                           int
	}{
		{"no CSRF token", e.sbA, "", "/home/user", "a.txt", http.StatusForbidden},
		{"another team's sandbox", e.sbB, token, "/home/user", "a.txt", http.StatusNotFound},
		{"relative dir", e.sbA, token, "home", "a.txt", http.StatusBadRequest},
		{"upload", e.sbA, token, "/home/user", "../notes.txt", http.StatusSeeOther},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if resp := upload(tc.sandbox, tc.csrf, tc.dir, tc.file, "hello"); resp.StatusCode != tc.want {
				t.Fatalf("%d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
	writes := e.agent.Writes()
	if len(writes) != 1 || writes[0].Dir != "/home/user" || writes[0].Entries["notes.txt"] != "hello" {
		t.Fatalf("agent writes %+v, want notes.txt under /home/user once", writes)
	}
}
