// Package app is the app proxy: a project's app (an agent server in its
// sandbox) reached through paddock, at /api/v1/projects/<id>/app/... (path
// form) or https://app-<id>.<domain>/... (host form). Unlike a sandbox port
// it is never public: the caller must own the project. The app trusts one
// shared secret header (X-Secret-Key for goose); the proxy removes whatever
// the client sent under that name and sets the project's own secret, so the
// secret never leaves paddock and a client cannot pick its own. It forwards
// with the port proxy's kit (internal/proxy) and is the one of the two that
// knows callers (internal/auth), so the port proxy, which node serves, does
// not.
package app

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
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/httperr"
	"github.com/paddock-dev/paddock/internal/proxy"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Defaults of Config.
const (
	// DefaultMaxBody bounds a request body to an app (goose accepts
	// 50 MiB on its reply routes).
	DefaultMaxBody = 50 << 20
	// DefaultActivityInterval is how often a long request (an SSE stream,
	// a WebSocket) counts as activity while it stays open.
	DefaultActivityInterval = 30 * time.Second
	// DefaultSecretHeader is the header goose reads its secret from; it
	// is stripped from client requests whatever header the project uses.
	DefaultSecretHeader = "X-Secret-Key"
)

// appHostPrefix starts the host form's label: app-<project id>. Sandbox
// port labels start with a digit, so the two never collide.
const appHostPrefix = "app-"

// appTokenPort is the port a project's signed token is bound to. Sandbox
// ports are 1-65535, so a token for a project's app opens no sandbox port,
// and a port token opens no app.
const appTokenPort = 0

// Target is where a project's app answers now. It mirrors
// internal/control's Target field for field, so the caller converts one
// into the other and this package need not import the control plane.
type Target struct {
	URL          *url.URL // http://<sandbox address>:<app port>
	SecretHeader string   // "" means DefaultSecretHeader
	Secret       string
	ActivationID string
}

// Resolver finds the app of projectID for caller p: an error wrapping
// sandbox.ErrNotFound when the project does not exist or p's team does not
// own it, sandbox.ErrUnavailable ("project_not_active") when it is not
// activated and ready. It is called on every request.
type Resolver func(ctx context.Context, p auth.Principal, projectID string) (Target, error)

// Config configures a Proxy.
type Config struct {
	// Resolve finds a project's app for a caller. Required.
	Resolve Resolver
	// Authenticate checks a request's own credentials (an API token or an
	// OIDC token in Authorization) for the host form, which the API's
	// middleware does not see. nil: the host form accepts signed tokens only.
	// The path form takes the principal the API put in the context.
	Authenticate func(r *http.Request) (auth.Principal, error)
	// Signer checks the host form's signed tokens (see Sign); nil
	// accepts none.
	Signer *proxy.Signer
	// Domain enables the host form app-<id>.<Domain>; "" disables it.
	Domain string
	// Touch records activity of an activation: on every request, and every
	// ActivityInterval while one stays open. Keep it cheap. Optional.
	Touch func(activationID string)
	// MaxBodyBytes bounds a request body (default DefaultMaxBody);
	// larger ones get 413.
	MaxBodyBytes int64
	// ActivityInterval: see Touch (default DefaultActivityInterval).
	ActivityInterval time.Duration
	// Logger receives the proxy's logs; nil means slog.Default().
	Logger *slog.Logger
	// IdleTimeout, DialTimeout, CookieTTL and SecureCookies are as in Config.
	IdleTimeout, DialTimeout, CookieTTL time.Duration
	SecureCookies                       bool
}

// Validate reports the first problem with c.
func (c Config) Validate() error {
	switch {
	case c.Resolve == nil:
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "app proxy: a Resolve func is required")
	case c.Signer != nil && len(c.Signer.Key) < proxy.MinKeyLen:
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "app proxy: the signing key needs at least %d bytes", proxy.MinKeyLen)
	case strings.ContainsAny(c.Domain, ":/ "):
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "app proxy: domain %q must be a bare host name", c.Domain)
	case c.MaxBodyBytes < 0 || c.ActivityInterval < 0 || c.IdleTimeout < 0 || c.DialTimeout < 0 || c.CookieTTL < 0:
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "app proxy: limits and durations must not be negative")
	}
	return nil
}

// Proxy forwards requests to projects' apps. It is an http.Handler for
// the host form; PathHandler serves the path form.
type Proxy struct {
	resolve   Resolver
	authn     func(*http.Request) (auth.Principal, error)
	signer    *proxy.Signer
	domain    string
	touch     func(string)
	maxBody   int64
	every     time.Duration
	cookieTTL time.Duration
	secure    bool // SecureCookies
	log       *slog.Logger
	transport *http.Transport
	rp        *httputil.ReverseProxy
}

