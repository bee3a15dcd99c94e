package proxy

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/paddock-dev/paddock/internal/proxy/proxytest"
)

func TestAccess(t *testing.T) {
	h := newHarness(t)
	priv := h.addBackend("priv", false, proxytest.EchoHandler)
	pub := h.addBackend("pub", true, proxytest.EchoHandler)
	owned := h.addBackend("owned", false, proxytest.EchoHandler)
	stopped := h.addBackend("stopped", false, proxytest.EchoHandler)
	h.resolver.set("stopped", Target{Addr: netip.MustParseAddr("127.0.0.1"), Running: false, Ports: map[int]PortConfig{stopped.port: {}}})
	expired := h.signer.Sign("priv", priv.port, time.Second)
	h.clock.Advance(2 * time.Second)
	good := h.token("priv", priv.port)
	tampered := good[:len(good)-2] + "xx"

	tests := []struct {
		name       string
		req        *http.Request
		backend    *backend // the backend that must (or must not) see the request
		wantStatus int
		wantCode   string
	}{
		{"no credentials", proxytest.Get(t, h.url("priv", priv.port, "/")), priv, 401, "unauthenticated"},
		{"query token", proxytest.Get(t, h.url("priv", priv.port, "/?paddock_token="+good)), priv, 200, ""},
		{"header token", proxytest.Get(t, h.url("priv", priv.port, "/"), TokenHeader, good), priv, 200, ""},
		{"cookie token", proxytest.Get(t, h.url("priv", priv.port, "/"), "Cookie", TokenCookie+"="+good), priv, 200, ""},
		{"expired token", proxytest.Get(t, h.url("priv", priv.port, "/?paddock_token="+expired)), priv, 403, "token_expired"},
		{"tampered token", proxytest.Get(t, h.url("priv", priv.port, "/"), TokenHeader, tampered), priv, 403, "invalid_token"},
		{"token for another port", proxytest.Get(t, h.url("priv", priv.port, "/"), TokenHeader, h.token("priv", priv.port+1)), priv, 403, "invalid_token"},
		{"token for another sandbox", proxytest.Get(t, h.url("priv", priv.port, "/"), TokenHeader, h.token("pub", priv.port)), priv, 403, "invalid_token"},
		{"bad query token beats good cookie", proxytest.Get(t, h.url("priv", priv.port, "/?paddock_token=x"), "Cookie", TokenCookie+"="+good), priv, 403, "invalid_token"},
		{"owner bearer", proxytest.Get(t, h.url("owned", owned.port, "/"), "Authorization", "Bearer "+testOwnerToken), owned, 200, ""},
		{"bearer of another sandbox", proxytest.Get(t, h.url("priv", priv.port, "/"), "Authorization", "Bearer "+testOwnerToken), priv, 403, "not_owner"},
		{"unknown bearer", proxytest.Get(t, h.url("owned", owned.port, "/"), "Authorization", "Bearer nope"), owned, 401, "invalid_token"},
		{"basic auth is not ours", proxytest.Get(t, h.url("owned", owned.port, "/"), "Authorization", "Basic dTpw"), owned, 401, "unauthenticated"},
		{"public port", proxytest.Get(t, h.url("pub", pub.port, "/")), pub, 200, ""},
		{"public port ignores bad token", proxytest.Get(t, h.url("pub", pub.port, "/?paddock_token=junk")), pub, 200, ""},
		{"path form token", proxytest.Get(t, h.pathURL("priv", priv.port, "/x?paddock_token="+good)), priv, 200, ""},
		{"path form no credentials", proxytest.Get(t, h.pathURL("priv", priv.port, "/x")), priv, 401, "unauthenticated"},
		{"path form public", proxytest.Get(t, h.pathURL("pub", pub.port, "/")), pub, 200, ""},
		{"stopped sandbox", proxytest.Get(t, h.url("stopped", stopped.port, "/"), TokenHeader, h.token("stopped", stopped.port)), stopped, 503, "sandbox_not_running"},
		{"undeclared port", proxytest.Get(t, h.url("priv", 1, "/"), TokenHeader, h.token("priv", 1)), priv, 404, "port_not_found"},
		{"undeclared port anonymous", proxytest.Get(t, h.url("priv", 1, "/")), priv, 401, "unauthenticated"},
		{"unknown sandbox", proxytest.Get(t, h.url("ghost", 80, "/"), TokenHeader, h.token("ghost", 80)), priv, 404, "sandbox_not_found"},
		{"unknown sandbox anonymous", proxytest.Get(t, h.url("ghost", 80, "/")), priv, 401, "unauthenticated"},
		{"junk host under domain", proxytest.Get(t, "http://junk.localhost:"+h.proxyPort+"/"), priv, 404, "unknown_host"},
		{"junk path", proxytest.Get(t, "http://"+h.proxyAddr+"/s/BAD/1/"), priv, 404, "not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, beforeActivity := tt.backend.requests.Load(), h.activity.count(tt.backend.id)
			resp, body := proxytest.Do(t, h.client, tt.req)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tt.wantStatus, body)
			}
			forwarded := tt.backend.requests.Load() - before
			activity := h.activity.count(tt.backend.id) - beforeActivity
			if tt.wantCode != "" {
				if got := proxytest.ErrorCode(t, body); got != tt.wantCode {
					t.Errorf("code %q, want %q", got, tt.wantCode)
				}
				if forwarded != 0 || activity != 0 {
					t.Errorf("refused request reached the backend %d times, activity %d; want 0", forwarded, activity)
				}
				if resp.StatusCode == 401 && resp.Header.Get("WWW-Authenticate") == "" {
					t.Error("401 without WWW-Authenticate")
				}
				return
			}
			if forwarded != 1 || activity != 1 {
				t.Errorf("backend saw %d requests, activity %d; want 1 each", forwarded, activity)
			}
		})
	}
}

