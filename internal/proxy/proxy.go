// Package proxy serves sandbox ports as URLs: https://<port>-<id>.<domain>/
// (or /s/<id>/<port>/ on the API's own host) reaches port on the sandbox's
// address. Ports are private unless declared public; a private port opens
// with a signed, expiring token (Signer) or the owner's API token (through
// an Authorizer the caller supplies). Credentials are checked here and
// removed before forwarding, so the app in the sandbox never sees them.
//
// Forwarding is httputil.ReverseProxy with Rewrite: streamed (SSE, large
// bodies, WebSocket upgrades), over HTTP/1.1 or HTTP/2 from clients, and
// HTTP/1.1 to the sandbox. Which sandboxes exist, where they are and who
// owns them is the caller's business (Resolver, Authorizer), so this
// package imports only sandbox kinds and wire types.
package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Names under which a port token may arrive. All three are removed from the
// request before it is forwarded.
const (
	TokenParam  = "paddock_token"   // query parameter of a signed URL
	TokenHeader = "X-Paddock-Token" // header, for programs
	TokenCookie = "paddock_token"   // cookie the proxy sets after a valid query token
)

// Defaults for Config's zero durations.
const (
	DefaultIdleTimeout = 90 * time.Second
	DefaultDialTimeout = 3 * time.Second
	DefaultCookieTTL   = time.Hour
)

// PortConfig is how one declared port is exposed.
type PortConfig struct {
	// Public ports need no credentials.
	Public bool
}

// Target is where a sandbox's ports are, as the caller knows it now.
type Target struct {
	// Addr is the sandbox's address as the host reaches it (its veth end).
	Addr netip.Addr
	// Running is false for a sandbox that exists but is stopped or starting.
	Running bool
	// Ports are the declared ports; any other port is refused with 404.
	Ports map[int]PortConfig
}

// Resolver finds a sandbox. Lookup returns an error wrapping
// sandbox.ErrNotFound for an unknown sandbox. It is called on every request,
// so it should answer from memory.
type Resolver interface {
	Lookup(ctx context.Context, sandboxID string) (Target, error)
}

// Authorizer checks the owner's API token for a sandbox: nil if bearerToken
// may open sandboxID's ports, an error wrapping sandbox.ErrUnauthorized
// (unknown token) or sandbox.ErrForbidden (not the owner) otherwise.
type Authorizer interface {
	Authorize(ctx context.Context, bearerToken, sandboxID string) error
}

// Config configures a Proxy.
type Config struct {
	// Domain is the parent of the port hosts: "sandbox.example.com" serves
	// "3000-sb-abc.sandbox.example.com"; "localhost" works locally. Empty
	// disables the host form (only PathHandler serves).
	Domain string
	// Signer checks port tokens. Required.
	Signer *Signer
	// Resolver finds sandboxes. Required.
	Resolver Resolver
	// Authorizer checks owners' bearer tokens; nil accepts none.
	Authorizer Authorizer
	// Activity is called with the sandbox id for every request forwarded,
	// to feed idle timeouts. It runs on the request's goroutine: keep it
	// cheap and non-blocking. Optional.
	Activity func(sandboxID string)
	// Logger receives the proxy's logs; nil means slog.Default().
	Logger *slog.Logger
	// IdleTimeout is how long an unused connection to a sandbox stays
	// pooled (default DefaultIdleTimeout). It never bounds a request in
	// flight: SSE and WebSocket streams live as long as both ends do.
	IdleTimeout time.Duration
	// DialTimeout bounds connecting to a sandbox port (default
	// DefaultDialTimeout): a local veth answers at once or not at all.
	DialTimeout time.Duration
	// CookieTTL caps the life of the cookie a valid query token sets
	// (default DefaultCookieTTL); it never outlives the token.
	CookieTTL time.Duration
	// SecureCookies marks the token cookie Secure: set it when the public
	// URL is https, as behind a TLS-terminating front proxy the request
	// itself arrives as plain HTTP.
	SecureCookies bool
}

