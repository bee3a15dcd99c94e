package proxy

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// fakeResolver knows sandboxes by id.
type fakeResolver struct {
	mu      sync.Mutex // guards targets
	targets map[string]Target
}

var _ Resolver = (*fakeResolver)(nil)

func (f *fakeResolver) Lookup(_ context.Context, id string) (Target, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.targets[id]
	if !ok {
		return Target{}, sandbox.Errorf(sandbox.ErrNotFound, "sandbox_not_found", "no sandbox %s", id)
	}
	return t, nil
}

func (f *fakeResolver) set(id string, t Target) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.targets == nil {
		f.targets = map[string]Target{}
	}
	f.targets[id] = t
}

// fakeAuthorizer maps owner tokens to the one sandbox each owns.
type fakeAuthorizer struct{ owners map[string]string }

var _ Authorizer = fakeAuthorizer{}

func (f fakeAuthorizer) Authorize(_ context.Context, token, id string) error {
	owned, ok := f.owners[token]
	switch {
	case !ok:
		return sandbox.Errorf(sandbox.ErrUnauthorized, "invalid_token", "unknown token")
	case owned != id:
		return sandbox.Errorf(sandbox.ErrForbidden, "not_owner", "not the owner of %s", id)
	}
	return nil
}

// activityLog counts Activity calls per sandbox.
type activityLog struct {
	mu     sync.Mutex // guards counts
	counts map[string]int
}

func (a *activityLog) record(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.counts == nil {
		a.counts = map[string]int{}
	}
	a.counts[id]++
}

func (a *activityLog) count(id string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.counts[id]
}

// harness is a proxy served on loopback the way paddock's main server will
// serve it: hosts under the domain go to the proxy, /s/ to PathHandler,
// everything else to "the API" (a 418 here).
type harness struct {
	tb        testing.TB
	clock     *fake.Clock
	signer    *Signer
	resolver  *fakeResolver
	activity  *activityLog
	proxy     *Proxy
	proxyAddr string
	proxyPort string
	client    *http.Client // HTTP/1.1, every dial goes to the proxy
	h2c       *http.Client // HTTP/2 without TLS, every dial goes to the proxy
}

const testOwnerToken = "pdk_owner"

func newHarness(tb testing.TB, configure ...func(*http.Server)) *harness {
	tb.Helper()
	h := &harness{
		tb:       tb,
		clock:    fake.NewClock(time.Now()),
		resolver: &fakeResolver{},
		activity: &activityLog{},
	}
	h.signer = &Signer{Key: testKey, Now: h.clock.Now}
	p, err := New(Config{
		Domain:     "localhost",
		Signer:     h.signer,
		Resolver:   h.resolver,
		Authorizer: fakeAuthorizer{owners: map[string]string{testOwnerToken: "owned"}},
		Activity:   h.activity.record,
		Logger:     slog.New(slog.DiscardHandler),
	})
	if err != nil {
		tb.Fatal(err)
	}
	h.proxy = p
	tb.Cleanup(func() { _ = p.Close() })

	mux := http.NewServeMux()
	mux.Handle("/s/", p.PathHandler())
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if p.HandlesHost(r.Host) {
				p.ServeHTTP(w, r)
				return
			}
			mux.ServeHTTP(w, r)
		}),
		Protocols:         &protocols,
		ReadHeaderTimeout: 5 * time.Second,
	}
	for _, f := range configure {
		f(srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	h.proxyAddr = ln.Addr().String()
	_, h.proxyPort, _ = net.SplitHostPort(h.proxyAddr)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	tb.Cleanup(func() {
		_ = srv.Close()
		<-done
	})

	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", h.proxyAddr)
	}
	t1 := &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 64, DisableCompression: true}
	var h2only http.Protocols
	h2only.SetUnencryptedHTTP2(true)
	t2 := &http.Transport{DialContext: dial, Protocols: &h2only, DisableCompression: true}
	tb.Cleanup(t1.CloseIdleConnections)
	tb.Cleanup(t2.CloseIdleConnections)
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	h.client = &http.Client{Transport: t1, CheckRedirect: noRedirect}
	h.h2c = &http.Client{Transport: t2, CheckRedirect: noRedirect}
	return h
}

// backend is a sandbox app on loopback.
type backend struct {
	id       string
	port     int
	requests atomic.Int64
}

// addBackend serves handler on 127.0.0.1 as port `port of sandbox id`, declared
// with the given exposure, and registers it with the resolver.
func (h *harness) addBackend(id string, public bool, handler http.Handler) *backend {
	h.tb.Helper()
	b := &backend{id: id}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.requests.Add(1)
		handler.ServeHTTP(w, r)
	}))
	h.tb.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	b.port, _ = strconv.Atoi(u.Port())
	h.resolver.set(id, Target{
		Addr:    netip.MustParseAddr("127.0.0.1"),
		Running: true,
		Ports:   map[int]PortConfig{b.port: {Public: public}},
	})
	return b
}

// url is the host-form URL of path on port of sandbox id, through the proxy.
func (h *harness) url(id string, port int, path string) string {
	return "http://" + strconv.Itoa(port) + "-" + id + ".localhost:" + h.proxyPort + path
}

// pathURL is the path-form URL of rest on port of sandbox id.
func (h *harness) pathURL(id string, port int, rest string) string {
	return "http://" + h.proxyAddr + PathPrefix(id, port) + rest
}

func (h *harness) token(id string, port int) string { return h.signer.Sign(id, port, time.Minute) }
