package server_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/server"
)

// fuzzRoutes are the sandbox routes whose requests carry a body, a path or
// a query to decode. {id} is filled from the input; the sandbox "stopped"
// makes a request that passes every check end at the agent (409), so the
// fuzzer needs no agent.
var fuzzRoutes = []struct{ method, path string }{
	{"POST", "/sandboxes"},
	{"GET", "/sandboxes"},
	{"POST", "/sandboxes/{id}/commands"},
	{"POST", "/sandboxes/{id}/directories"},
	{"POST", "/sandboxes/{id}/extend-timeout"},
	{"POST", "/sandboxes/{id}/ports"},
	{"PUT", "/sandboxes/{id}/network-policy"},
	{"POST", "/sandboxes/{id}/commands/cmd-1/kill"},
	{"GET", "/sandboxes/{id}/commands/cmd-1/logs"},
	{"PUT", "/sandboxes/{id}/files"},
	{"GET", "/sandboxes/{id}/files"},
	{"GET", "/sandboxes/{id}/archive"},
}

// FuzzAPIRequest sends one request with a fuzzed sandbox id, query and
// body to a route and checks what the API promises of any input: never a
// 5xx, every error a JSON body with a code, and nothing changed by a
// request that was refused.
func FuzzAPIRequest(f *testing.F) {
	sbs := newFakeSandboxes(nil)
	tokens, err := server.OpenFileTokenStore(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	token, _, err := tokens.EnsureAdminToken()
	if err != nil {
		f.Fatal(err)
	}
	srv, err := server.New(server.Config{
		Sandboxes: sbs, Tokens: tokens, MaxUploadBytes: maxUpload,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		f.Fatal(err)
	}
	h := srv.Handler()
	stopped := sandbox.Sandbox{ID: "stopped", State: sandbox.Stopped, Image: "host", CreatedAt: time.Unix(0, 0), ExpiresAt: time.Unix(300, 0)}

	for i := range fuzzRoutes {
		for _, s := range []struct{ query, body string }{
			{"", ""},
			{"", "{}"},
			{"path=/tmp/x", ""},
			{"path=/a/../b&sudo=maybe", "x"},
			{"limit=5&state=running&cursor=sb-1", ""},
			{"follow=true", ""},
			{"", `{"cmd":"ls","cwd":"/tmp","args":["-l"],"env":{"A":"1"},"detached":true}`},
			{"", `{"path":"/tmp/x","sudo":true}`},
			{"", `{"durationMs":1000}`},
			{"", `{"ports":[{"port":8080,"public":true}]}`},
			{"", `{"mode":"deny-all"}`},
			{"", `{"signal":"SIGTERM"}`},
			{"", `{"image":"host","resources":{"vcpus":1},"timeoutMs":1000}`},
			{"", `null`},
		} {
			f.Add(uint8(i), "stopped", s.query, []byte(s.body))
		}
	}
	f.Fuzz(func(t *testing.T, route uint8, id, query string, body []byte) {
		if id == "panic" {
			return // the fake's way to test panic recovery
		}
		rt := fuzzRoutes[int(route)%len(fuzzRoutes)]
		// Reset what a previous input may have changed.
		sbs.Reset()
		sbs.Add(stopped)

		u, err := url.Parse(api.Prefix + strings.Replace(rt.path, "{id}", url.PathEscape(id), 1) + "?" + query)
		if err != nil {
			return // not a request a client can send
		}
		req := httptest.NewRequest(rt.method, "/", bytes.NewReader(body))
		req.URL, req.RequestURI = u, u.RequestURI()
		req.Header.Set("Authorization", "Bearer "+token)
		if rt.method == "PUT" && strings.HasSuffix(rt.path, "/files") {
			req.Header.Set("Content-Type", "application/x-tar")
		}
		before := sbs.Mutations()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		status := rec.Code
		if status >= 500 {
			t.Fatalf("%s %s: status %d: %s", rt.method, req.URL, status, rec.Body)
		}
		if status < 400 {
			return
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s %s: status %d with Content-Type %q", rt.method, req.URL, status, ct)
		}
		var e api.Error
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Code == "" {
			t.Fatalf("%s %s: status %d, error body %q: %v", rt.method, req.URL, status, rec.Body, err)
		}
		if after := sbs.Mutations(); !slices.Equal(before, after) {
			t.Fatalf("%s %s: refused with %d (%s) but changed %v", rt.method, req.URL, status, e.Error.Code, after[len(before):])
		}
	})
}
