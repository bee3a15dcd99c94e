package app

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/sandbox"

	"github.com/paddock-dev/paddock/internal/proxy"
	"github.com/paddock-dev/paddock/internal/proxy/proxytest"
)

// appProject is a project as the fake control plane knows it.
type appProject struct {
	team     string
	target   Target
	inactive bool
}

// appHarness runs an Proxy behind a stand-in of the API's auth
// middleware (bearer token → principal in the context) for the path form,
// and on app-<id>.localhost for the host form; real upstreams (httptest)
// stand in for the apps.
type appHarness struct {
	t        testing.TB
	proxy    *Proxy
	signer   *proxy.Signer
	addr     string
	client   *http.Client
	h2c      *http.Client
	mu       sync.Mutex
	projects map[string]appProject
	touched  map[string]int
}

// Tokens of two teams' callers.
var appTokens = map[string]auth.Principal{
	"pdk_team_a": {TeamID: "team-a", Name: "a"},
	"pdk_team_b": {TeamID: "team-b", Name: "b"},
}

func authenticateBearer(r *http.Request) (auth.Principal, error) {
	tok, ok := auth.BearerToken(r.Header.Get("Authorization"))
	if !ok {
		return auth.Principal{}, sandbox.Errorf(sandbox.ErrUnauthorized, "missing_token", "no token")
	}
	p, ok := appTokens[tok]
	if !ok {
		return auth.Principal{}, sandbox.Errorf(sandbox.ErrUnauthorized, "invalid_token", "bad token")
	}
	return p, nil
}

func newAppHarness(t testing.TB, maxBody int64) *appHarness {
	t.Helper()
	h := &appHarness{t: t, projects: map[string]appProject{}, touched: map[string]int{}}
	h.signer = &proxy.Signer{Key: proxytest.Key}
	ap, err := New(Config{
		Resolve:      h.resolve,
		Authenticate: authenticateBearer,
		Signer:       h.signer,
		Domain:       "localhost",
		Touch:        h.touch,
		MaxBodyBytes: maxBody,
		Logger:       slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	h.proxy = ap
	t.Cleanup(func() { _ = ap.Close() })

	paths := ap.PathHandler()
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if ap.HandlesHost(r.Host) {
				ap.ServeHTTP(w, r)
				return
			}
			// The API's middleware: no principal, no entry.
			p, err := authenticateBearer(r)
			if err != nil {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			paths.ServeHTTP(w, r.WithContext(auth.WithPrincipal(r.Context(), p)))
		}),
		Protocols:         &protocols,
		ReadHeaderTimeout: 5 * time.Second,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = ln.Addr().String()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", h.addr)
	}
	t1 := &http.Transport{DialContext: dial, DisableCompression: true}
	var h2only http.Protocols
	h2only.SetUnencryptedHTTP2(true)
	t2 := &http.Transport{DialContext: dial, Protocols: &h2only, DisableCompression: true}
	t.Cleanup(t1.CloseIdleConnections)
	t.Cleanup(t2.CloseIdleConnections)
	h.client = &http.Client{Transport: t1}
	h.h2c = &http.Client{Transport: t2}
	return h
}

func (h *appHarness) resolve(_ context.Context, p auth.Principal, id string) (Target, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	pr, ok := h.projects[id]
	if !ok || !p.CanAccessTeam(pr.team) {
		return Target{}, sandbox.Errorf(sandbox.ErrNotFound, "project_not_found", "project %s not found", id)
	}
	if pr.inactive {
		return Target{}, sandbox.Errorf(sandbox.ErrUnavailable, "project_not_active", "not active")
	}
	return pr.target, nil
}

func (h *appHarness) touch(activationID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.touched[activationID]++
}

func (h *appHarness) touches(activationID string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.touched[activationID]
}

// addApp serves handler as project id's app, owned by team-a.
func (h *appHarness) addApp(id, secretHeader string, handler http.Handler) {
	h.t.Helper()
	srv := httptest.NewServer(handler)
	h.t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.projects[id] = appProject{team: "team-a", target: Target{URL: u, SecretHeader: secretHeader, Secret: "secret-of-" + id, ActivationID: "act-" + id}}
}

func (h *appHarness) pathURL(id, rest string) string {
	return "http://" + h.addr + PathPrefix(id) + rest
}

