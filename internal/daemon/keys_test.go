package daemon

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/paddock-dev/paddock/internal/proxy"
)

// TestKeys: each key is made once, random, mode 0600, the same on every
// later start; a damaged key is an error, never silently replaced (that
// would lose every project's secrets, or every signed URL).
func TestKeys(t *testing.T) {
	for _, tc := range []struct {
		name string
		file string
		load func(dir string) ([]byte, error)
		size int
	}{
		{"secrets", secretsKeyName, loadSecretsKey, secretsKeyLen},
		{"proxy", proxyKeyName, loadProxyKey, proxy.MinKeyLen},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			k1, err := tc.load(dir)
			if err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(filepath.Join(dir, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if len(k1) != tc.size || fi.Mode().Perm() != 0o600 {
				t.Errorf("key of %d bytes, mode %v", len(k1), fi.Mode().Perm())
			}
			k2, err := tc.load(dir)
			if err != nil || !bytes.Equal(k1, k2) {
				t.Errorf("second load: %v, same key %v", err, bytes.Equal(k1, k2))
			}
			if err := os.WriteFile(filepath.Join(dir, tc.file), []byte("short"), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := tc.load(dir); err == nil {
				t.Error("a 5-byte key was accepted")
			}
		})
	}
}

// TestKeyRefusedWhenExposed: a key others could read, a key that is a
// symlink or a FIFO, or one owned by another user, stops the start with
// what to do, and is left as it was.
func TestKeyRefusedWhenExposed(t *testing.T) {
	dir := t.TempDir()
	if _, err := loadProxyKey(dir); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, proxyKeyName)
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadProxyKey(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a 0644 key: %v, want a refusal saying chmod 600", err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Errorf("the key's mode was changed to %v", fi.Mode().Perm())
	}

	other := t.TempDir()
	if err := os.Symlink(path, filepath.Join(other, proxyKeyName)); err != nil {
		t.Fatal(err)
	}
	if _, err := loadProxyKey(other); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("a symlinked key: %v, want a refusal", err)
	}

	fifo := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(fifo, secretsKeyName), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadSecretsKey(fifo); err == nil || !strings.Contains(err.Error(), "regular") {
		t.Errorf("a FIFO key: %v, want a refusal (and no hang)", err)
	}

	if os.Geteuid() != 0 {
		return
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, 12345, 12345); err != nil {
		t.Fatal(err)
	}
	if _, err := loadProxyKey(dir); err == nil || !strings.Contains(err.Error(), "owned by uid 12345") {
		t.Errorf("a key owned by another user: %v, want a refusal", err)
	}
}
