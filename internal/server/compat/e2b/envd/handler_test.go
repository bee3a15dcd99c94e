package envd

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/httperr"
	"github.com/paddock-dev/paddock/internal/proxy"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// testDomain is the domain of the test servers' host forms.
const testDomain = "paddock.test"

// testEnv is a Handler over fake sandboxes (one running sandbox of team A,
// sbA, with a fake agent; a paused one, sbP) served by an httptest server
// that speaks HTTP/1.1 and h2c. ports records what was forwarded to the
// port proxy.
type testEnv struct {
	h      *Handler
	srv    *httptest.Server
	sbs    *fake.Sandboxes
	agent  *fake.Agent
	tokens *Tokens
	signer *proxy.Signer
	ports  *portRecorder
	clock  *fake.Clock
}

const (
	sbA = "sb-aaa"
	sbB = "sb-bbb" // team B's
	sbP = "sb-ppp" // paused, team A's
)

func newTestEnv(t *testing.T, script fake.Script) *testEnv {
	t.Helper()
	ag := fake.StartAgent(t, fake.AgentConfig{Script: script})
	sbs := fake.NewSandboxes(fake.SandboxesConfig{Agent: ag.Client()})
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	sbs.Add(sandbox.Sandbox{ID: sbA, TeamID: "team-a", State: sandbox.Running, CreatedAt: now})
	sbs.Add(sandbox.Sandbox{ID: sbB, TeamID: "team-b", State: sandbox.Running, CreatedAt: now})
	sbs.Add(sandbox.Sandbox{ID: sbP, TeamID: "team-a", State: sandbox.Paused, CreatedAt: now})
	secret := bytes.Repeat([]byte{7}, 32)
	tokens, err := NewTokens(secret)
	if err != nil {
		t.Fatal(err)
	}
	clock := fake.NewClock(now)
	signer := &proxy.Signer{Key: secret, Now: clock.Now}
	ports := &portRecorder{}
	h, err := New(Config{Sandboxes: sbs, Tokens: tokens, Domain: testDomain, Ports: ports, Signer: signer, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	return &testEnv{h: h, srv: srv, sbs: sbs, agent: ag, tokens: tokens, signer: signer, ports: ports, clock: clock}
}

// portRecorder stands for the port proxy's path form.
type portRecorder struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (p *portRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.reqs = append(p.reqs, r)
	p.mu.Unlock()
	w.WriteHeader(http.StatusTeapot)
}

// forwarded is what reached the port proxy so far.
func (p *portRecorder) forwarded() []*http.Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.reqs)
}

// request is one request to the env's server in the single host form
// (headers) unless host is set.
type request struct {
	method, path, host string
	sandbox, port      string // E2b-Sandbox-Id / -Port; "" leaves it out
	token              string // X-Access-Token; "" leaves it out
	user               string // Basic user; "" leaves it out
	header             http.Header
	body               string
}

func (e *testEnv) do(t *testing.T, q request) (*http.Response, string) {
	t.Helper()
	if q.method == "" {
		q.method = http.MethodGet
	}
	req, err := http.NewRequest(q.method, e.srv.URL+q.path, strings.NewReader(q.body))
	if err != nil {
		t.Fatal(err)
	}
	if q.host != "" {
		req.Host = q.host
	}
	for k, vs := range q.header {
		req.Header[k] = vs
	}
	if q.sandbox != "" {
		req.Header.Set(HeaderSandboxID, q.sandbox)
	}
	if q.port != "" {
		req.Header.Set(HeaderSandboxPort, q.port)
	}
	if q.token != "" {
		req.Header.Set(HeaderAccessToken, q.token)
	}
	if q.user != "" {
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(q.user+":")))
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestRoutingAndAuth(t *testing.T) {
	e := newTestEnv(t, nil)
	tokA, tokB := e.tokens.Access(sbA), e.tokens.Access(sbB)
	tests := []struct {
		name   string
		req    request
		status int
	}{
		{"health by headers", request{path: "/health", sandbox: sbA, port: "49983", token: tokA}, 204},
		{"health by host", request{path: "/health", host: "49983-" + sbA + "." + testDomain, token: tokA}, 204},
		{"port header left out means envd", request{path: "/health", sandbox: sbA, token: tokA}, 204},
		{"no token", request{path: "/health", sandbox: sbA, port: "49983"}, 401},
		{"wrong token", request{path: "/health", sandbox: sbA, port: "49983", token: "nope"}, 401},
		{"another sandbox's token", request{path: "/health", sandbox: sbA, port: "49983", token: tokB}, 401},
		{"another sandbox's token, host form", request{path: "/health", host: "49983-" + sbA + "." + testDomain, token: tokB}, 401},
		{"unknown sandbox, no token", request{path: "/health", sandbox: "sb-zzz", token: tokA}, 401},
		{"unknown sandbox, its own token", request{path: "/health", sandbox: "sb-zzz", token: e.tokens.Access("sb-zzz")}, 404},
		{"paused sandbox", request{path: "/health", sandbox: sbP, token: e.tokens.Access(sbP)}, 503},
		{"host and header disagree", request{path: "/health", host: "49983-" + sbA + "." + testDomain, sandbox: sbB, token: tokA}, 400},
		{"bad port header", request{path: "/health", sandbox: sbA, port: "049983", token: tokA}, 400},
		{"invalid id", request{path: "/health", sandbox: "../x", token: tokA}, 404},
		{"no sandbox named", request{path: "/health", host: "sandbox." + testDomain, token: tokA}, 404},
		{"root user", request{path: "/health", sandbox: sbA, token: tokA, user: "root"}, 204},
		{"default user", request{path: "/health", sandbox: sbA, token: tokA, user: "user"}, 204},
		{"unknown user", request{path: "/health", sandbox: sbA, token: tokA, user: "mallory"}, 400},
		{"unknown route", request{path: "/nope", sandbox: sbA, token: tokA}, 404},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := e.do(t, tc.req)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if tc.status >= 400 {
				var eb errorBody
				if err := json.Unmarshal([]byte(body), &eb); err != nil || eb.Code != tc.status || eb.Message == "" {
					t.Fatalf("error body %q is not envd's shape with code %d", body, tc.status)
				}
			}
		})
	}
}