// Validate reports the first problem with c.
func (c Config) Validate() error {
	switch {
	case c.Signer == nil:
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "proxy: a Signer is required")
	case len(c.Signer.Key) < MinKeyLen:
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "proxy: the signing key needs at least %d bytes", MinKeyLen)
	case c.Resolver == nil:
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "proxy: a Resolver is required")
	case strings.ContainsAny(c.Domain, ":/ "):
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "proxy: domain %q must be a bare host name, without scheme or port", c.Domain)
	case c.IdleTimeout < 0 || c.DialTimeout < 0 || c.CookieTTL < 0:
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "proxy: durations must not be negative")
	}
	return nil
}

// Proxy forwards requests for sandbox ports. It is an http.Handler for the
// host form; PathHandler serves the path form.
type Proxy struct {
	domain     string
	signer     *Signer
	resolver   Resolver
	authorizer Authorizer
	activity   func(string)
	cookieTTL  time.Duration
	secure     bool // SecureCookies
	log        *slog.Logger
	transport  *http.Transport
	rp         *httputil.ReverseProxy
}

var _ http.Handler = (*Proxy)(nil)

// New builds a Proxy from cfg.
func New(cfg Config) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Proxy{
		domain:     NormalizeDomain(cfg.Domain),
		signer:     cfg.Signer,
		resolver:   cfg.Resolver,
		authorizer: cfg.Authorizer,
		activity:   cfg.Activity,
		cookieTTL:  cmp.Or(cfg.CookieTTL, DefaultCookieTTL),
		secure:     cfg.SecureCookies,
		log:        cfg.Logger,
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	p.transport = NewTransport(cmp.Or(cfg.IdleTimeout, DefaultIdleTimeout), cmp.Or(cfg.DialTimeout, DefaultDialTimeout))
	p.rp = NewReverseProxy(rewrite, p.transport, p.log, func(w http.ResponseWriter, r *http.Request, err error) {
		f := r.Context().Value(forwardKey{}).(*forward)
		p.writeError(w, r, f.sandboxID, upstreamError(r.Context(), f.sandboxID, f.port, err))
	}, func(resp *http.Response) error {
		f := resp.Request.Context().Value(forwardKey{}).(*forward)
		FilterResponse(resp, f.prefix != "")
		return nil
	})
	return p, nil
}

// NewReverseProxy is the forwarding the port proxy and the app proxy share.
// modify filters every response of sandbox code (see FilterResponse).
func NewReverseProxy(rewrite func(*httputil.ProxyRequest), t *http.Transport, log *slog.Logger,
	onError func(http.ResponseWriter, *http.Request, error), modify func(*http.Response) error) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite:        rewrite,
		ModifyResponse: modify,
		Transport:      t,
		// Flush every write: SSE events and streamed bodies reach the client
		// as the upstream writes them, not when a buffer fills.
		FlushInterval: -1,
		BufferPool:    newBufferPool(),
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandler:  onError,
	}
}

// NewTransport is tuned for many sandboxes on one host: small idle pools per
// sandbox port, a short dial (the veth is local), and no response-header or
// overall timeout, which would cut long polls and SSE streams that send
// their headers late. Environment proxies are never used: sandbox addresses
// are host-local.
func NewTransport(idle, dial time.Duration) *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: dial, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       idle,
		ExpectContinueTimeout: time.Second,
		// Bodies pass through as the app encoded them; the transport must
		// not ask for gzip and unpack it behind the client's back.
		DisableCompression: true,
		// Read and write buffers stay at their 4 KiB defaults: idle pooled
		// connections to hundreds of sandboxes would otherwise pin memory,
		// and bodies bypass them anyway since BufferPool's 64 KiB copy
		// buffers are larger.
	}
}

// Close drops pooled connections to sandboxes. Requests in flight belong to
// the http.Server serving the proxy and end with it.
func (p *Proxy) Close() error {
	p.transport.CloseIdleConnections()
	return nil
}

