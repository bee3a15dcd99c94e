package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestSecretsKey: made once, 32 bytes, 0600, the same on every later start;
// a damaged key is an error, never silently replaced (that would lose every
// project's secrets).
func TestSecretsKey(t *testing.T) {
	dir := t.TempDir()
	k1, err := loadSecretsKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, secretsKeyName))
	if err != nil {
		t.Fatal(err)
	}
	if len(k1) != 32 || fi.Mode().Perm() != 0o600 {
		t.Errorf("key of %d bytes, mode %v", len(k1), fi.Mode().Perm())
	}
	k2, err := loadSecretsKey(dir)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Errorf("second load: %v, same key %v", err, bytes.Equal(k1, k2))
	}
	if err := os.WriteFile(filepath.Join(dir, secretsKeyName), []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadSecretsKey(dir); err == nil {
		t.Error("a 5-byte key was accepted")
	}
}

func TestProjectUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	for _, args := range [][]string{
		{"project"},
		{"project", "bogus"},
		{"project", "create", "x"}, // no source
		{"project", "create", "--image", "i", "--git", "g", "x"}, // two sources
		{"project", "get"},
		{"demo", "extra"},
	} {
		if err := run(t.Context(), args, &out, &errOut); exitCode(err, &errOut) != 2 {
			t.Errorf("%q: %v, want a usage error", args, err)
		}
	}
}