func TestAPIHostNotProxied(t *testing.T) {
	h := newHarness(t)
	for _, host := range []string{"localhost:" + h.proxyPort, h.proxyAddr, "other.example.com"} {
		if h.proxy.HandlesHost(host) {
			t.Errorf("HandlesHost(%q) = true, want false", host)
		}
	}
	resp, _ := proxytest.Do(t, h.client, proxytest.Get(t, "http://localhost:"+h.proxyPort+"/api/v1/x"))
	if resp.StatusCode != http.StatusTeapot {
		t.Errorf("API host answered %d, want the API's 418", resp.StatusCode)
	}
}

func TestCredentialsStripped(t *testing.T) {
	h := newHarness(t)
	priv := h.addBackend("priv", false, proxytest.EchoHandler)
	owned := h.addBackend("owned", false, proxytest.EchoHandler)
	pub := h.addBackend("pub", true, proxytest.EchoHandler)
	tok := h.token("priv", priv.port)
	tests := []struct {
		name       string
		req        *http.Request
		wantPath   string
		wantQuery  string
		wantHeader map[string]string // "" means absent
	}{
		{
			name: "query, header and cookie token",
			req: proxytest.Get(t, h.url("priv", priv.port, "/a/b?x=1&paddock_token="+tok+"&y=%2F"),
				TokenHeader, tok, "Cookie", "a=1; "+TokenCookie+"="+tok+"; b=2", "Authorization", "Basic dTpw"),
			wantPath:  "/a/b",
			wantQuery: "x=1&y=%2F",
			wantHeader: map[string]string{
				TokenHeader: "", "Cookie": "a=1; b=2",
				// Whatever scheme it carries, Authorization never reaches
				// sandbox code: a redirect may have brought it from elsewhere.
				"Authorization":    "",
				"X-Forwarded-Host": fmt.Sprintf("%d-priv.localhost:%s", priv.port, h.proxyPort),
			},
		},
		{
			name:      "owner bearer",
			req:       proxytest.Get(t, h.url("owned", owned.port, "/?q"), "Authorization", "Bearer "+testOwnerToken, "Cookie", TokenCookie+"=stale"),
			wantPath:  "/",
			wantQuery: "q",
			wantHeader: map[string]string{
				"Authorization": "", "Cookie": "",
				"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http",
			},
		},
		{
			// The live hole: a client following a sandbox's redirect to a
			// public port on the API's origin still sends paddock's bearer.
			name: "public port drops the bearer and proxy credentials",
			req: proxytest.Get(t, h.url("pub", pub.port, "/"), "Authorization", "Bearer pdk_admin",
				"Proxy-Authorization", "Basic dTpw", "Cookie", TokenCookie+"=x; app=1"),
			wantPath: "/",
			wantHeader: map[string]string{
				"Authorization": "", "Proxy-Authorization": "", "Cookie": "app=1",
			},
		},
		{
			name: "signed token beside a bearer drops the bearer",
			req: proxytest.Get(t, h.url("priv", priv.port, "/?paddock_token="+tok),
				"Authorization", "Bearer pdk_admin"),
			wantPath:   "/",
			wantHeader: map[string]string{"Authorization": ""},
		},
		{
			name:       "public port still drops paddock tokens",
			req:        proxytest.Get(t, h.url("pub", pub.port, "/?paddock_token=zzz&k=v"), TokenHeader, "zzz"),
			wantPath:   "/",
			wantQuery:  "k=v",
			wantHeader: map[string]string{TokenHeader: ""},
		},
		{
			// Only the path form says where the app is mounted: a client
			// could otherwise steer the app's absolute links.
			name:       "host form drops a client-sent prefix",
			req:        proxytest.Get(t, h.url("pub", pub.port, "/"), "X-Forwarded-Prefix", "//evil.example"),
			wantPath:   "/",
			wantHeader: map[string]string{"X-Forwarded-Prefix": ""},
		},
		{
			name:      "path form strips the prefix",
			req:       proxytest.Get(t, h.pathURL("priv", priv.port, "/deep/er/?paddock_token="+tok+"&z=1")),
			wantPath:  "/deep/er/",
			wantQuery: "z=1",
			wantHeader: map[string]string{
				"X-Forwarded-Prefix": PathPrefix("priv", priv.port),
				"X-Forwarded-Host":   h.proxyAddr,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := proxytest.Do(t, h.client, tt.req)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			var got proxytest.Echoed
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatal(err)
			}
			if got.Path != tt.wantPath || got.RawQuery != tt.wantQuery {
				t.Errorf("backend saw %q ? %q, want %q ? %q", got.Path, got.RawQuery, tt.wantPath, tt.wantQuery)
			}
			if strings.Contains(string(body), tok) || strings.Contains(string(body), "pdk_") {
				t.Errorf("a credential reached the backend: %s", body)
			}
			for k, want := range tt.wantHeader {
				if v := strings.Join(got.Header.Values(k), ", "); v != want {
					t.Errorf("backend header %s = %q, want %q", k, v, want)
				}
			}
		})
	}
}