func (h *appHarness) hostURL(id, rest string) string {
	_, port, _ := net.SplitHostPort(h.addr)
	return "http://app-" + id + ".localhost:" + port + rest
}

func (h *appHarness) request(method, url, token string, body io.Reader, header ...string) *http.Request {
	h.t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		h.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	return req
}

// TestAppHeaders: the app gets the project's secret and none of the
// client's credentials, under the path form and the host form alike.
func TestAppHeaders(t *testing.T) {
	h := newAppHarness(t, 0)
	h.addApp("goose", "", proxytest.EchoHandler)
	h.addApp("custom", "X-App-Auth", proxytest.EchoHandler)
	cases := []struct {
		name, url, header, secret string
	}{
		{"path", h.pathURL("goose", "/sessions/1?x=1&paddock_token=zz"), "X-Secret-Key", "secret-of-goose"},
		// The host form reads signed tokens first, so it gets none here.
		{"host", h.hostURL("goose", "/sessions/1?x=1"), "X-Secret-Key", "secret-of-goose"},
		{"custom header", h.pathURL("custom", "/sessions/1?x=1"), "X-App-Auth", "secret-of-custom"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := h.request("GET", c.url, "pdk_team_a", nil,
				"X-Secret-Key", "chosen-by-client", "x-secret-key", "again",
				"X-App-Auth", "chosen-by-client", "Cookie", "paddock_token=abc; theme=dark")
			if c.name != "host" {
				req.Header.Set("X-Paddock-Token", "tok")
			}
			resp, body := proxytest.Do(t, h.client, req)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			var got proxytest.Echoed
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatal(err)
			}
			if v := got.Header.Values(c.header); len(v) != 1 || v[0] != c.secret {
				t.Errorf("app got %s %q, want only the project's secret", c.header, v)
			}
			if c.header != "X-Secret-Key" && got.Header.Get("X-Secret-Key") != "" {
				t.Errorf("client's X-Secret-Key reached the app: %q", got.Header.Values("X-Secret-Key"))
			}
			for _, name := range []string{"Authorization", "X-Paddock-Token"} {
				if v := got.Header.Get(name); v != "" {
					t.Errorf("app got %s %q", name, v)
				}
			}
			if ck := got.Header.Get("Cookie"); ck != "theme=dark" {
				t.Errorf("app got Cookie %q, want only theme=dark", ck)
			}
			if got.Path != "/sessions/1" || got.RawQuery != "x=1" {
				t.Errorf("app got path %q query %q", got.Path, got.RawQuery)
			}
		})
	}
}

// TestAppAccess: only the owner's team gets through; another team's
// caller cannot tell the project exists.
func TestAppAccess(t *testing.T) {
	h := newAppHarness(t, 0)
	h.addApp("goose", "", proxytest.EchoHandler)
	h.mu.Lock()
	h.projects["asleep"] = appProject{team: "team-a", inactive: true}
	h.mu.Unlock()
	cases := []struct {
		name, url, token string
		status           int
		code             string
	}{
		{"owner path", h.pathURL("goose", "/status"), "pdk_team_a", 200, ""},
		{"owner host", h.hostURL("goose", "/status"), "pdk_team_a", 200, ""},
		{"other team path", h.pathURL("goose", "/status"), "pdk_team_b", 404, "project_not_found"},
		{"other team host", h.hostURL("goose", "/status"), "pdk_team_b", 404, "project_not_found"},
		{"unknown project", h.pathURL("nope", "/status"), "pdk_team_a", 404, "project_not_found"},
		{"no token host", h.hostURL("goose", "/status"), "", 401, "unauthenticated"},
		{"bad token host", h.hostURL("goose", "/status"), "pdk_wrong", 401, "invalid_token"},
		{"not active", h.pathURL("asleep", "/status"), "pdk_team_a", 503, "project_not_active"},
		{"bare prefix", h.pathURL("goose", ""), "pdk_team_a", 200, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := proxytest.Do(t, h.client, h.request("GET", c.url, c.token, nil))
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.status, body)
			}
			if c.code != "" {
				if got := proxytest.ErrorCode(t, body); got != c.code {
					t.Errorf("code %q, want %q", got, c.code)
				}
				if got := resp.Header.Get(api.HeaderProxyError); got != c.code {
					t.Errorf("%s header %q, want %q", api.HeaderProxyError, got, c.code)
				}
			}
		})
	}
	if n := h.touches("act-goose"); n < 3 {
		t.Errorf("activity recorded %d times, want at least once per forwarded request", n)
	}
}

