package server_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/server"
)

func TestFileTokenStore(t *testing.T) {
	dir := t.TempDir()
	store, err := server.OpenFileTokenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	secret, created, err := store.EnsureAdminToken()
	if err != nil || !created || !strings.HasPrefix(secret, "pdk_") {
		t.Fatalf("EnsureAdminToken = %q, %v, %v", secret, created, err)
	}
	path := filepath.Join(dir, "tokens.json")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if bytes.Contains(data, []byte(secret)) || bytes.Contains(data, []byte(strings.TrimPrefix(secret, "pdk_"))) {
		t.Error("the secret is stored in plain text")
	}
	if !bytes.Contains(data, []byte(`"name": "admin"`)) || !bytes.Contains(data, []byte(`"createdAt"`)) {
		t.Errorf("file lacks name/createdAt: %s", data)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temp files left behind: %v", entries)
	}

	// Idempotent, also across a reopen: the secret is not shown again.
	again, created, err := store.EnsureAdminToken()
	if err != nil || created || again != "" {
		t.Errorf("second EnsureAdminToken = %q, %v, %v", again, created, err)
	}
	reopened, err := server.OpenFileTokenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, created, _ := reopened.EnsureAdminToken(); created {
		t.Error("reopened store created a second admin token")
	}

	tests := []struct {
		name, secret string
		ok           bool
	}{
		{"admin", secret, true},
		{"wrong", secret + "x", false},
		{"empty", "", false},
		{"prefix only", "pdk_", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := reopened.Authenticate(context.Background(), tt.secret)
			if tt.ok != (err == nil) {
				t.Fatalf("Authenticate = %+v, %v", tok, err)
			}
			if !tt.ok && !errors.Is(err, sandbox.ErrUnauthorized) {
				t.Errorf("error %v does not match ErrUnauthorized", err)
			}
			if tt.ok && tok.Name != "admin" {
				t.Errorf("token = %+v", tok)
			}
		})
	}

	second, tok, err := reopened.Create("ci")
	if err != nil || tok.Name != "ci" {
		t.Fatal(err)
	}
	if got, err := reopened.Authenticate(context.Background(), second); err != nil || got.Name != "ci" {
		t.Errorf("second token: %+v, %v", got, err)
	}
	if n := len(reopened.List()); n != 2 {
		t.Errorf("List = %d tokens", n)
	}
}

func TestConfigValidate(t *testing.T) {
	store, _ := server.OpenFileTokenStore(t.TempDir())
	tests := []struct {
		name string
		cfg  server.Config
		ok   bool
	}{
		{"no sandboxes", server.Config{Tokens: store}, false},
		{"no auth", server.Config{Sandboxes: newFakeSandboxes(nil)}, false},
		{"negative upload", server.Config{Sandboxes: newFakeSandboxes(nil), Tokens: store, MaxUploadBytes: -1}, false},
		{"ok", server.Config{Sandboxes: newFakeSandboxes(nil), Tokens: store}, true},
		{"authenticator instead of tokens", server.Config{Sandboxes: newFakeSandboxes(nil), Auth: server.TokenStoreAuthenticator(store)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := server.New(tt.cfg)
			if tt.ok != (err == nil) {
				t.Errorf("New = %v", err)
			}
		})
	}
}

func gzipTar(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Name: "f.txt", Mode: 0o644, Size: 2, Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Write([]byte("hi")) //nolint:errcheck
	tw.Close()
	zw.Close()
	return buf.Bytes()
}