func TestQueryTokenSetsCookie(t *testing.T) {
	h := newHarness(t)
	priv := h.addBackend("priv", false, proxytest.EchoHandler)
	tests := []struct {
		name, url, wantPath string
		next                func(string) string
	}{
		{"host form", h.url("priv", priv.port, "/?paddock_token="+h.signer.Sign("priv", priv.port, 24*time.Hour)), "/",
			func(p string) string { return h.url("priv", priv.port, p) }},
		{"path form", h.pathURL("priv", priv.port, "/?paddock_token="+h.signer.Sign("priv", priv.port, 24*time.Hour)), PathPrefix("priv", priv.port) + "/",
			func(p string) string { return h.pathURL("priv", priv.port, p) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := proxytest.Do(t, h.client, proxytest.Get(t, tt.url))
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			var c *http.Cookie
			for _, rc := range resp.Cookies() {
				if rc.Name == TokenCookie {
					c = rc
				}
			}
			if c == nil {
				t.Fatalf("no %s cookie in %q", TokenCookie, resp.Header.Values("Set-Cookie"))
			}
			if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != tt.wantPath || c.Domain != "" {
				t.Errorf("cookie %+v: want HttpOnly, SameSite=Lax, Path=%s, host-only", c, tt.wantPath)
			}
			if c.MaxAge <= 0 || c.MaxAge > int(DefaultCookieTTL.Seconds()) {
				t.Errorf("cookie Max-Age %d, want within the cookie TTL, not the day-long token", c.MaxAge)
			}
			// The browser's next request (an asset, an EventSource) carries
			// only the cookie.
			resp, body = proxytest.Do(t, h.client, proxytest.Get(t, tt.next("/app.js"), "Cookie", c.String()))
			if resp.StatusCode != 200 {
				t.Fatalf("with cookie: status %d: %s", resp.StatusCode, body)
			}
			if len(resp.Cookies()) != 0 {
				t.Errorf("cookie-authenticated request set cookies again: %v", resp.Cookies())
			}
			// Once it expires it opens nothing.
			h.clock.Advance(DefaultCookieTTL + time.Second)
			defer h.clock.Advance(-DefaultCookieTTL - time.Second)
			resp, body = proxytest.Do(t, h.client, proxytest.Get(t, tt.next("/app.js"), "Cookie", c.String()))
			if resp.StatusCode != 403 || proxytest.ErrorCode(t, body) != "token_expired" {
				t.Errorf("expired cookie: status %d %s, want 403 token_expired", resp.StatusCode, body)
			}
		})
	}
}

