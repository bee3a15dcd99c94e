package main

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/server"
)

// TestOpenAuth: the first start makes the admin token, later starts do
// not, --reset-admin-token replaces it, and a pre-teams tokens.json is
// adopted once.
func TestOpenAuth(t *testing.T) {
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

	open := func(f authFlags) (string, bool) {
		t.Helper()
		st, a, secret, created, err := openAuth(ctx, dir, f, log)
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
		st, a, _, _, err := openAuth(ctx, dir, authFlags{}, log)
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
	if secret, created := open(authFlags{}); created || secret != "" {
		t.Errorf("first start after import = %q, %v", secret, created)
	}
	check(old, true)
	if _, err := os.Stat(filepath.Join(dir, "tokens.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("tokens.json left in place: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "tokens.json.imported")); err != nil {
		t.Error(err)
	}

	fresh, created := open(authFlags{resetAdminToken: true})
	if !created || fresh == "" {
		t.Fatalf("reset = %q, %v", fresh, created)
	}
	check(fresh, true)
	check(old, false)
	if secret, created := open(authFlags{}); created || secret != "" {
		t.Errorf("start after reset = %q, %v", secret, created)
	}

	// A fresh data dir gets its admin token on the first start only.
	dir = t.TempDir()
	first, created := open(authFlags{})
	if !created || first == "" {
		t.Fatalf("first start = %q, %v", first, created)
	}
	check(first, true)
	if _, created := open(authFlags{}); created {
		t.Error("second start made another admin token")
	}

	// OIDC flags are checked: an issuer without an audience is refused.
	if _, _, _, _, err := openAuth(ctx, dir, authFlags{oidcIssuer: "https://id.example.com"}, log); err == nil {
		t.Error("OIDC without an audience was accepted")
	}
}
