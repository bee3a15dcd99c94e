package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/server"
)

// TestProbes: /healthz and /readyz answer without credentials, outside
// /api/v1; readyz is 503 with the check's code when Ready fails.
func TestProbes(t *testing.T) {
	tokens, err := server.OpenFileTokenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		ready      func(context.Context) error
		path       string
		wantStatus int
		wantCode   string
	}{
		{"healthz", nil, "/healthz", 200, ""},
		{"healthz while not ready", func(context.Context) error { return errors.New("down") }, "/healthz", 200, ""},
		{"readyz without a check", nil, "/readyz", 200, ""},
		{"readyz ready", func(context.Context) error { return nil }, "/readyz", 200, ""},
		{"readyz with a coded failure", func(context.Context) error {
			return sandbox.Errorf(sandbox.ErrUnavailable, "store_unavailable", "the store does not answer")
		}, "/readyz", 503, "store_unavailable"},
		{"readyz with a bare failure", func(context.Context) error { return errors.New("disk on fire") }, "/readyz", 503, "not_ready"},
		{"the API still wants a token", nil, "/api/v1/sandboxes", 401, "missing_token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := server.New(server.Config{Sandboxes: newFakeSandboxes(nil), Tokens: tokens, Ready: tc.ready})
			if err != nil {
				t.Fatal(err)
			}
			hs := httptest.NewServer(srv.Handler())
			t.Cleanup(hs.Close)
			resp, err := http.Get(hs.URL + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tc.wantStatus)
			}
			if tc.wantCode == "" {
				if string(body) != "ok\n" {
					t.Errorf("body %q, want ok", body)
				}
				return
			}
			var e struct {
				Error struct{ Code, Message string }
			}
			if err := json.Unmarshal(body, &e); err != nil || e.Error.Code != tc.wantCode {
				t.Errorf("body %s (%v), want code %s", body, err, tc.wantCode)
			}
		})
	}
}
