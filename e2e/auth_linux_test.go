package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/sdk"
)

// TestTeamsCannotSeeEachOther: with real sandboxes and the real store, a
// team's token neither sees nor touches another team's sandbox, through
// the API or the port proxy, and the host admin sees both.
func TestTeamsCannotSeeEachOther(t *testing.T) {
	s := startStack(t, newDataDir(t), stackOptions{network: testPool})
	ctx := t.Context()
	client := func(name string) (*sdk.Client, string) {
		t.Helper()
		team, err := s.auth.CreateTeam(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		secret, _, err := s.auth.CreateToken(ctx, team.ID, "", name+"-ci", store.RoleMember, 0)
		if err != nil {
			t.Fatal(err)
		}
		return sdk.New(s.http.URL, secret), secret
	}
	a, tokA := client("alpha")
	b, tokB := client("beta")

	sbA, err := a.Create(ctx, api.CreateSandboxRequest{Ports: []api.PortSpec{{Port: 3000}}})
	if err != nil {
		t.Fatal(err)
	}
	sbB, err := b.Create(ctx, api.CreateSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if sbA.TeamID == "" || sbA.TeamID == sbB.TeamID {
		t.Fatalf("teams of the sandboxes: %q, %q", sbA.TeamID, sbB.TeamID)
	}

	// Beta cannot get, run in, read from or delete alpha's sandbox.
	if _, err := b.Get(ctx, sbA.ID); !errors.Is(err, sdk.ErrNotFound) || !sdk.IsCode(err, "sandbox_not_found") {
		t.Errorf("beta gets alpha's sandbox: %v", err)
	}
	asB, err := b.Get(ctx, sbB.ID)
	if err != nil {
		t.Fatal(err)
	}
	asB.ID = sbA.ID // beta's handle pointed at alpha's sandbox
	if _, err := asB.RunCommand(ctx, api.CommandRequest{Cmd: "true"}); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("beta runs a command in alpha's sandbox: %v", err)
	}
	if _, err := asB.ReadFile(ctx, "/etc/hostname"); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("beta reads a file of alpha's sandbox: %v", err)
	}
	if err := asB.Delete(ctx); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("beta deletes alpha's sandbox: %v", err)
	}

	// Lists: each team its own; the host admin both.
	ids := func(c *sdk.Client) map[string]bool {
		t.Helper()
		out := map[string]bool{}
		for sb, err := range c.List(ctx, sdk.ListOptions{}) {
			if err != nil {
				t.Fatal(err)
			}
			out[sb.ID] = true
		}
		return out
	}
	if got := ids(a); !got[sbA.ID] || got[sbB.ID] {
		t.Errorf("alpha lists %v", got)
	}
	if got := ids(b); got[sbA.ID] || !got[sbB.ID] {
		t.Errorf("beta lists %v", got)
	}
	if got := ids(s.client); !got[sbA.ID] || !got[sbB.ID] {
		t.Errorf("host admin lists %v", got)
	}

	// The port proxy's owner-token path: alpha's token opens alpha's
	// private port, beta's finds nothing there.
	serveHTTP(t, sbA, 3000)
	for _, tc := range []struct {
		name, token string
		want        int
	}{
		{"owner's team", tokA, http.StatusOK},
		{"another team", tokB, http.StatusNotFound},
		{"host admin", s.token, http.StatusOK},
	} {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.http.URL+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = fmt.Sprintf("3000-%s.localhost", sbA.ID)
		req.Header.Set("Authorization", "Bearer "+tc.token)
		resp, err := s.http.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("proxy, %s: status %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
	}

	// Alpha's sandbox is untouched and still alpha's to use.
	cmd, err := sbA.RunCommand(ctx, api.CommandRequest{Cmd: "sh", Args: []string{"-c", "echo ok"}})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := cmd.Output(context.Background(), "stdout"); err != nil || out != "ok\n" {
		t.Errorf("alpha's command: %q, %v", out, err)
	}
	for _, sb := range []*sdk.Sandbox{sbA, sbB} {
		if err := sb.Delete(ctx); err != nil {
			t.Errorf("delete %s: %v", sb.ID, err)
		}
	}
}
