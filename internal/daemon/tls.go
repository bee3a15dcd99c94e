package daemon

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"

	"github.com/paddock-dev/paddock/internal/devca"
)

// tlsDirName holds the development CA under the data dir.
const tlsDirName = "tls"

// startTLS loads the serving certificate: the operator's files, or one of
// the development CA. Without either the daemon serves no TLS.
func (d *Daemon) startTLS(context.Context, *options) error {
	switch {
	case d.cfg.TLSCertFile != "":
		cert, err := tls.LoadX509KeyPair(d.cfg.TLSCertFile, d.cfg.TLSKeyFile)
		if err != nil {
			return fmt.Errorf("TLS certificate: %w", err)
		}
		d.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	case d.cfg.TLSDevCA:
		ca, err := devca.Load(filepath.Join(d.cfg.DataDir, tlsDirName))
		if err != nil {
			return err
		}
		get, err := ca.Serving(d.cfg.tlsNames())
		if err != nil {
			return err
		}
		d.tls = &tls.Config{GetCertificate: get, MinVersion: tls.VersionTLS12}
		d.devCA = ca.CertPath()
	}
	return nil
}

// tlsNames are the names a development certificate covers: the domain and
// its port hosts, localhost and loopback, and the public URL's host.
func (c Config) tlsNames() []string {
	names := []string{"localhost", "127.0.0.1", "::1"}
	if c.Domain != "" && c.Domain != "localhost" {
		names = append(names, c.Domain)
	}
	if c.Domain != "" {
		names = append(names, "*."+c.Domain)
	}
	if u, err := url.Parse(c.PublicURL); err == nil && u.Hostname() != "" {
		names = append(names, u.Hostname())
	}
	slices.Sort(names)
	names = slices.Compact(names)
	// localhost first: it names the certificate (its subject's CN).
	if i := slices.Index(names, "localhost"); i > 0 {
		names[0], names[i] = names[i], names[0]
	}
	return names
}

// TLSConfig is what the listener serves TLS with (a clone the caller may
// change, e.g. for ALPN), or nil when paddock serves plain HTTP.
func (d *Daemon) TLSConfig() *tls.Config {
	if d.tls == nil {
		return nil
	}
	return d.tls.Clone()
}

// DevCAPath is the development CA's certificate file clients trust, or ""
// without Config.TLSDevCA.
func (d *Daemon) DevCAPath() string { return d.devCA }
