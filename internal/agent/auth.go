package agent

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net"
	"net/http"
	"strings"
)

// TCPPort is where an agent serving over TCP (a Pod, reached at its Pod IP)
// listens. Its own port is never one of the sandbox's (see handlePorts).
const TCPPort = 7070

// minTokenLen is the shortest credential an agent accepts: 32 bytes of
// entropy as hex.
const minTokenLen = 32

// requireToken refuses, with 401 and nothing else, every request that does
// not carry token as a bearer credential. The comparison is constant-time
// over digests, so neither the content nor the length leaks through timing.
func requireToken(token string, next http.Handler) http.Handler {
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		sum := sha256.Sum256([]byte(got))
		if !ok || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":{"code":"unauthorized","message":"agent credential required"}}` + "\n"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// bearer adds the agent credential to every request of a client.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// CloseIdleConnections lets Client.Close reach the pooled connections.
func (b bearer) CloseIdleConnections() {
	if c, ok := b.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// TCPClient returns a client for an agent serving over TCP at addr
// (host:port) that requires token. The credential travels in the clear on
// the cluster's Pod network; see docs/ARCHITECTURE.md for why that is
// acceptable and what would change it.
func TCPClient(addr, token string) *Client {
	var d net.Dialer
	c := NewClient(func(ctx context.Context) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", addr)
	})
	c.http.Transport = bearer{token: token, next: c.http.Transport}
	return c
}
