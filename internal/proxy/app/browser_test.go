package app

import (
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/proxy"

	"github.com/paddock-dev/paddock/internal/proxy/proxytest"
)

// hostileHeaders answers with everything a sandbox page might set to reach
// past its own origin.
var hostileHeaders = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Add("Set-Cookie", "own=1; Path=/")
	h.Add("Set-Cookie", "parent=1; Domain=localhost; Path=/")
	h.Set("Service-Worker-Allowed", "/")
	h.Set("Content-Type", "text/html")
	_, _ = w.Write([]byte("<html>page</html>"))
})

// TestAppCrossSite: the app proxy adds the project's secret, so an unsafe
// request another page made a browser send with the app's cookie must not
// reach the app; the path form's answers run in an opaque origin.
func TestAppCrossSite(t *testing.T) {
	h := newAppHarness(t, 0)
	var hits atomic.Int64
	h.addApp("goose", "", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		hostileHeaders(w, r)
	}))
	cookie := proxy.TokenCookie + "=" + Sign(h.signer, "goose", time.Hour)
	tests := []struct {
		name, method, url, token string
		header                   []string
		want                     int
	}{
		{"sibling sandbox's form POST with the cookie", "POST", h.hostURL("goose", "/reply"), "", []string{"Cookie", cookie, "Sec-Fetch-Site", "same-site"}, 403},
		{"foreign Origin", "POST", h.hostURL("goose", "/reply"), "", []string{"Cookie", cookie, "Origin", "http://3000-evil.localhost"}, 403},
		{"same-origin POST", "POST", h.hostURL("goose", "/reply"), "", []string{"Cookie", cookie, "Sec-Fetch-Site", "same-origin"}, 200},
		{"the web app's bearer from its own origin", "POST", h.pathURL("goose", "/reply"), "pdk_team_a", []string{"Sec-Fetch-Site", "cross-site"}, 200},
		{"cross-site GET", "GET", h.hostURL("goose", "/"), "", []string{"Cookie", cookie, "Sec-Fetch-Site", "cross-site"}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := hits.Load()
			resp, body := proxytest.Do(t, h.client, h.request(tt.method, tt.url, tt.token, strings.NewReader("x"), tt.header...))
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.want, body)
			}
			if reached := hits.Load() > before; reached != (tt.want == 200) {
				t.Errorf("the app was reached: %v", reached)
			}
		})
	}
	resp, _ := proxytest.Do(t, h.client, h.request("GET", h.pathURL("goose", "/"), "pdk_team_a", nil))
	if csp := resp.Header.Values("Content-Security-Policy"); !slices.Contains(csp, proxy.PathFormCSP) || len(resp.Header.Values("Set-Cookie")) != 0 {
		t.Errorf("path form answer: CSP %q, Set-Cookie %q", csp, resp.Header.Values("Set-Cookie"))
	}
	resp, body := proxytest.Do(t, h.client, h.request("GET", h.pathURL("goose", "/sw.js"), "pdk_team_a", nil, "Service-Worker", "script"))
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("service worker script on the app's path form: status %d: %s", resp.StatusCode, body)
	}
}
