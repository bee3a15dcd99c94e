// Package devca is paddock's local development certificate authority: a
// CA made once under the data dir (its key 0600, kept across restarts, so
// clients told to trust it once keep trusting it) that signs the serving
// certificate of `paddock serve --tls-dev-ca` for the API host and every
// port host under the domain. It is for machines where nobody has a real
// certificate (a laptop, CI): clients trust it through NODE_EXTRA_CA_CERTS,
// SSL_CERT_FILE or a pool of their own.
package devca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/paddock-dev/paddock/internal/atomicfile"
)

// File names under the CA's directory.
const (
	CertName = "dev-ca.pem"
	KeyName  = "dev-ca.key"
)

const (
	caLifetime = 10 * 365 * 24 * time.Hour
	// leafLifetime stays under the 398 days browsers accept; a leaf is
	// made again once it has less than leafRenew left.
	leafLifetime = 397 * 24 * time.Hour
	leafRenew    = 30 * 24 * time.Hour
)

// CA is a loaded development CA.
type CA struct {
	cert    *x509.Certificate
	key     crypto.Signer
	certPEM []byte
	path    string
	now     func() time.Time

	mu   sync.Mutex // guards leaf
	leaf *tls.Certificate
}

// Load reads the CA in dir, making it (and dir, 0700) on first use.
func Load(dir string) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("dev CA dir: %w", err)
	}
	certPath, keyPath := filepath.Join(dir, CertName), filepath.Join(dir, KeyName)
	ca, err := read(certPath, keyPath)
	if errors.Is(err, os.ErrNotExist) {
		ca, err = create(certPath, keyPath)
	}
	if err != nil {
		return nil, err
	}
	ca.path, ca.now = certPath, time.Now
	return ca, nil
}

// CertPath is the CA certificate's file, the one clients are told to trust.
func (ca *CA) CertPath() string { return ca.path }

// CertPEM is the CA certificate.
func (ca *CA) CertPEM() []byte { return ca.certPEM }

// Pool is a cert pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

func read(certPath, keyPath string) (*CA, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	keyPEM, err := readPrivate(keyPath)
	if err != nil {
		return nil, err
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, fmt.Errorf("dev CA %s: not PEM", certPath)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("dev CA %s: %w", certPath, err)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("dev CA key %s: %w", keyPath, err)
	}
	key, ok := k.(crypto.Signer)
	if !ok || !publicEqual(key.Public(), cert.PublicKey) {
		return nil, fmt.Errorf("dev CA key %s does not match %s", keyPath, certPath)
	}
	return &CA{cert: cert, key: key, certPEM: certPEM}, nil
}

// readPrivate reads a key only paddock may read: one others could read is
// leaked, and paddock says so rather than keep using it.
func readPrivate(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("dev CA key %s: mode %v, want a regular file only its owner reads (0600)", path, fi.Mode())
	}
	return os.ReadFile(path)
}

func publicEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

func create(certPath, keyPath string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("dev CA key: %w", err)
	}
	now := time.Now()
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"paddock development CA"}, CommonName: "paddock dev CA " + host},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("dev CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	// The key first: a certificate without its key would be read as a
	// damaged CA on the next start.
	if err := atomicfile.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := atomicfile.WriteFile(certPath, certPEM, 0o644); err != nil {
		return nil, err
	}
	return &CA{cert: cert, key: key, certPEM: certPEM}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return n
}

// Serving returns a GetCertificate for a tls.Config: one certificate for
// names (DNS names, wildcards such as "*.paddock.localhost", IP
// addresses), made in memory and made again before it expires. The CA's key
// never leaves this process; the leaf's is never written.
func (ca *CA) Serving(names []string) (func(*tls.ClientHelloInfo) (*tls.Certificate, error), error) {
	if len(names) == 0 {
		return nil, errors.New("dev CA: no names to certify")
	}
	names = append([]string(nil), names...)
	if _, err := ca.leafFor(names); err != nil {
		return nil, err
	}
	return func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return ca.leafFor(names) }, nil
}

func (ca *CA) leafFor(names []string) (*tls.Certificate, error) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if ca.leaf != nil && ca.now().Add(leafRenew).Before(ca.leaf.Leaf.NotAfter) {
		return ca.leaf, nil
	}
	leaf, err := ca.issue(names)
	if err != nil {
		return nil, err
	}
	ca.leaf = leaf
	return leaf, nil
}

func (ca *CA) issue(names []string) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("dev CA leaf key: %w", err)
	}
	now := ca.now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{Organization: []string{"paddock development"}, CommonName: names[0]},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(leafLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, fmt.Errorf("dev CA leaf: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}
