package source

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport/client"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
)

// Address ranges a source fetch may never reach, and those it may reach
// only when private addresses are allowed.
var (
	alwaysBlocked = []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/8"),         // "this network"
		netip.MustParsePrefix("169.254.0.0/16"),    // link-local, cloud metadata
		netip.MustParsePrefix("224.0.0.0/4"),       // multicast
		netip.MustParsePrefix("240.0.0.0/4"),       // reserved, broadcast
		netip.MustParsePrefix("fe80::/10"),         // link-local
		netip.MustParsePrefix("ff00::/8"),          // multicast
		netip.MustParsePrefix("::/128"),            // unspecified
		netip.MustParsePrefix("64:ff9b::/96"),      // NAT64: would reach any IPv4 address, blocked ones too
		netip.MustParsePrefix("fd00:ec2::254/128"), // EC2 metadata over IPv6
	}
	privateRanges = []netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"),
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("172.16.0.0/12"),
		netip.MustParsePrefix("192.168.0.0/16"),
		netip.MustParsePrefix("100.64.0.0/10"), // carrier-grade NAT
		netip.MustParsePrefix("198.18.0.0/15"), // benchmarking
		netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("fc00::/7"), // unique local
	}
)

// guard decides which addresses a fetch may connect to.
type guard struct {
	allowPrivate bool
	allow, deny  []netip.Prefix
}

// check returns a *blockedError when addr may not be reached.
func (g *guard) check(addr netip.Addr) error {
	addr = addr.Unmap()
	in := func(ps []netip.Prefix) bool {
		for _, p := range ps {
			if p.Contains(addr) {
				return true
			}
		}
		return false
	}
	switch {
	case !addr.IsValid():
		return &blockedError{addr: "an invalid address", reason: "not an IP address"}
	case in(g.deny):
		return &blockedError{addr: addr.String(), reason: "the address is in a denied range (the sandbox network)"}
	case in(alwaysBlocked) || addr.IsLinkLocalUnicast() || addr.IsMulticast() || addr.IsUnspecified():
		return &blockedError{addr: addr.String(), reason: "link-local, metadata, multicast and reserved addresses are never reachable"}
	case g.allowPrivate || in(g.allow):
		return nil
	case in(privateRanges) || addr.IsLoopback() || addr.IsPrivate():
		return &blockedError{addr: addr.String(), reason: "loopback and private addresses are not allowed (paddock serve --source-allow-private)"}
	}
	return nil
}

// control runs right before connect(2) with the resolved address, so what
// is checked is what is dialled: no DNS rebinding between check and use.
func (g *guard) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &blockedError{addr: address, reason: "not an IP address and port"}
	}
	return g.check(ap.Addr())
}

// httpTransport is a Fetcher's own HTTP transport: its dialer runs the
// guard, it uses no proxy from the environment (a proxy would be dialled
// instead of the source and make the guard moot), and it bounds the wait
// for headers.
type httpTransport struct {
	t *http.Transport
}

func newHTTPTransport(g *guard) *httpTransport {
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: g.control}
	return &httpTransport{t: &http.Transport{
		Proxy:                  nil,
		DialContext:            d.DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           16,
		IdleConnTimeout:        60 * time.Second,
		TLSHandshakeTimeout:    15 * time.Second,
		ResponseHeaderTimeout:  2 * time.Minute,
		MaxResponseHeaderBytes: 64 << 10,
	}}
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

var installOnce sync.Once

// installGitTransport replaces go-git's http and https transports, once and
// before any fetch reads the registry (New calls it).
func installGitTransport() {
	installOnce.Do(func() {
		c := githttp.NewClient(&http.Client{Transport: dispatch{}})
		client.InstallProtocol("http", c)
		client.InstallProtocol("https", c)
		// No git:// or ssh://: they dial without the guard.
		client.InstallProtocol("git", nil)
		client.InstallProtocol("ssh", nil)
	})
}