// TestAppSignedHostURL: a signed token opens one project's host form and
// leaves a cookie for the browser's next requests; it opens nothing else.
func TestAppSignedHostURL(t *testing.T) {
	h := newAppHarness(t, 0)
	h.addApp("goose", "", proxytest.EchoHandler)
	h.addApp("other", "", proxytest.EchoHandler)
	tok := Sign(h.signer, "goose", time.Minute)

	resp, body := proxytest.Do(t, h.client, h.request("GET", h.hostURL("goose", "/status?paddock_token="+tok), "", nil))
	if resp.StatusCode != 200 {
		t.Fatalf("signed URL: %d %s", resp.StatusCode, body)
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == proxy.TokenCookie {
			cookie = c
		}
	}
	if cookie == nil || !cookie.HttpOnly {
		t.Fatalf("no HttpOnly %s cookie set: %v", proxy.TokenCookie, resp.Cookies())
	}
	req := h.request("GET", h.hostURL("goose", "/status"), "", nil)
	req.AddCookie(cookie)
	if resp, body := proxytest.Do(t, h.client, req); resp.StatusCode != 200 {
		t.Errorf("cookie: %d %s", resp.StatusCode, body)
	}
	for name, u := range map[string]string{
		"other project":   h.hostURL("other", "/status?paddock_token="+tok),
		"sandbox port tk": h.hostURL("goose", "/status?paddock_token="+h.signer.Sign("goose", 3001, time.Minute)),
	} {
		if resp, _ := proxytest.Do(t, h.client, h.request("GET", u, "", nil)); resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: status %d, want 403", name, resp.StatusCode)
		}
	}
}

// TestAppSSEStreams: the first event arrives while the app holds the
// stream open, over HTTP/1.1 and h2c, and Last-Event-ID reaches the app.
func TestAppSSEStreams(t *testing.T) {
	h := newAppHarness(t, 0)
	release := make(chan struct{})
	h.addApp("goose", "", proxytest.HeldSSEHandler(release, func(r *http.Request) string {
		return "id: 1\ndata: after " + r.Header.Get("Last-Event-ID") + "\n\n"
	}))
	for _, c := range []struct {
		name   string
		client *http.Client
	}{{"http1", h.client}, {"h2c", h.h2c}} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			req := h.request("GET", h.pathURL("goose", "/sessions/s1/events"), "pdk_team_a", nil, "Last-Event-ID", "41")
			resp, err := c.client.Do(req.WithContext(ctx))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			br := bufio.NewReader(resp.Body)
			for _, want := range []string{"id: 1\n", "data: after 41\n"} {
				line, err := br.ReadString('\n')
				if err != nil || line != want {
					t.Fatalf("line %q, %v; want %q before the stream ends", line, err, want)
				}
			}
			release <- struct{}{}
		})
	}
}

// TestAppWebSocketEcho: an upgrade passes through the path form.
func TestAppWebSocketEcho(t *testing.T) {
	h := newAppHarness(t, 0)
	var secret atomic.Value
	h.addApp("goose", "", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		secret.Store(r.Header.Get("X-Secret-Key"))
		proxytest.WSEchoHandler.ServeHTTP(w, r)
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u := strings.Replace(h.pathURL("goose", "/acp"), "http://", "ws://", 1)
	c, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPClient: h.client,
		HTTPHeader: http.Header{"Authorization": {"Bearer pdk_team_a"}, "X-Secret-Key": {"mine"}},
	})
	if err != nil {
		t.Fatalf("dial through the app proxy: %v", err)
	}
	defer c.CloseNow()
	for i := range 5 {
		msg := fmt.Appendf(nil, "hello %d %s", i, strings.Repeat("y", i*5000))
		if err := c.Write(ctx, websocket.MessageText, msg); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("echo %d: got %d bytes, want %d", i, len(got), len(msg))
		}
	}
	_ = c.Close(websocket.StatusNormalClosure, "")
	if got := secret.Load(); got != "secret-of-goose" {
		t.Errorf("app saw X-Secret-Key %q on the upgrade", got)
	}
}