// HandlesHost reports whether host (with or without :port) is under the
// proxy's domain, so the main server can send every *.domain request here
// and everything else to the API. Malformed names under the domain are
// included: the proxy answers them with 404 rather than the API.
func (p *Proxy) HandlesHost(host string) bool {
	_, ok := Subdomain(host, p.domain)
	return ok
}

// ServeHTTP serves the host form: <port>-<id>.<domain>.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, port, ok := ParseHost(r.Host, p.domain)
	if !ok {
		p.writeError(w, r, "", errUnknownHost)
		return
	}
	p.serve(w, r, &forward{sandboxID: id, port: port, cookiePath: "/"})
}

// PathHandler serves the path form /s/<id>/<port>/rest, forwarding /rest.
// Mount it at "/s/" on the API's mux. The app sees the prefix in
// X-Forwarded-Prefix.
//
// The path form shares the API's origin with whatever the sandbox serves,
// so it suits APIs and tools more than untrusted web pages; prefer the host
// form for browsers.
func (p *Proxy) PathHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, port, _, ok := ParsePath(r.URL.Path)
		if !ok {
			p.writeError(w, r, "", errBadPath)
			return
		}
		if err := RefuseServiceWorker(r); err != nil {
			p.writeError(w, r, id, err)
			return
		}
		prefix := PathPrefix(id, port)
		if r.URL.Path == prefix {
			// Relative links in the app resolve against the last slash: send
			// the browser to the directory form first, as http.ServeMux does.
			target := prefix + "/"
			if r.URL.RawQuery != "" {
				target += "?" + r.URL.RawQuery
			}
			http.Redirect(w, r, target, http.StatusTemporaryRedirect)
			return
		}
		p.serve(w, r, &forward{sandboxID: id, port: port, prefix: prefix, cookiePath: prefix + "/"})
	})
}

// forward is what one request is forwarded with; it rides in the request's
// context from serve to rewrite and the error handler.
type forward struct {
	sandboxID  string
	port       int
	prefix     string // path-form prefix to strip; "" for the host form
	cookiePath string
	addr       netip.AddrPort
}

type forwardKey struct{}

// serve checks access and forwards. Without credentials, an unknown
// sandbox or undeclared port answers 401 like any private port, so nobody
// can probe which sandboxes exist; with valid credentials it answers 404.
func (p *Proxy) serve(w http.ResponseWriter, r *http.Request, f *forward) {
	ctx := r.Context()
	target, lookupErr := p.resolver.Lookup(ctx, f.sandboxID)
	if lookupErr != nil && !errors.Is(lookupErr, sandbox.ErrNotFound) {
		p.writeError(w, r, f.sandboxID, fmt.Errorf("look up sandbox %s: %w", f.sandboxID, lookupErr))
		return
	}
	pc, declared := target.Ports[f.port]
	if lookupErr != nil || !declared || !pc.Public {
		if err := p.authorize(w, r, f); err != nil {
			p.writeError(w, r, f.sandboxID, err)
			return
		}
		// A private port's cookie must not serve another origin's forms.
		if err := CheckSameOrigin(r); err != nil {
			p.writeError(w, r, f.sandboxID, err)
			return
		}
	}
	switch {
	case lookupErr != nil:
		p.writeError(w, r, f.sandboxID, sandbox.Errorf(sandbox.ErrNotFound, "sandbox_not_found", "no sandbox %s", f.sandboxID))
		return
	case !declared:
		p.writeError(w, r, f.sandboxID, sandbox.Errorf(sandbox.ErrNotFound, "port_not_found",
			"sandbox %s does not declare port %d", f.sandboxID, f.port))
		return
	case !target.Running:
		p.writeError(w, r, f.sandboxID, sandbox.Errorf(sandbox.ErrUnavailable, "sandbox_not_running",
			"sandbox %s is not running", f.sandboxID))
		return
	case !target.Addr.IsValid():
		p.writeError(w, r, f.sandboxID, sandbox.Errorf(sandbox.ErrUnavailable, "sandbox_unreachable",
			"sandbox %s has no network address", f.sandboxID))
		return
	}
	f.addr = netip.AddrPortFrom(target.Addr, uint16(f.port))
	if p.activity != nil {
		p.activity(f.sandboxID)
	}
	ClearDeadlines(w)
	p.rp.ServeHTTP(w, r.WithContext(context.WithValue(ctx, forwardKey{}, f)))
}