var _ http.Handler = (*Proxy)(nil)

// New builds an Proxy from cfg.
func New(cfg Config) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Proxy{
		resolve:   cfg.Resolve,
		authn:     cfg.Authenticate,
		signer:    cfg.Signer,
		domain:    proxy.NormalizeDomain(cfg.Domain),
		touch:     cfg.Touch,
		maxBody:   cfg.MaxBodyBytes,
		every:     cmp.Or(cfg.ActivityInterval, DefaultActivityInterval),
		cookieTTL: cmp.Or(cfg.CookieTTL, proxy.DefaultCookieTTL),
		secure:    cfg.SecureCookies,
		log:       cfg.Logger,
	}
	if a.maxBody == 0 {
		a.maxBody = DefaultMaxBody
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	a.transport = proxy.NewTransport(cmp.Or(cfg.IdleTimeout, proxy.DefaultIdleTimeout), cmp.Or(cfg.DialTimeout, proxy.DefaultDialTimeout))
	a.rp = proxy.NewReverseProxy(rewrite, a.transport, a.log, func(w http.ResponseWriter, r *http.Request, err error) {
		f := r.Context().Value(appKey{}).(*appForward)
		if f.body != nil && f.body.exceeded() {
			a.writeError(w, r, f.projectID, &http.MaxBytesError{Limit: a.maxBody})
			return
		}
		a.writeError(w, r, f.projectID, upstreamError(r.Context(), f.projectID, err))
	}, func(resp *http.Response) error {
		f := resp.Request.Context().Value(appKey{}).(*appForward)
		proxy.FilterResponse(resp, f.prefix != "")
		return nil
	})
	return a, nil
}

// Close drops pooled connections to apps.
func (a *Proxy) Close() error {
	a.transport.CloseIdleConnections()
	return nil
}

// PathPrefix is the path form's prefix for a project, without the
// trailing slash: /api/v1/projects/<id>/app. The proxy strips it.
func PathPrefix(projectID string) string {
	return api.Prefix + "/projects/" + projectID + "/app"
}

// ParsePath extracts the project id from a path-form path and returns
// the rest to forward (always starting with "/").
func ParsePath(path string) (projectID, rest string, ok bool) {
	s, ok := strings.CutPrefix(path, api.Prefix+"/projects/")
	if !ok {
		return "", "", false
	}
	id, after, ok := strings.Cut(s, "/")
	if !ok || !validProjectID(id) {
		return "", "", false
	}
	after, ok = strings.CutPrefix(after, "app")
	if !ok || (after != "" && after[0] != '/') {
		return "", "", false
	}
	return id, "/" + strings.TrimPrefix(after, "/"), true
}

// ParseHost extracts the project id from a Host of the form
// app-<id>.<domain> (any :port ignored, case-insensitive).
func ParseHost(host, domain string) (projectID string, ok bool) {
	sub, ok := proxy.Subdomain(host, domain)
	if !ok || strings.Contains(sub, ".") {
		return "", false
	}
	id, ok := strings.CutPrefix(sub, appHostPrefix)
	if !ok || !sandbox.ValidID(id) {
		return "", false
	}
	return id, true
}

// RouteFor is the host-form URL of a project's app under baseURL (the
// proxy's public base, as for RouteFor): "http://localhost:7420" gives
// "http://app-<id>.localhost:7420/".
func RouteFor(projectID, baseURL string) (string, error) {
	if !sandbox.ValidID(projectID) {
		return "", sandbox.Errorf(sandbox.ErrInvalid, "invalid_id", "project id %q cannot be a host name", projectID)
	}
	if !strings.Contains(baseURL, "://") {
		baseURL = "https://" + baseURL
	}
	u, err := url.Parse(baseURL)
	if err != nil || u.Hostname() == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", sandbox.Errorf(sandbox.ErrInvalid, "invalid_base_url", "proxy base URL %q is not an http(s) URL with a host", baseURL)
	}
	host := appHostPrefix + projectID + "." + strings.ToLower(strings.Trim(u.Hostname(), "."))
	if p := u.Port(); p != "" {
		host = net.JoinHostPort(host, p)
	}
	return (&url.URL{Scheme: u.Scheme, Host: host, Path: "/"}).String(), nil
}

// Sign returns a token that opens projectID's app (host form) for ttl.
func Sign(s *proxy.Signer, projectID string, ttl time.Duration) string {
	return s.Sign(projectID, appTokenPort, ttl)
}

// validProjectID accepts what can be one path segment of an id; the
// control plane decides whether it names a project.
func validProjectID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range []byte(id) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