// TestAppBodyLimit: bodies over the limit get 413, declared or streamed;
// one at the limit passes whole.
func TestAppBodyLimit(t *testing.T) {
	const limit = 64 << 10
	h := newAppHarness(t, limit)
	var reached atomic.Int64
	h.addApp("goose", "", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			// The proxy cut the body: nothing useful to answer.
			return
		}
		fmt.Fprintf(w, "%d", n)
	}))
	cases := []struct {
		name    string
		size    int
		chunked bool
		status  int
	}{
		{"at limit", limit, false, 200},
		{"declared over", limit + 1, false, 413},
		{"streamed over", 4 * limit, true, 413},
		{"streamed at limit", limit, true, 200},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var body io.Reader = bytes.NewReader(make([]byte, c.size))
			if c.chunked {
				body = io.MultiReader(body) // hides the length: chunked encoding
			}
			before := reached.Load()
			resp, got := proxytest.Do(t, h.client, h.request("POST", h.pathURL("goose", "/reply"), "pdk_team_a", body))
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.status, got)
			}
			switch {
			case c.status == 200 && string(got) != fmt.Sprint(c.size):
				t.Errorf("app read %s bytes, want %d", got, c.size)
			case c.status == 413 && proxytest.ErrorCode(t, got) != "too_large":
				t.Errorf("code %q, want too_large", proxytest.ErrorCode(t, got))
			case c.status == 413 && !c.chunked && reached.Load() != before:
				t.Errorf("a declared oversize body reached the app")
			}
		})
	}
}

// TestAppActivityWhileStreaming: a long request keeps counting as activity.
func TestAppActivityWhileStreaming(t *testing.T) {
	h := newAppHarness(t, 0)
	h.proxy.every = 20 * time.Millisecond
	h.addApp("goose", "", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.(http.Flusher).Flush()
		select {
		case <-time.After(300 * time.Millisecond):
		case <-r.Context().Done():
		}
	}))
	resp, _ := proxytest.Do(t, h.client, h.request("GET", h.pathURL("goose", "/events"), "pdk_team_a", nil))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	// One at the start, one at the end, and ticks between: more than two
	// however slow the machine is, since the stream lasts many intervals.
	if n := h.touches("act-goose"); n <= 2 {
		t.Errorf("touched %d times during a 300ms stream with a 20ms interval", n)
	}
}

func TestParseApp(t *testing.T) {
	paths := []struct {
		in, id, rest string
		ok           bool
	}{
		{"/api/v1/projects/p1/app", "p1", "/", true},
		{"/api/v1/projects/p1/app/", "p1", "/", true},
		{"/api/v1/projects/p1/app/reply/x", "p1", "/reply/x", true},
		{"/api/v1/projects/p1/apps", "", "", false},
		{"/api/v1/projects/p1", "", "", false},
		{"/api/v1/projects//app/", "", "", false},
		{"/api/v1/projects/a.b/app/", "", "", false},
	}
	for _, c := range paths {
		id, rest, ok := ParsePath(c.in)
		if id != c.id || rest != c.rest || ok != c.ok {
			t.Errorf("ParsePath(%q) = %q %q %v, want %q %q %v", c.in, id, rest, ok, c.id, c.rest, c.ok)
		}
	}
	hosts := []struct {
		in, id string
		ok     bool
	}{
		{"app-p1.localhost:7420", "p1", true},
		{"APP-P1.LOCALHOST", "p1", true},
		{"app-p1.x.localhost", "", false},
		{"3000-p1.localhost", "", false},
		{"app-.localhost", "", false},
		{"app-p1.example.com", "", false},
	}
	for _, c := range hosts {
		id, ok := ParseHost(c.in, "localhost")
		if id != c.id || ok != c.ok {
			t.Errorf("ParseHost(%q) = %q %v, want %q %v", c.in, id, ok, c.id, c.ok)
		}
	}
	if u, err := RouteFor("p1", "http://localhost:7420"); err != nil || u != "http://app-p1.localhost:7420/" {
		t.Errorf("RouteFor = %q, %v", u, err)
	}
}