// ClearDeadlines lifts the read and write timeouts the main server may
// carry, sized for API calls: a proxied stream (SSE, WebSocket, a large
// upload or download) must outlive them. Headers are already read, so
// slow-header attacks are still bounded. Unsupported writers (tests'
// recorders) just keep theirs.
func ClearDeadlines(w http.ResponseWriter) {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
}

// authorize admits a request to a private port. Explicit credentials come
// first (the query token, then the header token, then the owner's bearer
// token); the cookie, which a browser sends whether or not it is current,
// counts only when nothing explicit is given. A valid query token also sets
// the cookie, so the browser's next requests (assets, EventSource) need no
// token in their URLs.
func (p *Proxy) authorize(w http.ResponseWriter, r *http.Request, f *forward) error {
	if token := r.URL.Query().Get(TokenParam); token != "" {
		exp, err := p.signer.VerifyExpiry(token, f.sandboxID, f.port)
		if err != nil {
			return err
		}
		SetTokenCookie(w, r, p.signer, p.cookieTTL, p.secure, f.sandboxID, f.port, f.cookiePath, exp)
		return nil
	}
	if token := r.Header.Get(TokenHeader); token != "" {
		return p.signer.Verify(token, f.sandboxID, f.port)
	}
	if bearer, ok := bearerToken(r.Header.Get("Authorization")); ok && p.authorizer != nil {
		if err := p.authorizer.Authorize(r.Context(), bearer, f.sandboxID); err != nil {
			return fmt.Errorf("authorize owner of sandbox %s: %w", f.sandboxID, err)
		}
		return nil
	}
	if c, err := r.Cookie(TokenCookie); err == nil && c.Value != "" {
		return p.signer.Verify(c.Value, f.sandboxID, f.port)
	}
	return errUnauthenticated
}

// SetTokenCookie sets a host-only cookie holding a fresh token for id and
// port that lives for the shorter of the query token and ttl: a browser's
// next requests (assets, EventSource) then need no token in their URLs.
func SetTokenCookie(w http.ResponseWriter, r *http.Request, s *Signer, ttl time.Duration, secure bool, id string, port int, path string, tokenExp time.Time) {
	now := s.now()
	exp := now.Add(ttl)
	if tokenExp.Before(exp) {
		exp = tokenExp
	}
	http.SetCookie(w, &http.Cookie{
		Name:     TokenCookie,
		Value:    s.signUntil(id, port, exp),
		Path:     path,
		Expires:  exp,
		MaxAge:   max(1, int(exp.Sub(now).Seconds())),
		HttpOnly: true,
		Secure:   secure || r.TLS != nil,
		SameSite: http.SameSiteLaxMode,
	})
}

