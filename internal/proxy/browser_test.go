package proxy

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/proxy/proxytest"
)

// hostileHeaders answers with everything a sandbox page might set to reach
// past its own origin.
var hostileHeaders = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Add("Set-Cookie", "own=1; Path=/")
	h.Add("Set-Cookie", "parent=1; Domain=localhost; Path=/")
	h.Add("Set-Cookie", "dotted=1; Domain=.localhost")
	h.Add("Set-Cookie", TokenCookie+"=forged; Path=/")
	h.Add("Set-Cookie", "not a cookie")
	h.Set("Service-Worker-Allowed", "/")
	h.Set("Clear-Site-Data", `"cookies", "storage"`)
	h.Set("Content-Security-Policy", "default-src 'self'")
	h.Set("Content-Type", "text/html")
	_, _ = w.Write([]byte("<html>page</html>"))
})

// TestResponseFiltering: a sandbox's answer cannot set cookies for the
// parent domain or the API's origin, widen a service worker's scope, clear
// other origins' data, or run a path-form document in the API's origin.
func TestResponseFiltering(t *testing.T) {
	h := newHarness(t)
	b := h.addBackend("pub", true, hostileHeaders)
	tests := []struct {
		name        string
		url         string
		wantCookies []string
		wantCSP     []string
	}{
		{"host form keeps host-only cookies", h.url("pub", b.port, "/"), []string{"own=1; Path=/"}, []string{"default-src 'self'"}},
		{"path form shares the API's origin", h.pathURL("pub", b.port, "/"), nil, []string{"default-src 'self'", PathFormCSP}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := proxytest.Do(t, h.client, proxytest.Get(t, tt.url))
			if resp.StatusCode != 200 || string(body) != "<html>page</html>" {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			if got := resp.Header.Values("Set-Cookie"); !slices.Equal(got, tt.wantCookies) {
				t.Errorf("Set-Cookie %q, want %q", got, tt.wantCookies)
			}
			if got := resp.Header.Values("Content-Security-Policy"); !slices.Equal(got, tt.wantCSP) {
				t.Errorf("Content-Security-Policy %q, want %q", got, tt.wantCSP)
			}
			for _, k := range []string{"Service-Worker-Allowed", "Clear-Site-Data"} {
				if v := resp.Header.Get(k); v != "" {
					t.Errorf("%s: %q reached the browser", k, v)
				}
			}
		})
	}
}

// TestServiceWorkerRefusedOnPathForm: a worker registered under /s/ would
// control requests to the API's origin; browsers mark its script's fetch.
func TestServiceWorkerRefusedOnPathForm(t *testing.T) {
	h := newHarness(t)
	b := h.addBackend("pub", true, proxytest.EchoHandler)
	resp, body := proxytest.Do(t, h.client, proxytest.Get(t, h.pathURL("pub", b.port, "/sw.js"), "Service-Worker", "script"))
	if resp.StatusCode != http.StatusForbidden || proxytest.ErrorCode(t, body) != "service_worker_refused" {
		t.Fatalf("path form: status %d: %s", resp.StatusCode, body)
	}
	if n := b.requests.Load(); n != 0 {
		t.Errorf("the sandbox got %d requests", n)
	}
	// Its own host is its own origin: a worker there controls only it.
	if resp, body := proxytest.Do(t, h.client, proxytest.Get(t, h.url("pub", b.port, "/sw.js"), "Service-Worker", "script")); resp.StatusCode != 200 {
		t.Fatalf("host form: status %d: %s", resp.StatusCode, body)
	}
}

// TestCrossSiteCookieRequests: another tenant's page (a sibling host, so
// same-site) cannot make a browser send an unsafe request with a private
// port's cookie; programs and same-origin pages still can.
func TestCrossSiteCookieRequests(t *testing.T) {
	h := newHarness(t)
	priv := h.addBackend("priv", false, proxytest.EchoHandler)
	pub := h.addBackend("pub", true, proxytest.EchoHandler)
	cookie := TokenCookie + "=" + h.signer.Sign("priv", priv.port, time.Hour)
	self := "http://" + strconv.Itoa(priv.port) + "-priv.localhost:" + h.proxyPort
	tests := []struct {
		name   string
		method string
		url    string
		header []string
		want   int
	}{
		{"same-site POST with the cookie", "POST", h.url("priv", priv.port, "/"), []string{"Cookie", cookie, "Sec-Fetch-Site", "same-site"}, 403},
		{"cross-site PUT with the cookie", "PUT", h.url("priv", priv.port, "/"), []string{"Cookie", cookie, "Sec-Fetch-Site", "cross-site"}, 403},
		{"foreign Origin without fetch metadata", "POST", h.url("priv", priv.port, "/"), []string{"Cookie", cookie, "Origin", "http://3000-evil.localhost:" + h.proxyPort}, 403},
		{"opaque Origin", "DELETE", h.url("priv", priv.port, "/"), []string{"Cookie", cookie, "Origin", "null"}, 403},
		{"same-origin POST", "POST", h.url("priv", priv.port, "/"), []string{"Cookie", cookie, "Sec-Fetch-Site", "same-origin", "Origin", self}, 200},
		{"own Origin", "POST", h.url("priv", priv.port, "/"), []string{"Cookie", cookie, "Origin", self}, 200},
		{"a program's POST", "POST", h.url("priv", priv.port, "/"), []string{"Cookie", cookie}, 200},
		{"cross-site GET", "GET", h.url("priv", priv.port, "/"), []string{"Cookie", cookie, "Sec-Fetch-Site", "cross-site"}, 200},
		{"header token from anywhere", "POST", h.url("priv", priv.port, "/"), []string{TokenHeader, h.token("priv", priv.port), "Sec-Fetch-Site", "cross-site"}, 200},
		{"public port is the app's business", "POST", h.url("pub", pub.port, "/"), []string{"Sec-Fetch-Site", "cross-site"}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, tt.url, strings.NewReader("x"))
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i+1 < len(tt.header); i += 2 {
				req.Header.Set(tt.header[i], tt.header[i+1])
			}
			resp, body := proxytest.Do(t, h.client, req)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.want, body)
			}
			if tt.want == 403 && proxytest.ErrorCode(t, body) != "cross_site_request" {
				t.Errorf("code %q, want cross_site_request", proxytest.ErrorCode(t, body))
			}
		})
	}
}

// TestSecureCookies: behind a TLS front proxy the request is plain HTTP;
// the public URL's scheme decides.
func TestSecureCookies(t *testing.T) {
	for _, secure := range []bool{false, true} {
		rec := &headerOnly{h: http.Header{}}
		r, _ := http.NewRequest("GET", "http://3000-sb.localhost/", nil)
		s := &Signer{Key: testKey}
		SetTokenCookie(rec, r, s, time.Minute, secure, "sb", 3000, "/", time.Now().Add(time.Hour))
		got := strings.Contains(rec.h.Get("Set-Cookie"), "; Secure")
		if got != secure {
			t.Errorf("SecureCookies %v: Set-Cookie %q", secure, rec.h.Get("Set-Cookie"))
		}
	}
}

type headerOnly struct{ h http.Header }

func (w *headerOnly) Header() http.Header         { return w.h }
func (w *headerOnly) Write(b []byte) (int, error) { return len(b), nil }
func (w *headerOnly) WriteHeader(int)             {}
