package daemon

import (
	"bytes"
	"os"
	"path/filepath"
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
