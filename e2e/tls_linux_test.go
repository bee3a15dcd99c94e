package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/paddock-dev/paddock/api"
)

// tlsPool is TestTLSPortHost's address pool, apart from the others'.
var tlsPool = netip.MustParsePrefix("10.213.240.0/24")

// TestTLSPortHost: with the development CA, a client that trusts only
// that CA reaches the API and a server inside a sandbox through its port
// host <port>-<id>.paddock.localhost; a name the certificate does not
// cover fails verification. (The harness serves HTTP/1.1 over TLS; h2 as
// serve negotiates it is daemon's TestTLSDevCA.)
func TestTLSPortHost(t *testing.T) {
	s := startStack(t, newDataDir(t), stackOptions{network: tlsPool, tls: true})
	sb := s.create(t, api.CreateSandboxRequest{Ports: []api.PortSpec{{Port: 3000, Public: true}}})
	if out, code := sh(t, sb, "echo served-over-tls > /tmp/index.html"); code != 0 {
		t.Fatalf("write index: %q", out)
	}
	serveHTTP(t, sb, 3000)

	pem, err := os.ReadFile(s.d.DevCAPath())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	addr := s.http.Listener.Addr().String()
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		// Every name leads to the listener: no DNS needed.
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	_, port, _ := net.SplitHostPort(addr)
	for _, tc := range []struct{ name, url, want string }{
		{"the API", "https://paddock.localhost:" + port + "/healthz", ""},
		{"the port host", "https://3000-" + sb.ID + ".paddock.localhost:" + port + "/index.html", "served-over-tls\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := hc.Get(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || (tc.want != "" && string(body) != tc.want) {
				t.Errorf("%s = %d %s %q", tc.url, resp.StatusCode, resp.Proto, body)
			}
		})
	}
	_, err = hc.Get("https://3000-" + sb.ID + ".other.example:" + port + "/")
	var verr *tls.CertificateVerificationError
	if !errors.As(err, &verr) || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a name the certificate does not cover: %v, want a verification error", err)
	}
}
