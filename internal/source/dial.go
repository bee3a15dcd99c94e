package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/go-git/go-git/v5/plumbing/transport/client"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"

	"github.com/paddock-dev/paddock/internal/netguard"
)

// httpTransport is a Fetcher's own HTTP transport: netguard's, whose
// dialer runs the guard and which uses no proxy from the environment.
type httpTransport struct {
	t *http.Transport
}

func newHTTPTransport(g netguard.Guard) *httpTransport {
	return &httpTransport{t: g.Transport()}
}

// fetchKey carries a fetch's state in the contexts of go-git's requests.
type fetchKey struct{}

// fetchState is one fetch's: the transport to use and the bytes it may
// still download.
type fetchState struct {
	t      *httpTransport
	budget atomic.Int64
	limit  int64
}

func withFetch(ctx context.Context, t *httpTransport, limit int64) context.Context {
	st := &fetchState{t: t, limit: limit}
	st.budget.Store(limit)
	return context.WithValue(ctx, fetchKey{}, st)
}

var errNotInFetch = errors.New("source: go-git HTTP request outside a source fetch refused")

// dispatch is go-git's http(s) transport for the whole process: it sends
// each request through the transport of the fetch that made it.
type dispatch struct{}

func (dispatch) RoundTrip(req *http.Request) (*http.Response, error) {
	st, _ := req.Context().Value(fetchKey{}).(*fetchState)
	if st == nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, errNotInFetch
	}
	resp, err := st.t.t.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = &budgetBody{ReadCloser: resp.Body, st: st}
	return resp, nil
}

// budgetBody fails a read once the fetch has downloaded more than its cap,
// so a server streaming an endless pack cannot fill the host's disk.
type budgetBody struct {
	io.ReadCloser
	st *fetchState
}

func (b *budgetBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if b.st.budget.Add(-int64(n)) < 0 {
		return n, tooLarge("download", b.st.limit)
	}
	return n, err
}

// checkRedirect is the redirect policy of every source fetch: at most 10,
// http(s) only, and the source's credentials only to where they were sent.
// net/http keeps Authorization on a redirect to the same host name whatever
// the port or scheme, so another service on that host, or a downgrade to
// plain HTTP, would get them.
func checkRedirect(r *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("more than 10 redirects")
	}
	if r.URL.Scheme != "http" && r.URL.Scheme != "https" {
		return fmt.Errorf("redirect to scheme %q refused", r.URL.Scheme)
	}
	if orig := via[0].URL; r.URL.Scheme != orig.Scheme || r.URL.Host != orig.Host {
		r.Header.Del("Authorization")
	}
	return nil
}

var installOnce sync.Once

// installGitTransport replaces go-git's http and https transports, once and
// before any fetch reads the registry (New calls it).
func installGitTransport() {
	installOnce.Do(func() {
		c := githttp.NewClient(&http.Client{Transport: dispatch{}, CheckRedirect: checkRedirect})
		client.InstallProtocol("http", c)
		client.InstallProtocol("https", c)
		// No git:// or ssh://: they dial without the guard.
		client.InstallProtocol("git", nil)
		client.InstallProtocol("ssh", nil)
	})
}