func bearerToken(h string) (string, bool) {
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// rewrite builds the outbound request. ReverseProxy has already removed
// hop-by-hop and client-sent X-Forwarded-* headers from pr.Out.
func rewrite(pr *httputil.ProxyRequest) {
	f := pr.In.Context().Value(forwardKey{}).(*forward)
	StripPathPrefix(pr, f.prefix)
	pr.SetURL(&url.URL{Scheme: "http", Host: f.addr.String()})
	pr.SetXForwarded()
	pr.Out.URL.RawQuery = StripQueryParam(pr.Out.URL.RawQuery, TokenParam)
	StripCredentials(pr.Out.Header)
	pr.Out.Body = NewForwardBody(pr.Out.Body)
}

// StripCredentials removes every credential a client may send to paddock
// from headers bound for sandbox code, on every port, public or not. Which
// credential opened the port does not matter: a client that followed a
// redirect from one sandbox to another on the API's origin still carries
// the bearer token it meant for paddock, and the next sandbox must never
// see it. Apps behind the proxies authenticate with headers of their own.
func StripCredentials(h http.Header) {
	h.Del("Authorization")
	h.Del("Proxy-Authorization")
	h.Del(TokenHeader)
	stripCookie(h, TokenCookie)
}

// forwardBody is an inbound request body as the transport reads it to send
// it on. Once it has returned io.EOF it keeps answering io.EOF without
// touching the inbound body again. The HTTP/1 server drains and closes an
// inbound body when the response's headers are written, and the transport,
// having sent the declared length, reads once more to check for excess: if
// the upstream answered quickly (a streamed reply to a POST), that read
// lands on the closed body, the request write fails and the transport
// closes the connection, cutting the response already streaming back on it
// (golang/go#40747). One goroutine (the transport's) reads it.
type forwardBody struct {
	rc  io.ReadCloser
	eof bool
}

// NewForwardBody wraps rc; nil and http.NoBody stay as they are, so the
// transport still sees a request without a body.
func NewForwardBody(rc io.ReadCloser) io.ReadCloser {
	if rc == nil || rc == http.NoBody {
		return rc
	}
	return &forwardBody{rc: rc}
}

func (b *forwardBody) Read(p []byte) (int, error) {
	if b.eof {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *forwardBody) Close() error { return b.rc.Close() }

// StripPathPrefix removes a path form's prefix from the outbound path,
// which the upstream then sees in X-Forwarded-Prefix; "" (the host form)
// leaves the path alone and drops a client-sent X-Forwarded-Prefix, which
// Rewrite does not remove and apps trust to build their links.
func StripPathPrefix(pr *httputil.ProxyRequest, prefix string) {
	if prefix == "" {
		pr.Out.Header.Del("X-Forwarded-Prefix")
		return
	}
	u := pr.Out.URL
	u.Path = "/" + strings.TrimPrefix(strings.TrimPrefix(u.Path, prefix), "/")
	if u.RawPath != "" {
		u.RawPath = "/" + strings.TrimPrefix(strings.TrimPrefix(u.RawPath, prefix), "/")
	}
	pr.Out.Header.Set("X-Forwarded-Prefix", prefix)
}

// StripQueryParam removes every name=... pair from a raw query, leaving the
// others byte for byte as the client sent them.
func StripQueryParam(raw, name string) string {
	if raw == "" {
		return raw
	}
	parts := strings.Split(raw, "&")
	kept := parts[:0]
	for _, part := range parts {
		key, _, _ := strings.Cut(part, "=")
		if k, err := url.QueryUnescape(key); err == nil && k == name {
			continue
		}
		kept = append(kept, part)
	}
	return strings.Join(kept, "&")
}

// stripCookie removes the named cookie from every Cookie header (HTTP/2
// clients send one per cookie) and keeps the rest as sent.
func stripCookie(h http.Header, name string) {
	vals := h.Values("Cookie")
	if len(vals) == 0 {
		return
	}
	h.Del("Cookie")
	for _, v := range vals {
		var kept []string
		for part := range strings.SplitSeq(v, ";") {
			part = strings.TrimSpace(part)
			if k, _, _ := strings.Cut(part, "="); part == "" || k == name {
				continue
			}
			kept = append(kept, part)
		}
		if len(kept) > 0 {
			h.Add("Cookie", strings.Join(kept, "; "))
		}
	}
}

// bufferPool lends ReverseProxy 64 KiB copy buffers, so each streamed
// response does not allocate its own.
type bufferPool struct{ pool sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{pool: sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}}
}

func (b *bufferPool) Get() []byte  { return *b.pool.Get().(*[]byte) }
func (b *bufferPool) Put(p []byte) { b.pool.Put(&p) }