func TestClaims(t *testing.T) {
	e := newTestEnv(t, nil)
	tests := []struct {
		name   string
		host   string
		header http.Header
		want   bool
	}{
		{"envd host", "49983-" + sbA + "." + testDomain, nil, true},
		{"envd host with port", "49983-" + sbA + "." + testDomain + ":8443", nil, true},
		{"single host", "sandbox." + testDomain, nil, true},
		{"single host, upper case", "SANDBOX." + strings.ToUpper(testDomain), nil, true},
		{"any host with the sandbox header", "127.0.0.1:7420", http.Header{HeaderSandboxID: {sbA}}, true},
		{"port host with traffic token", "3000-" + sbA + "." + testDomain, http.Header{HeaderTrafficToken: {"x"}}, true},
		{"port host with access token", "3000-" + sbA + "." + testDomain, http.Header{HeaderAccessToken: {"x"}}, true},
		{"plain port host", "3000-" + sbA + "." + testDomain, nil, false},
		{"api host", "api." + testDomain, nil, false},
		{"paddock itself", "127.0.0.1:7420", nil, false},
		{"other domain", "49983-" + sbA + ".example.com", nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Host = tc.host
			for k, v := range tc.header {
				r.Header[k] = v
			}
			if got := e.h.Claims(r); got != tc.want {
				t.Fatalf("Claims(%s) = %v, want %v", tc.host, got, tc.want)
			}
		})
	}
}

func TestTokens(t *testing.T) {
	if _, err := NewTokens(make([]byte, 31)); err == nil {
		t.Fatal("a 31-byte secret was accepted")
	}
	a, _ := NewTokens(bytes.Repeat([]byte{1}, 32))
	b, _ := NewTokens(bytes.Repeat([]byte{2}, 32))
	a2, _ := NewTokens(bytes.Repeat([]byte{1}, 32))
	switch {
	case a.Access(sbA) != a2.Access(sbA):
		t.Fatal("the same secret gave two tokens: replicas would disagree")
	case a.Access(sbA) == b.Access(sbA):
		t.Fatal("two secrets gave one token")
	case a.Access(sbA) == a.Access(sbB):
		t.Fatal("two sandboxes share a token")
	case a.Access(sbA) == a.Traffic(sbA):
		t.Fatal("the access and traffic tokens are the same")
	}
}

func TestSignedFileURL(t *testing.T) {
	e := newTestEnv(t, nil)
	tok := e.tokens.Access(sbA)
	sign := func(path, op, user, exp string) string {
		raw := path + ":" + op + ":" + user + ":" + tok
		if exp != "" {
			raw += ":" + exp
		}
		return url.QueryEscape("v1_" + strings.TrimRight(base64.StdEncoding.EncodeToString(sha256Sum(raw)), "="))
	}
	now := e.clock.Now().Unix()
	future, past := itoa(now+60), itoa(now-1)
	tests := []struct {
		name, method, path, query string
		ok                        bool
	}{
		{"read", "GET", "/files", "path=/a&signature=" + sign("/a", "read", "", ""), true},
		{"read as root", "GET", "/files", "path=/a&username=root&signature=" + sign("/a", "read", "root", ""), true},
		{"read, not expired", "GET", "/files", "path=/a&signature=" + sign("/a", "read", "", future) + "&signature_expiration=" + future, true},
		{"write", "POST", "/files", "path=/a&signature=" + sign("/a", "write", "", ""), true},
		{"expired", "GET", "/files", "path=/a&signature=" + sign("/a", "read", "", past) + "&signature_expiration=" + past, false},
		{"another path", "GET", "/files", "path=/b&signature=" + sign("/a", "read", "", ""), false},
		{"read signature used to write", "POST", "/files", "path=/a&signature=" + sign("/a", "read", "", ""), false},
		{"another user", "GET", "/files", "path=/a&username=root&signature=" + sign("/a", "read", "", ""), false},
		{"expiry moved", "GET", "/files", "path=/a&signature=" + sign("/a", "read", "", future) + "&signature_expiration=" + itoa(now+3600), false},
		{"signature on another route", "GET", "/health", "path=/a&signature=" + sign("/a", "read", "", ""), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.path+"?"+tc.query, nil)
			tg, err := e.h.authorize(r, sbA)
			if (err == nil) != tc.ok {
				t.Fatalf("authorize: %v, want ok %v", err, tc.ok)
			}
			if err == nil && (tg.SandboxID != sbA || tg.AccessToken != tok || tg.Agent == nil) {
				t.Fatalf("target %+v", tg)
			}
			if status, _ := httperr.Status(err); err != nil && status != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401", status)
			}
		})
	}
}

func sha256Sum(s string) []byte {
	sum := sha256.Sum256([]byte(s))
	return sum[:]
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
