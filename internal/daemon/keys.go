package daemon

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/paddock-dev/paddock/internal/atomicfile"
	"github.com/paddock-dev/paddock/internal/proxy"
)

// Keys under the data dir, made on first start (random, mode 0600) and
// kept: a new one would break what the old one made.
const (
	// proxyKeyName signs port and app URLs; kept so signed URLs survive a
	// restart.
	proxyKeyName = "proxy.key"
	// secretsKeyName encrypts project secrets at rest. Losing it loses
	// every project's secrets; they are never stored in the clear.
	secretsKeyName = "secrets.key"
	secretsKeyLen  = 32
)

// loadKey reads the key at dataDir/name, creating it with n random bytes on
// first start. A key of the wrong size is an error, never replaced: that
// would silently lose what the old key protects.
func loadKey(dataDir, name string, n int, exact bool) ([]byte, error) {
	path := filepath.Join(dataDir, name)
	key, err := os.ReadFile(path)
	if err == nil {
		if len(key) < n || (exact && len(key) != n) {
			return nil, fmt.Errorf("key %s: %d bytes, want %d", path, len(key), n)
		}
		return key, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read key %s: %w", path, err)
	}
	key = make([]byte, n)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate key %s: %w", path, err)
	}
	if err := atomicfile.WriteFile(path, key, 0o600); err != nil {
		return nil, err
	}
	return key, nil
}

// loadProxyKey reads the signing key of port and app URLs (at least
// proxy.MinKeyLen bytes).
func loadProxyKey(dataDir string) ([]byte, error) {
	return loadKey(dataDir, proxyKeyName, proxy.MinKeyLen, false)
}

// loadSecretsKey reads the AES-256 key of project secrets.
func loadSecretsKey(dataDir string) ([]byte, error) {
	return loadKey(dataDir, secretsKeyName, secretsKeyLen, true)
}