// HandlesHost reports whether host is an app host (app-<id>.<domain>), so
// the front handler sends it here before the port proxy sees the domain.
func (a *Proxy) HandlesHost(host string) bool {
	if a.domain == "" {
		return false
	}
	sub, ok := proxy.Subdomain(host, a.domain)
	return ok && strings.HasPrefix(sub, appHostPrefix)
}

// appForward rides in the request's context from serve to rewrite and
// the error handler.
type appForward struct {
	projectID string
	prefix    string // path form prefix to strip; "" for the host form
	target    Target
	body      *limitedBody
}

type appKey struct{}

// PathHandler serves the path form, /api/v1/projects/<id>/app/... . Mount
// it behind the API's authentication: the caller is the principal in the
// request's context.
func (a *Proxy) PathHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _, ok := ParsePath(r.URL.Path)
		if !ok {
			a.writeError(w, r, "", sandbox.Errorf(sandbox.ErrNotFound, "project_not_found", "the path does not name a project's app: use %s/", PathPrefix("<id>")))
			return
		}
		p, ok := auth.FromContext(r.Context())
		if !ok {
			a.writeError(w, r, id, errUnauthenticated)
			return
		}
		if err := proxy.RefuseServiceWorker(r); err != nil {
			a.writeError(w, r, id, err)
			return
		}
		a.serve(w, r, p, &appForward{projectID: id, prefix: PathPrefix(id)})
	})
}

// ServeHTTP serves the host form, app-<id>.<domain>. Credentials, first
// match wins: a signed query token (which also sets a cookie), a signed
// X-Paddock-Token header, the caller's own bearer token, the cookie.
func (a *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, ok := ParseHost(r.Host, a.domain)
	if !ok || a.domain == "" {
		a.writeError(w, r, "", sandbox.Errorf(sandbox.ErrNotFound, "unknown_host", "the host does not name a project's app: use app-<project id>.<domain>"))
		return
	}
	p, err := a.hostPrincipal(w, r, id)
	if err != nil {
		a.writeError(w, r, id, err)
		return
	}
	a.serve(w, r, p, &appForward{projectID: id})
}

var errUnauthenticated = sandbox.Errorf(sandbox.ErrUnauthorized, "unauthenticated",
	"a project's app opens with the owner's Authorization: Bearer token or a signed URL (POST /api/v1/projects/<id>/app-url)")

// hostPrincipal authenticates a host-form request. A signed token names
// one project and no team: it stands for a host admin confined to that
// project, since the resolver is only ever asked about the project whose id
// the token's MAC covers.
func (a *Proxy) hostPrincipal(w http.ResponseWriter, r *http.Request, id string) (auth.Principal, error) {
	signed := auth.Principal{HostAdmin: true, Name: "signed-url:" + id}
	if token := r.URL.Query().Get(proxy.TokenParam); token != "" && a.signer != nil {
		exp, err := a.signer.VerifyExpiry(token, id, appTokenPort)
		if err != nil {
			return auth.Principal{}, err
		}
		proxy.SetTokenCookie(w, r, a.signer, a.cookieTTL, a.secure, id, appTokenPort, "/", exp)
		return signed, nil
	}
	if token := r.Header.Get(proxy.TokenHeader); token != "" && a.signer != nil {
		return signed, a.signer.Verify(token, id, appTokenPort)
	}
	if _, ok := auth.BearerToken(r.Header.Get("Authorization")); ok && a.authn != nil {
		p, err := a.authn(r)
		if err != nil {
			return auth.Principal{}, fmt.Errorf("authenticate the caller of project %s's app: %w", id, err)
		}
		return p, nil
	}
	if c, err := r.Cookie(proxy.TokenCookie); err == nil && c.Value != "" && a.signer != nil {
		return signed, a.signer.Verify(c.Value, id, appTokenPort)
	}
	return auth.Principal{}, errUnauthenticated
}

