package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/paddock-dev/paddock/internal/devca"
	"github.com/paddock-dev/paddock/internal/fake"
)

// TestTLSDevCA: with TLSDevCA the daemon serves, over h2 and HTTP/1.1, a
// certificate that a client trusting only the development CA accepts for
// the API host and the hosts under the domain, and refuses for other
// names; a restart keeps the CA.
func TestTLSDevCA(t *testing.T) {
	noGoroutinesLeft(t)
	dir := newDataDir(t)
	const domain = "paddock.localhost"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{DataDir: dir, NoNetwork: true, Domain: domain, TLSDevCA: true,
		PublicURL: "https://" + domain + ":" + portOf(ln.Addr())}
	drv := fake.NewDriver(t, fake.DriverConfig{})
	d, err := Start(t.Context(), cfg, WithDriver(drv))
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	caPath := d.DevCAPath()
	if caPath != filepath.Join(dir, "tls", devca.CertName) {
		t.Errorf("DevCAPath = %q", caPath)
	}
	serveTLS(t, d, ln)

	pemBytes, err := os.ReadFile(caPath)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		t.Fatal("no certificate in the CA file")
	}
	addr := ln.Addr().String()
	for _, tc := range []struct {
		name, host string
		wantCode   int // 0: the handshake must fail
	}{
		{"the API host", domain, http.StatusOK},
		{"localhost", "localhost", http.StatusOK},
		// Without networking the API answers port hosts; the name is what
		// is under test.
		{"a port host", "3000-sb-abc." + domain, http.StatusOK},
		{"an app host", "app-p1." + domain, http.StatusUnauthorized},
		{"two labels deep", "a.b." + domain, 0},
		{"another domain", "example.com", 0},
	} {
		for _, h2 := range []bool{true, false} {
			name := tc.name + map[bool]string{true: " over h2", false: " over HTTP/1.1"}[h2]
			t.Run(name, func(t *testing.T) {
				tr := &http.Transport{
					TLSClientConfig:   &tls.Config{RootCAs: roots},
					ForceAttemptHTTP2: h2,
					DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
						return (&net.Dialer{}).DialContext(ctx, network, addr)
					},
				}
				if !h2 {
					tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
				}
				defer tr.CloseIdleConnections()
				resp, err := (&http.Client{Transport: tr}).Get("https://" + tc.host + "/healthz")
				if tc.wantCode == 0 {
					var verr *tls.CertificateVerificationError
					if err == nil {
						resp.Body.Close()
						t.Fatalf("%s: got %d, want a certificate error", tc.host, resp.StatusCode)
					}
					if !errors.As(err, &verr) {
						t.Errorf("%s: %v, want a certificate verification error", tc.host, err)
					}
					return
				}
				if err != nil {
					t.Fatalf("%s: %v", tc.host, err)
				}
				resp.Body.Close()
				if resp.StatusCode != tc.wantCode {
					t.Errorf("%s/healthz = %d, want %d", tc.host, resp.StatusCode, tc.wantCode)
				}
				if wantMajor := map[bool]int{true: 2, false: 1}[h2]; resp.ProtoMajor != wantMajor {
					t.Errorf("protocol %s, want HTTP/%d", resp.Proto, wantMajor)
				}
			})
		}
	}

	// A restart reads the same CA: clients told to trust it once keep
	// trusting paddock.
	d2, err := Start(t.Context(), Config{DataDir: dir, NoNetwork: true, Domain: domain, TLSDevCA: true}, WithDriver(drv))
	if err == nil {
		err = d2.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	again, err := os.ReadFile(caPath)
	if err != nil || string(again) != string(pemBytes) {
		t.Errorf("the CA changed across a restart (%v)", err)
	}
}

// serveTLS serves d on ln as `paddock serve` does with TLS: h2 and
// HTTP/1.1 with the daemon's certificate; the cleanup stops both.
func serveTLS(t *testing.T, d *Daemon, ln net.Listener) {
	t.Helper()
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	hs := &http.Server{Handler: d.Handler(), Protocols: &protocols, TLSConfig: d.TLSConfig(),
		ErrorLog: log.New(io.Discard, "", 0)} // the refused handshakes are expected
	done := make(chan struct{})
	go func() { defer close(done); _ = hs.ServeTLS(ln, "", "") }()
	t.Cleanup(func() {
		hs.Close()
		<-done
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
}

// TestTLSConfigValidate: the TLS settings that cannot work together.
func TestTLSConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"cert and key", Config{DataDir: "/d", TLSCertFile: "c", TLSKeyFile: "k"}, true},
		{"cert without key", Config{DataDir: "/d", TLSCertFile: "c"}, false},
		{"key without cert", Config{DataDir: "/d", TLSKeyFile: "k"}, false},
		{"dev CA", Config{DataDir: "/d", TLSDevCA: true}, true},
		{"dev CA and a cert", Config{DataDir: "/d", TLSDevCA: true, TLSCertFile: "c", TLSKeyFile: "k"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
