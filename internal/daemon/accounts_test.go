package daemon

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/server"
	"github.com/paddock-dev/paddock/internal/store/sqlite"
)

// TestStartAuth: the first start makes the admin token, later starts do
// not, ResetAdminToken replaces it, and a pre-teams tokens.json is adopted
// once.
func TestStartAuth(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	// A data dir from before teams: its admin token must keep working.
	fts, err := server.OpenFileTokenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	old, _, err := fts.EnsureAdminToken()
	if err != nil {
		t.Fatal(err)
	}

	// openAuth opens the store and authentication as Start does.
	openAuth := func(dir string, oidc *auth.OIDCConfig, reset bool) (*sqlite.Store, *auth.Authenticator, string, bool, error) {
		t.Helper()
		st, err := sqlite.Open(filepath.Join(dir, storeFile))
		if err != nil {
			t.Fatal(err)
		}
		a, secret, created, err := startAuth(ctx, st, dir, oidc, reset, log)
		if err != nil {
			st.Close()
			return nil, nil, "", false, err
		}
		return st, a, secret, created, nil
	}
	open := func(reset bool) (string, bool) {
		t.Helper()
		st, a, secret, created, err := openAuth(dir, nil, reset)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		for _, s := range []string{secret, old} {
			if s == "" {
				continue
			}
			if p, err := a.AuthenticateBearer(ctx, s); err == nil && !p.HostAdmin {
				t.Errorf("token is not a host admin's: %+v", p)
			}
		}
		return secret, created
	}
	check := func(secret string, ok bool) {
		t.Helper()
		st, a, _, _, err := openAuth(dir, nil, false)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		_, err = a.AuthenticateBearer(ctx, secret)
		if ok != (err == nil) || (!ok && !errors.Is(err, sandbox.ErrUnauthorized)) {
			t.Errorf("token works = %v, want %v", err, ok)
		}
	}

	// The imported "admin" token counts: nothing new is made or printed.
	if secret, created := open(false); created || secret != "" {
		t.Errorf("first start after import = %q, %v", secret, created)
	}
	check(old, true)
	if _, err := os.Stat(filepath.Join(dir, "tokens.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("tokens.json left in place: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "tokens.json.imported")); err != nil {
		t.Error(err)
	}

	fresh, created := open(true)
	if !created || fresh == "" {
		t.Fatalf("reset = %q, %v", fresh, created)
	}
	check(fresh, true)
	check(old, false)
	if secret, created := open(false); created || secret != "" {
		t.Errorf("start after reset = %q, %v", secret, created)
	}

	// A fresh data dir gets its admin token on the first start only.
	dir = t.TempDir()
	first, created := open(false)
	if !created || first == "" {
		t.Fatalf("first start = %q, %v", first, created)
	}
	check(first, true)
	if _, created := open(false); created {
		t.Error("second start made another admin token")
	}

	// OIDC flags are checked: an issuer without an audience is refused.
	if _, _, _, _, err := openAuth(dir, &auth.OIDCConfig{Issuer: "https://id.example.com"}, false); err == nil {
		t.Error("OIDC without an audience was accepted")
	}
}