func TestPathFormRedirectsToSlash(t *testing.T) {
	h := newHarness(t)
	priv := h.addBackend("priv", false, proxytest.EchoHandler)
	resp, _ := proxytest.Do(t, h.client, proxytest.Get(t, h.pathURL("priv", priv.port, "?paddock_token=abc")))
	want := PathPrefix("priv", priv.port) + "/?paddock_token=abc"
	if resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") != want {
		t.Errorf("got %d Location %q, want 307 to %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}
	if priv.requests.Load() != 0 {
		t.Error("redirect reached the backend")
	}
}

func TestPortNotListening(t *testing.T) {
	h := newHarness(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	h.resolver.set("quiet", Target{Addr: netip.MustParseAddr("127.0.0.1"), Running: true, Ports: map[int]PortConfig{port: {Public: true}}})
	for _, c := range []struct {
		name   string
		client *http.Client
	}{{"http1", h.client}, {"h2c", h.h2c}} {
		t.Run(c.name, func(t *testing.T) {
			resp, body := proxytest.Do(t, c.client, proxytest.Get(t, h.url("quiet", port, "/")))
			if resp.StatusCode != http.StatusBadGateway || proxytest.ErrorCode(t, body) != "port_not_listening" {
				t.Errorf("got %d %s, want 502 port_not_listening", resp.StatusCode, body)
			}
		})
	}
}

func TestH2C(t *testing.T) {
	h := newHarness(t)
	priv := h.addBackend("priv", false, proxytest.EchoHandler)
	resp, body := proxytest.Do(t, h.h2c, proxytest.Get(t, h.url("priv", priv.port, "/h2?paddock_token="+h.token("priv", priv.port))))
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("got %s %d: %s; want HTTP/2 200", resp.Proto, resp.StatusCode, body)
	}
	var got proxytest.Echoed
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	if got.Path != "/h2" || got.RawQuery != "" || got.Header.Get("X-Forwarded-Host") == "" {
		t.Errorf("backend saw %+v", got)
	}
}

func TestWebSocketEcho(t *testing.T) {
	h := newHarness(t)
	priv := h.addBackend("priv", false, proxytest.WSEchoHandler)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := strings.Replace(h.url("priv", priv.port, "/ws?paddock_token="+h.token("priv", priv.port)), "http://", "ws://", 1)
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: h.client})
	if err != nil {
		t.Fatalf("dial through proxy: %v", err)
	}
	defer c.CloseNow()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", resp.StatusCode)
	}
	for i := range 20 {
		msg := []byte(fmt.Sprintf("hello %d %s", i, strings.Repeat("x", i*1000)))
		if err := c.Write(ctx, websocket.MessageText, msg); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(msg) {
			t.Fatalf("echo %d: got %d bytes, want %d", i, len(got), len(msg))
		}
	}
	_ = c.Close(websocket.StatusNormalClosure, "")
	if n := h.activity.count("priv"); n != 1 {
		t.Errorf("activity %d, want 1 for the upgrade", n)
	}
}

// TestSSEFirstEventStreams: the first event reaches the client while the
// app still holds the stream open; nothing is buffered to the end.
func TestSSEFirstEventStreams(t *testing.T) {
	h := newHarness(t)
	release := make(chan struct{})
	priv := h.addBackend("priv", true, proxytest.HeldSSEHandler(release, func(*http.Request) string { return "data: first\n\n" }))
	for _, c := range []struct {
		name   string
		client *http.Client
	}{{"http1", h.client}, {"h2c", h.h2c}} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			resp, err := c.client.Do(proxytest.Get(t, h.url("priv", priv.port, "/events")).WithContext(ctx))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			line, err := bufio.NewReader(resp.Body).ReadString('\n')
			if err != nil || line != "data: first\n" {
				t.Fatalf("first line %q, %v; want it before the stream ends", line, err)
			}
			release <- struct{}{} // unblocks this request's handler only
		})
	}
}

