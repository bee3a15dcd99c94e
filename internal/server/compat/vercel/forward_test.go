package vercel

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/paddock-dev/paddock/internal/httperr"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/server"
)

// elsewhereSandboxes is this replica's sandboxes, to which one id is
// another replica's.
type elsewhereSandboxes struct {
	server.Sandboxes
	ee *sandbox.ElsewhereError
}

func (s elsewhereSandboxes) Get(ctx context.Context, id string) (sandbox.Sandbox, error) {
	if id == s.ee.ID {
		return sandbox.Sandbox{}, s.ee
	}
	return s.Sandboxes.Get(ctx, id)
}

// TestForwardByName: a v2 route that names a sandbox whose current
// session another replica runs goes to that replica whole, body included,
// though its handler decodes the body before it looks the sandbox up;
// another team's is not found here.
func TestForwardByName(t *testing.T) {
	e := newEnv(t)
	sid := e.create("named", nil)["session"].(map[string]any)["id"].(string)

	// The owner echoes what it got.
	owner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Got", fmt.Sprintf("%s %s by=%s body=%s", r.Method, r.URL.Path, r.Header.Get(httperr.ForwardedBy), body))
		w.WriteHeader(http.StatusTeapot)
	}))
	t.Cleanup(owner.Close)
	h, err := New(Config{Sandboxes: elsewhereSandboxes{e.sbs, &sandbox.ElsewhereError{ID: sid, TeamID: "team_1", Replica: "node-a", URL: owner.URL}},
		Auth: fakeAuth{}, Teams: fakeTeams{}, Store: NewStore(e.db)})
	if err != nil {
		t.Fatal(err)
	}
	b := httptest.NewServer(httperr.Forwarding("node-b", slog.New(slog.DiscardHandler), h))
	t.Cleanup(b.Close)

	tests := []struct {
		name, method, path, body, token string
		status                          int
		got                             string
	}{
		{"update", "PATCH", "/v2/sandboxes/named", `{"tags":{"a":"b"}}`, testToken, http.StatusTeapot,
			`PATCH /compat/vercel/v2/sandboxes/named by=node-b body={"tags":{"a":"b"}}`},
		{"delete", "DELETE", "/v2/sandboxes/named", "", testToken, http.StatusTeapot,
			"DELETE /compat/vercel/v2/sandboxes/named by=node-b body="},
		{"fork", "POST", "/v2/sandboxes/named/fork", `{"name":"copy"}`, testToken, http.StatusTeapot,
			`POST /compat/vercel/v2/sandboxes/named/fork by=node-b body={"name":"copy"}`},
		{"session", "POST", "/v2/sandboxes/sessions/" + sid + "/extend-timeout", `{"duration":1000}`, testToken, http.StatusTeapot,
			`POST /compat/vercel/v2/sandboxes/sessions/` + sid + `/extend-timeout by=node-b body={"duration":1000}`},
		{"another team", "PATCH", "/v2/sandboxes/named", `{"tags":{"a":"b"}}`, tokenTwo, http.StatusNotFound, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			team := "team_1"
			if tc.token == tokenTwo {
				team = "team_2"
			}
			req, _ := http.NewRequest(tc.method, b.URL+Prefix+tc.path+"?projectId=prj_1&teamId="+team, strings.NewReader(tc.body))
			req.Header.Set("Authorization", "Bearer "+tc.token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || resp.Header.Get("X-Got") != tc.got {
				t.Fatalf("%d %q %s, want %d and the owner to get %q", resp.StatusCode, resp.Header.Get("X-Got"), data, tc.status, tc.got)
			}
		})
	}
}
