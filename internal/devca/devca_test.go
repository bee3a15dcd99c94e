package devca

import (
	"bytes"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestLoad: the first Load makes the CA with a 0600 key, the next one
// reads the same CA; a key others can read is refused, not replaced.
func TestLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	first, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, KeyName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v; want mode 0600", fi, err)
	}
	again, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.CertPEM(), again.CertPEM()) {
		t.Error("a second Load made a new CA; clients that trust the first would stop trusting paddock")
	}
	if again.CertPath() != filepath.Join(dir, CertName) {
		t.Errorf("CertPath = %s", again.CertPath())
	}
	if err := os.Chmod(filepath.Join(dir, KeyName), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); err == nil {
		t.Error("Load used a CA key other users can read")
	}
}

// TestServing: the leaf verifies against the CA alone for each name it was
// made for (a wildcard covering one label), and fails for others.
func TestServing(t *testing.T) {
	ca, err := Load(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	get, err := ca.Serving([]string{"paddock.localhost", "*.paddock.localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := get(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, host string
		ok         bool
	}{
		{"the API host", "paddock.localhost", true},
		{"a port host", "3000-sb-abc.paddock.localhost", true},
		{"the E2B API host", "api.paddock.localhost", true},
		{"an IP address", "127.0.0.1", true},
		{"two labels under the domain", "a.b.paddock.localhost", false},
		{"another domain", "example.com", false},
		{"another address", "127.0.0.2", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: tc.host, Roots: ca.Pool()})
			if (err == nil) != tc.ok {
				t.Errorf("verify %s: %v, want ok=%v", tc.host, err, tc.ok)
			}
		})
	}
	if _, err := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: "paddock.localhost", Roots: x509.NewCertPool()}); err == nil {
		t.Error("the leaf verified without its CA")
	}
}

// TestRenew: a leaf close to its end is made again on the next handshake.
func TestRenew(t *testing.T) {
	ca, err := Load(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ca.now = func() time.Time { return now }
	get, err := ca.Serving([]string{"paddock.localhost"})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := get(nil)
	if same, _ := get(nil); same != first {
		t.Error("a fresh leaf was made again")
	}
	now = first.Leaf.NotAfter.Add(-leafRenew / 2)
	renewed, _ := get(nil)
	if renewed == first || !renewed.Leaf.NotAfter.After(first.Leaf.NotAfter) {
		t.Error("a leaf about to expire was not renewed")
	}
}