// TestSSEKeepAliveOutlivesIdleTimeout: a stream that sends only comments
// lives past the proxy server's short idle and read timeouts.
func TestSSEKeepAliveOutlivesIdleTimeout(t *testing.T) {
	h := newHarness(t, func(s *http.Server) {
		s.IdleTimeout = 200 * time.Millisecond
		s.ReadTimeout = 200 * time.Millisecond
		s.WriteTimeout = 200 * time.Millisecond // an API server's; the proxy lifts it for streams
	})
	priv := h.addBackend("priv", false, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for range 10 {
			fmt.Fprint(w, ": keep-alive\n\n")
			w.(http.Flusher).Flush()
			select {
			case <-tick.C:
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprint(w, "data: done\n\n")
	}))
	for _, c := range []struct {
		name   string
		client *http.Client
	}{{"http1", h.client}, {"h2c", h.h2c}} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			resp, err := c.client.Do(proxytest.Get(t, h.url("priv", priv.port, "/events"), TokenHeader, h.token("priv", priv.port)).WithContext(ctx))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("stream cut after %v: %v", time.Since(start), err)
			}
			if !strings.HasSuffix(string(body), "data: done\n\n") || strings.Count(string(body), ": keep-alive") != 10 {
				t.Fatalf("stream ended early after %v: %q", time.Since(start), body)
			}
			if d := time.Since(start); d < 900*time.Millisecond {
				t.Errorf("stream took %v, want about 1s", d)
			}
		})
	}
}

// patternReader yields n deterministic pseudo-random bytes without a
// length the HTTP stack can see, so bodies go out chunked (HTTP/1.1) or as
// unsized DATA frames (HTTP/2).
func patternReader(seed uint64, n int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8([32]byte{byte(seed)}), n)
}

func sha(r io.Reader) (string, int64, error) {
	hash := sha256.New()
	n, err := io.Copy(hash, r)
	return hex.EncodeToString(hash.Sum(nil)), n, err
}

func TestLargeBodiesStream(t *testing.T) {
	const size = 10 << 20
	h := newHarness(t, func(s *http.Server) { s.ReadTimeout = 200 * time.Millisecond })
	priv := h.addBackend("priv", false, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sum, n, err := sha(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Header().Set("X-Got", fmt.Sprintf("%s %d", sum, n))
		_, _ = io.Copy(w, patternReader(2, size))
	}))
	wantUp, _, _ := sha(patternReader(1, size))
	wantDown, _, _ := sha(patternReader(2, size))
	for _, c := range []struct {
		name   string
		client *http.Client
	}{{"http1", h.client}, {"h2c", h.h2c}} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h.url("priv", priv.port, "/upload"), patternReader(1, size))
			req.Header.Set(TokenHeader, h.token("priv", priv.port))
			resp, err := c.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if got, want := resp.Header.Get("X-Got"), fmt.Sprintf("%s %d", wantUp, size); got != want {
				t.Errorf("backend received %q, want %q", got, want)
			}
			sum, n, err := sha(resp.Body)
			if err != nil || sum != wantDown || n != size {
				t.Errorf("client received %d bytes (%v), hash match %v", n, err, sum == wantDown)
			}
		})
	}
}

// closingBody is an inbound body as the HTTP/1 server treats it: readable to
// EOF, then closed under the reader when the response's headers go out.
type closingBody struct {
	r      io.Reader
	closed bool
}

func (b *closingBody) Read(p []byte) (int, error) {
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	return b.r.Read(p)
}

func (b *closingBody) Close() error { b.closed = true; return nil }

// TestForwardBodyAfterServerClose: once the inbound body reached EOF, the
// transport's excess check still reads EOF after the server has closed the
// body, instead of an error that would cut the upstream connection and the
// response streaming on it (golang/go#40747).
func TestForwardBodyAfterServerClose(t *testing.T) {
	in := &closingBody{r: strings.NewReader(`{"message":"hello"}`)}
	fb := NewForwardBody(in)
	data, err := io.ReadAll(fb)
	if err != nil || string(data) != `{"message":"hello"}` {
		t.Fatalf("read %q, %v", data, err)
	}
	in.Close() // the server drains and closes the body as it writes the response
	if n, err := fb.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("read after the server's close: %d, %v; want 0, EOF", n, err)
	}
	// Before EOF, a close is the client's or the server's failure and the
	// transport must see it.
	early := &closingBody{r: strings.NewReader("abc")}
	fb = NewForwardBody(early)
	early.Close()
	if _, err := fb.Read(make([]byte, 8)); err != http.ErrBodyReadAfterClose {
		t.Fatalf("read of a body closed before EOF: %v, want ErrBodyReadAfterClose", err)
	}
	if NewForwardBody(http.NoBody) != http.NoBody || NewForwardBody(nil) != nil {
		t.Fatal("no body must stay no body, for the transport")
	}
}