// serve resolves the project's app for p, bounds the body, records
// activity and forwards. The app trusts whatever arrives with the
// project's secret, so an unsafe request another origin's page made a
// browser send with the cookie is refused before it gets one.
func (a *Proxy) serve(w http.ResponseWriter, r *http.Request, p auth.Principal, f *appForward) {
	ctx := r.Context()
	if err := proxy.CheckSameOrigin(r); err != nil {
		a.writeError(w, r, f.projectID, err)
		return
	}
	t, err := a.resolve(ctx, p, f.projectID)
	switch {
	case sandbox.CodeOf(err) == "project_not_active":
		a.writeError(w, r, f.projectID, fmt.Errorf("%w: %w", sandbox.Errorf(sandbox.ErrUnavailable, "project_not_active",
			"project %s is not active: activate it (POST %s/projects/%s/activate) and retry", f.projectID, api.Prefix, f.projectID), err))
		return
	case err != nil:
		a.writeError(w, r, f.projectID, fmt.Errorf("resolve the app of project %s: %w", f.projectID, err))
		return
	case t.URL == nil || t.URL.Host == "":
		a.writeError(w, r, f.projectID, sandbox.Errorf(sandbox.ErrUnavailable, "project_not_active",
			"project %s has no reachable app yet: retry shortly", f.projectID))
		return
	}
	if t.SecretHeader == "" {
		t.SecretHeader = DefaultSecretHeader
	}
	f.target = t
	if r.ContentLength > a.maxBody {
		a.writeError(w, r, f.projectID, &http.MaxBytesError{Limit: a.maxBody})
		return
	}
	if r.Body != nil && r.Body != http.NoBody {
		f.body = &limitedBody{rc: proxy.NewForwardBody(r.Body), limit: a.maxBody, left: a.maxBody}
		r.Body = f.body
	}
	if a.touch != nil {
		a.touch(t.ActivationID)
		// A stream open for an hour is an hour of use, not one request:
		// keep the activation from idling out under it.
		stop := a.keepTouching(t.ActivationID)
		defer stop()
	}
	proxy.ClearDeadlines(w)
	a.rp.ServeHTTP(w, r.WithContext(context.WithValue(ctx, appKey{}, f)))
}

// keepTouching touches id every interval until the returned func is
// called; it then touches once more, as the request's end is activity too.
func (a *Proxy) keepTouching(id string) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // owned by the request: stop waits for it
		defer wg.Done()
		t := time.NewTicker(a.every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				a.touch(id)
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
		a.touch(id)
	}
}

// rewrite builds the outbound request. ReverseProxy has already removed
// hop-by-hop and client-sent X-Forwarded-* headers from pr.Out.
func rewrite(pr *httputil.ProxyRequest) {
	f := pr.In.Context().Value(appKey{}).(*appForward)
	proxy.StripPathPrefix(pr, f.prefix)
	pr.SetURL(f.target.URL)
	pr.SetXForwarded()
	h := pr.Out.Header
	// paddock's own credentials are for paddock: the app never sees them.
	proxy.StripCredentials(h)
	pr.Out.URL.RawQuery = proxy.StripQueryParam(pr.Out.URL.RawQuery, proxy.TokenParam)
	// Whatever the client sent as the app's secret is dropped, under the
	// project's header and goose's, then the project's own secret is set.
	h.Del(DefaultSecretHeader)
	h.Del(f.target.SecretHeader)
	if f.target.Secret != "" {
		h.Set(f.target.SecretHeader, f.target.Secret)
	}
}

// limitedBody fails reads past its limit with *http.MaxBytesError and
// remembers that it did, so the proxy answers 413 rather than 502. One
// goroutine reads (the transport's); over is read by the error handler.
type limitedBody struct {
	rc    io.ReadCloser
	limit int64
	left  int64
	over  atomic.Bool
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.over.Load() {
		return 0, &http.MaxBytesError{Limit: b.limit}
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.rc.Read(p)
	if int64(n) > b.left {
		b.over.Store(true)
		n, b.left = int(b.left), 0
		return n, &http.MaxBytesError{Limit: b.limit}
	}
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

func (b *limitedBody) exceeded() bool { return b.over.Load() }

// upstreamError classifies a transport error into a kind.
func upstreamError(ctx context.Context, projectID string, err error) error {
	var ne net.Error
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%w: %w", proxy.ErrClientClosed, err)
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("%w: %w", sandbox.Errorf(proxy.ErrGatewayTimeout, "upstream_timeout",
			"the app of project %s did not answer in time", projectID), err)
	default:
		return fmt.Errorf("%w: %w", sandbox.Errorf(proxy.ErrBadGateway, "bad_gateway",
			"the app of project %s failed to answer", projectID), err)
	}
}

// writeError answers err through httperr; details stay in the log.
func (a *Proxy) writeError(w http.ResponseWriter, r *http.Request, projectID string, err error) {
	forwarded, err := httperr.Forward(w, r, err)
	if forwarded {
		return // another replica runs the sandbox, and answered
	}
	status, code := proxy.StatusOf(err)
	log := a.log.With("project", projectID, "method", r.Method, "host", r.Host, "path", r.URL.Path)
	switch {
	case status == httperr.StatusClientClosed:
		log.Debug("request canceled by client", "status", status)
		return
	case status == http.StatusInternalServerError:
		log.Error("app proxy internal error", "err", err)
	case status >= 500 && status != http.StatusServiceUnavailable:
		log.Warn("app proxy request failed", "status", status, "err", err)
	}
	w.Header().Set(api.HeaderProxyError, code)
	httperr.Write(w, err)
}
