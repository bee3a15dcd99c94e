package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/proxy"
	"github.com/paddock-dev/paddock/internal/proxy/app"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/volume"
	"github.com/paddock-dev/paddock/sdk"
)

var crossPool = netip.MustParsePrefix("10.213.246.0/24")

// echoScript serves, on the port it is given, a JSON echo of every request:
// its path with query and its headers, so a test sees what reached the
// sandbox's code.
const echoScript = `
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def reply(self):
        b = json.dumps({"path": self.path, "headers": {k: self.headers.get_all(k) for k in self.headers.keys()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    do_GET = do_POST = do_PUT = do_DELETE = reply
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
`

// TestCrossTenant holds the rule "another team's object is not found" over
// the whole API, route by route from api/openapi.yaml, so a route added
// later is covered without editing this test; and the rule "a credential
// never enters a sandbox" over every way into a sandbox's code (the port
// proxy's host and path forms, public and private, and the app proxy's).
func TestCrossTenant(t *testing.T) {
	requireSandboxes(t)
	s := startStack(t, newDataDir(t), stackOptions{network: crossPool})
	ctx := ctxFor(t, 5*time.Minute)
	a, b := s.newTenant(t, "alpha", store.RoleAdmin), s.newTenant(t, "beta", store.RoleAdmin)

	// Team A's objects, one of every kind.
	sbA, err := a.client.Create(ctx, api.CreateSandboxRequest{Ports: []api.PortSpec{{Port: 3000}, {Port: 3001, Public: true}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sbA.WriteFiles(ctx, "/home/user", []sdk.File{{Path: "echo.py", Content: []byte(echoScript), Mode: 0o644}}); err != nil {
		t.Fatal(err)
	}
	for _, port := range []string{"3000", "3001"} {
		if _, err := sbA.RunCommand(ctx, api.CommandRequest{Cmd: "python3", Args: []string{"/home/user/echo.py", port}, Detached: true}); err != nil {
			t.Fatal(err)
		}
	}
	cmd, err := sbA.RunCommand(ctx, api.CommandRequest{Cmd: "sleep", Args: []string{"300"}, Detached: true})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := sbA.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	img := importWho(t, a.client, "alpha/private:1", "a", "")
	proj, err := a.client.CreateProject(ctx, api.ProjectRequest{Name: "echo", Source: api.ProjectSource{Image: "host"},
		Start: "python3 -c " + shellQuote(echoScript) + " 3002", AppPort: 3002, HealthPath: "/",
		MaxLifetimeMs: (10 * time.Minute).Milliseconds(), IdleTimeoutMs: (10 * time.Minute).Milliseconds()})
	if err != nil {
		t.Fatal(err)
	}
	act, err := a.client.ActivateAndWait(ctx, proj.ID, nil)
	if err != nil || act.State != api.ActivationReady {
		t.Fatalf("activate: %+v, %v", act, err)
	}
	tokA, err := a.client.CreateToken(ctx, api.CreateTokenRequest{Name: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	userA, err := a.client.CreateUser(ctx, a.teamID, api.CreateUserRequest{Name: "ada"})
	if err != nil {
		t.Fatal(err)
	}
	// Never delivered: loopback without the operator's allow.
	hookA, err := a.client.AddWebhook(ctx, api.WebhookRequest{URL: "http://127.0.0.1:9/hook"})
	if err != nil {
		t.Fatal(err)
	}
	volName := ""
	if volume.Available() == "" {
		if _, err := a.client.CreateVolume(ctx, "alpha-cache", 0); err != nil {
			t.Fatal(err)
		}
		volName = "alpha-cache"
	}
	// What must never show in team B's answers.
	secrets := []string{sbA.ID, snap.ID, img.Digest, proj.ID, act.ID, tokA.ID, userA.ID, a.teamID, cmd.ID, hookA.ID}
	if volName != "" {
		secrets = append(secrets, volName)
	}

	t.Run("every route answers not found", func(t *testing.T) {
		for _, rt := range openAPIRoutes(t) {
			if !strings.Contains(rt.path, "{") {
				continue // lists and creates: below
			}
			if strings.HasPrefix(rt.path, "/volumes/") && volName == "" {
				continue
			}
			path := fillPath(rt.path, map[string]string{
				"sandboxes": sbA.ID, "snapshots": snap.ID, "projects": proj.ID, "activations": act.ID,
				"teams": a.teamID, "tokens": tokA.ID, "volumes": volName, "images": img.Digest,
				"cmd": cmd.ID, "port": "3000", "user": userA.ID, "path": "x", "webhooks": hookA.ID,
			})
			t.Run(rt.method+" "+rt.path, func(t *testing.T) {
				status, body := call(t, s.http.URL+api.Prefix+path, rt.method, b.token, "{}")
				if status != http.StatusNotFound {
					t.Errorf("team B: %s %s = %d %s, want 404", rt.method, path, status, body)
				}
			})
		}
	})

	t.Run("lists show nothing of team A", func(t *testing.T) {
		for _, path := range []string{"/sandboxes", "/snapshots", "/volumes", "/projects", "/tokens", "/teams",
			"/images", "/usage", "/sandboxes?limit=1", "/teams/" + b.teamID + "/users", "/webhooks"} {
			status, body := call(t, s.http.URL+api.Prefix+path, "GET", b.token, "")
			if status != http.StatusOK {
				t.Errorf("GET %s = %d %s", path, status, body)
			}
			for _, x := range secrets {
				if strings.Contains(body, x) {
					t.Errorf("GET %s shows team A's %s: %s", path, x, body)
				}
			}
		}
		// The Vercel layer: a session of team A is not found through team B.
		status, body := call(t, s.http.URL+"/compat/vercel/v1/sandboxes/"+sbA.ID+"?teamId="+b.teamID, "GET", b.token, "")
		if status != http.StatusNotFound {
			t.Errorf("vercel: team B reads team A's sandbox: %d %s", status, body)
		}
	})

	t.Run("team B's credentials open nothing of team A's through the proxies", func(t *testing.T) {
		host := func(port int) string { return fmt.Sprintf("%d-%s.localhost", port, sbA.ID) }
		for _, tc := range []struct{ name, url, host string }{
			{"private port, host form", s.http.URL + "/", host(3000)},
			{"private port, path form", s.http.URL + proxy.PathPrefix(sbA.ID, 3000) + "/", ""},
			{"app, path form", s.http.URL + app.PathPrefix(proj.ID) + "/", ""},
			{"app, host form", s.http.URL + "/", "app-" + proj.ID + ".localhost"},
		} {
			status, body := proxied(t, tc.url, tc.host, http.Header{"Authorization": {"Bearer " + b.token}})
			if status < 400 || strings.Contains(body, `"headers"`) {
				t.Errorf("%s: team B got %d %s", tc.name, status, body)
			}
		}
	})

	t.Run("no credential reaches sandbox code", func(t *testing.T) {
		portURL, err := sbA.SignedURL(ctx, 3000, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		portTok := mustURL(t, portURL.URL).Query().Get(proxy.TokenParam)
		appTok, err := a.client.AppURL(ctx, proj.ID, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		appToken := mustURL(t, appTok.URL).Query().Get(proxy.TokenParam)
		bearer := "Bearer " + a.token
		cookie := proxy.TokenCookie + "=" + portTok + "; theme=dark"
		host := func(port int) string { return fmt.Sprintf("%d-%s.localhost", port, sbA.ID) }
		tok := func(u, token string) string { return u + "?a=1&" + proxy.TokenParam + "=" + url.QueryEscape(token) }
		for _, tc := range []struct {
			name, url, host string
			header          http.Header
		}{
			{"private port, host form, owner's bearer", s.http.URL + "/x", host(3000), http.Header{"Authorization": {bearer}, "Proxy-Authorization": {"Basic eDp5"}}},
			{"private port, host form, signed query", tok(s.http.URL+"/x", portTok), host(3000), http.Header{"Authorization": {bearer}}},
			{"private port, host form, header token", s.http.URL + "/x", host(3000), http.Header{proxy.TokenHeader: {portTok}, "Cookie": {cookie}}},
			{"private port, path form, signed query", tok(s.http.URL+proxy.PathPrefix(sbA.ID, 3000)+"/x", portTok), "", http.Header{"Authorization": {bearer}}},
			{"public port, host form, bearer", s.http.URL + "/x", host(3001), http.Header{"Authorization": {bearer}, "Cookie": {cookie}, proxy.TokenHeader: {portTok}}},
			{"public port, path form, bearer", s.http.URL + proxy.PathPrefix(sbA.ID, 3001) + "/x", "", http.Header{"Authorization": {bearer}}},
			{"app, path form, bearer", s.http.URL + app.PathPrefix(proj.ID) + "/x", "", http.Header{"Authorization": {bearer}, "X-Secret-Key": {"mine"}}},
			{"app, host form, signed query", tok(s.http.URL+"/x", appToken), "app-" + proj.ID + ".localhost", http.Header{"Authorization": {bearer}}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				var status int
				var body string
				deadline := time.Now().Add(15 * time.Second)
				for {
					status, body = proxied(t, tc.url, tc.host, tc.header)
					if status == http.StatusOK || time.Now().After(deadline) {
						break
					}
					time.Sleep(200 * time.Millisecond) // the echo server may still be starting
				}
				if status != http.StatusOK {
					t.Fatalf("status %d: %s", status, body)
				}
				for _, secret := range []string{a.token, portTok, appToken, "eDp5", "mine", "pdk_"} {
					if strings.Contains(body, secret) {
						t.Errorf("a credential reached the sandbox: %s", body)
					}
				}
				var got struct{ Headers map[string][]string }
				if err := json.Unmarshal([]byte(body), &got); err != nil {
					t.Fatalf("echo %q: %v", body, err)
				}
				for k := range got.Headers {
					if k := http.CanonicalHeaderKey(k); k == "Authorization" || k == "Proxy-Authorization" || k == http.CanonicalHeaderKey(proxy.TokenHeader) {
						t.Errorf("header %s reached the sandbox", k)
					}
				}
			})
		}
	})
}

// route is one operation of api/openapi.yaml.
type route struct{ method, path string }

// openAPIRoutes reads every path and method of api/openapi.yaml, which a
// server test keeps equal to the route table.
func openAPIRoutes(t *testing.T) []route {
	t.Helper()
	f, err := os.Open("../api/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pathLine := regexp.MustCompile(`^  (/\S*):\s*$`)
	methodLine := regexp.MustCompile(`^    (get|put|post|delete|patch):\s*$`)
	var out []route
	current := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := pathLine.FindStringSubmatch(sc.Text()); m != nil {
			current = m[1]
			continue
		}
		if m := methodLine.FindStringSubmatch(sc.Text()); m != nil && current != "" {
			out = append(out, route{strings.ToUpper(m[1]), current})
		}
	}
	if err := sc.Err(); err != nil || len(out) < 40 {
		t.Fatalf("read %d routes from openapi.yaml: %v", len(out), err)
	}
	return out
}

// fillPath puts team A's objects into a route's parameters: {id} is the
// object of the collection before it, the others by their name.
func fillPath(path string, ids map[string]string) string {
	parts := strings.Split(path, "/")
	for i, p := range parts {
		if !strings.HasPrefix(p, "{") {
			continue
		}
		name := strings.Trim(p, "{}.")
		if name == "id" || name == "name" || name == "ref" {
			name = parts[i-1]
		}
		parts[i] = url.PathEscape(ids[name])
	}
	return strings.Join(parts, "/")
}

// call sends one API request with a bearer token and returns the status
// and body.
func call(t *testing.T, u, method, token, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" && method != "GET" && method != "DELETE" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return doRaw(t, req)
}

// proxied sends a GET through the proxy, with host as the Host header of
// the host forms ("" for the path forms).
func proxied(t *testing.T, u, host string, h http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	req.Header = h.Clone()
	return doRaw(t, req)
}

func doRaw(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	ctx := ctxFor(t, 30*time.Second)
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	io.Copy(&buf, io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, buf.String()
}

// shellQuote quotes s for sh -c.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
