package httperr

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Replicas that share a store serve each other's sandboxes: a request that
// names a sandbox another replica runs fails here with a
// *sandbox.ElsewhereError, and Forward hands it to that replica whole, as
// the client sent it. The owner authenticates it and checks the team
// itself, so replicas trust each other with nothing new.

// ForwardedBy is the header a replica adds to a request it forwards, with
// its own name. A request that carries it is never forwarded again: two
// replicas that each think the other runs a sandbox answer 503
// "sandbox_replica_loop" instead of passing it back and forth.
const ForwardedBy = "Paddock-Forwarded-By"

// forwardTransport dials the other replicas. No proxy from the
// environment: replicas reach each other directly.
var forwardTransport = &http.Transport{
	DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	MaxIdleConnsPerHost:   16,
	IdleConnTimeout:       90 * time.Second,
	TLSHandshakeTimeout:   10 * time.Second,
	ExpectContinueTimeout: time.Second,
}

// hop is what Forwarding learns of a request for Forward.
type hop struct {
	replica string // this replica's name, for ForwardedBy
	log     *slog.Logger
	body    *trackedBody // nil when the request has no body
	url     url.URL      // the request's URL as it came in, before any prefix was stripped
	method  string
}

type hopKey struct{}

// same reports whether r is the request Forwarding saw, perhaps with a
// prefix stripped from its path, and not another one made in-process
// under its context (which would need a Forwarding of its own).
func (h *hop) same(r *http.Request) bool {
	return r.Method == h.method && strings.HasSuffix(h.url.Path, r.URL.Path)
}

// trackedBody is a request body that knows whether anyone read it: one
// read begun, the request can no longer go elsewhere whole.
type trackedBody struct {
	body interface {
		Read([]byte) (int, error)
		Close() error
	}
	read atomic.Bool
}

func (b *trackedBody) Read(p []byte) (int, error) {
	b.read.Store(true)
	return b.body.Read(p)
}

func (b *trackedBody) Close() error { return b.body.Close() }

// Forwarding makes the requests of next forwardable by Forward: it notes
// the request's URL and this replica's name, and watches its body. The
// daemon wraps its whole front with it.
func Forwarding(replica string, log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := &hop{replica: replica, log: log, url: *r.URL, method: r.Method}
		if r.Body != nil && r.Body != http.NoBody {
			h.body = &trackedBody{body: r.Body}
			r.Body = h.body
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), hopKey{}, h)))
	})
}

// loopError is an ElsewhereError met by a request another replica
// forwarded already.
type loopError struct{ *sandbox.ElsewhereError }

func (e loopError) Unwrap() error {
	return &sandbox.Error{Kind: sandbox.ErrUnavailable, Code: "sandbox_replica_loop",
		Message: "sandbox " + e.ID + " was forwarded here by another replica, and this one does not run it either; try again later"}
}

// Forward answers r from the replica that runs the sandbox err names (a
// *sandbox.ElsewhereError with a URL) and reports true, when r can still
// go there whole: it came through Forwarding, nothing read its body yet,
// and no replica forwarded it already. Otherwise it reports false and the
// error to answer with: err, or for a forwarded request an error with code
// "sandbox_replica_loop". When the owner cannot be reached it writes
// nothing and reports false with an ElsewhereError that names no URL (503
// "sandbox_replica_unavailable"), so the caller answers in its surface's
// shape (E2B's, Vercel's, envd's), as for every other error. Every
// surface's error writer calls it first.
func Forward(w http.ResponseWriter, r *http.Request, err error) (bool, error) {
	var ee *sandbox.ElsewhereError
	if !errors.As(err, &ee) || ee.URL == "" {
		return false, err
	}
	if r.Header.Get(ForwardedBy) != "" {
		return false, loopError{ee}
	}
	h, _ := r.Context().Value(hopKey{}).(*hop)
	if h == nil || h.body != nil && h.body.read.Load() || !h.same(r) {
		return false, err
	}
	target, perr := url.Parse(ee.URL)
	if perr != nil || target.Scheme == "" || target.Host == "" {
		h.log.Error("replica advertises a bad URL", "replica", ee.Replica, "url", ee.URL, "sandbox", ee.ID)
		return false, &sandbox.ElsewhereError{ID: ee.ID, Replica: ee.Replica}
	}
	var failed error // set by ErrorHandler, before anything is written to w
	rp := &httputil.ReverseProxy{
		// No X-Forwarded-For (Rewrite drops the client's, and SetXForwarded
		// is not called): no replica uses a client's address for anything
		// (no rate limit, log or audit record carries it; limits go by
		// team), so the owner needs none. One that does must trust the
		// header only from a replica, which ForwardedBy cannot prove (a
		// client may send it): it would need the replicas' addresses or a
		// shared secret.
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = target.Scheme, target.Host
			pr.Out.URL.Path, pr.Out.URL.RawPath, pr.Out.URL.RawQuery = h.url.Path, h.url.RawPath, h.url.RawQuery
			pr.Out.Host = pr.In.Host // port URLs and compat hosts route on it
			pr.Out.Header.Set(ForwardedBy, h.replica)
		},
		Transport:     forwardTransport,
		FlushInterval: -1, // streamed output goes out as it comes
		// Called only before the owner's answer began: the caller writes
		// the error in its own shape.
		ErrorHandler: func(_ http.ResponseWriter, _ *http.Request, err error) { failed = err },
	}
	// The owner bounds the request as it would its own (streams live
	// long); this replica only relays it.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	rp.ServeHTTP(w, r)
	if failed == nil {
		return true, nil
	}
	if r.Context().Err() != nil {
		return true, nil // the client went away: nobody to answer
	}
	h.log.Warn("forward to replica failed", "replica", ee.Replica, "sandbox", ee.ID, "err", failed)
	return false, &sandbox.ElsewhereError{ID: ee.ID, Replica: ee.Replica}
}
