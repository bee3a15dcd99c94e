package daemon

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

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
	key, err := readKey(path)
	if err == nil {
		if len(key) < n || (exact && len(key) != n) {
			return nil, fmt.Errorf("key %s: %d bytes, want %d", path, len(key), n)
		}
		return key, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("key %s: %w", path, err)
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

// readKey reads a key file that only its owner, paddock, may read: a key
// others could read has to be treated as leaked, and paddock says so rather
// than keep using it (as ssh does with private keys). Fixing the mode is the
// operator's call, since it may mean rotating the key too.
func readKey(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, syscall.ELOOP) {
		return nil, errors.New("a symlink, not the key file itself")
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("owned by uid %d, not paddock's %d: chown it, and rotate it if another user could have written it", st.Uid, os.Geteuid())
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("mode %#o lets other users read it: chmod 600 it, and rotate it if it may have been read", perm)
	}
	key, err := io.ReadAll(io.LimitReader(f, maxKeyLen+1))
	if err != nil {
		return nil, err
	}
	if len(key) > maxKeyLen {
		return nil, fmt.Errorf("more than %d bytes", maxKeyLen)
	}
	return key, nil
}

// maxKeyLen bounds what readKey reads: keys are tens of bytes.
const maxKeyLen = 4096

// loadProxyKey reads the signing key of port and app URLs (at least
// proxy.MinKeyLen bytes).
func loadProxyKey(dataDir string) ([]byte, error) {
	return loadKey(dataDir, proxyKeyName, proxy.MinKeyLen, false)
}

// loadSecretsKey reads the AES-256 key of project secrets.
func loadSecretsKey(dataDir string) ([]byte, error) {
	return loadKey(dataDir, secretsKeyName, secretsKeyLen, true)
}
