// Package web is paddock's dashboard, served at / beside the API: sign-in
// with an API token or the OIDC issuer (oidc.go), server-rendered pages of sandboxes, projects, pools,
// usage and cost, events and accounts that work without JavaScript, and a
// little progressive JavaScript (static/app.js) for live updates and
// streams.
//
// It owns no data and no authorization of its own. A page authenticates
// the session's token with the API's authenticator, then reads through
// the Go SDK (sdk/) against the API's handler in this process, so a page
// shows exactly what the API would answer that token: another team's
// sandbox is "not found" here as there. Scripts reach the API through
// /ui/api/v1/..., which adds the session's token (and wants the CSRF
// token on every write).
package web

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/sdk"
)

// maxFormBytes bounds a form post, an upload's file included; larger
// files go through the CLI or the API (whose own bound, 2 GiB by default,
// still applies below it). A variable only so that tests can lower it.
var maxFormBytes int64 = 256 << 20

// Prefix is where the dashboard lives; "/" redirects there. Every other
// path belongs to the API, the compat layers and the proxies.
const Prefix = "/ui"

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Authenticator checks a bearer token, as the API does (internal/auth's
// Authenticator).
type Authenticator interface {
	AuthenticateBearer(ctx context.Context, token string) (auth.Principal, error)
}

// Config wires the dashboard.
type Config struct {
	// API serves /api/v1 (internal/server's handler); required.
	API http.Handler
	// Auth authenticates the session's token; required.
	Auth Authenticator
	// SecretsKey seals session cookies (paddock's secrets key; a subkey
	// is derived from it); at least 16 bytes.
	SecretsKey []byte
	// SecureCookies marks the session cookie Secure (the public URL is https).
	SecureCookies bool
	// OIDC, if set, adds "Sign in with <issuer>"; Auth must then verify
	// ID tokens (IDTokenAuthenticator).
	OIDC   *OIDCLogin
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Handler serves the dashboard.
type Handler struct {
	cfg     Config
	seal    *sealer
	oidc    *oidcLogin // nil without OIDC sign-in
	pages   map[string]*template.Template
	mux     *http.ServeMux
	handler http.Handler
	log     *slog.Logger
}

// New builds the dashboard.
func New(cfg Config) (*Handler, error) {
	if cfg.API == nil || cfg.Auth == nil {
		return nil, errors.New("web config: API and Auth are required")
	}
	seal, err := newSealer(cfg.SecretsKey)
	if err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	h := &Handler{cfg: cfg, seal: seal, mux: http.NewServeMux(), log: cfg.Logger}
	if cfg.OIDC != nil {
		if h.oidc, err = newOIDCLogin(*cfg.OIDC, cfg.Auth); err != nil {
			return nil, err
		}
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.pages, err = parsePages(); err != nil {
		return nil, err
	}
	h.routes()
	// Go's cross-origin protection refuses a browser's cross-site POST by
	// its Sec-Fetch-Site or Origin header, the login form's too; signed-in
	// writes carry the session's CSRF token besides.
	h.handler = securityHeaders(http.NewCrossOriginProtection().Handler(h.mux))
	return h, nil
}

// Handles reports whether path is the dashboard's: / and everything below
// Prefix.
func Handles(path string) bool {
	return path == "/" || path == Prefix || strings.HasPrefix(path, Prefix+"/")
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.handler.ServeHTTP(w, r) }

func (h *Handler) routes() {
	static, _ := fs.Sub(staticFS, "static")
	h.mux.Handle("GET "+Prefix+"/static/", http.StripPrefix(Prefix+"/static/", http.FileServerFS(static)))
	h.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, Prefix+"/", http.StatusSeeOther)
	})
	h.mux.HandleFunc("GET "+Prefix+"/login", h.loginPage)
	h.mux.HandleFunc("POST "+Prefix+"/login", h.login)
	h.mux.HandleFunc("POST "+Prefix+"/logout", h.logout)
	if h.oidc != nil {
		h.mux.HandleFunc("GET "+oidcLoginPath, h.oidcStart)
		h.mux.HandleFunc("GET "+OIDCCallbackPath, h.oidcCallback)
	}
	h.mux.Handle(Prefix+"/api/", h.signedIn(h.bridge))

	pages := map[string]func(*request) error{
		"GET " + Prefix + "/{$}":                       h.sandboxesPage,
		"GET " + Prefix + "/sandboxes/{id}":            h.sandboxPage,
		"POST " + Prefix + "/sandboxes/{id}/stop":      h.stopSandbox,
		"POST " + Prefix + "/sandboxes/{id}/extend":    h.extendSandbox,
		"POST " + Prefix + "/sandboxes/{id}/upload":    h.uploadFile,
		"GET " + Prefix + "/sandboxes/{id}/files":      h.filesPage,
		"GET " + Prefix + "/sandboxes/{id}/download":   h.download,
		"POST " + Prefix + "/sandboxes/{id}/sign":      h.signPort,
		"GET " + Prefix + "/projects":                  h.projectsPage,
		"GET " + Prefix + "/projects/{id}":             h.projectPage,
		"POST " + Prefix + "/projects/{id}/activate":   h.activateProject,
		"POST " + Prefix + "/projects/{id}/deactivate": h.deactivateProject,
		"GET " + Prefix + "/demo":                      h.demoPage,
		"GET " + Prefix + "/capacity":                  h.capacityPage,
		"GET " + Prefix + "/usage":                     h.usagePage,
		"GET " + Prefix + "/events":                    h.eventsPage,
		"GET " + Prefix + "/admin":                     h.adminPage,
	}
	for pattern, fn := range pages {
		h.mux.Handle(pattern, h.signedIn(func(w http.ResponseWriter, r *http.Request, rq *request) {
			if r.Method == http.MethodPost {
				// Uploads are the largest forms; multipart parts past
				// memory go to temporary files, removed after the request.
				r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
				defer func() {
					if r.MultipartForm != nil {
						_ = r.MultipartForm.RemoveAll()
					}
				}()
			}
			if r.Method == http.MethodPost && tooLarge(r) {
				h.fail(w, rq, http.StatusRequestEntityTooLarge, "The form is larger than the dashboard takes ("+humanBytes(uint64(maxFormBytes))+"): upload larger files with paddock sandbox cp or the API.")
				return
			}
			if r.Method == http.MethodPost && !h.seal.checkCSRF(rq.sess, r.PostFormValue("csrf")) {
				h.fail(w, rq, http.StatusForbidden, "The form expired or came from another site: reload the page and try again.")
				return
			}
			if err := fn(rq); err != nil {
				h.failErr(w, rq, err)
			}
		}))
	}
	h.mux.HandleFunc(Prefix+"/", func(w http.ResponseWriter, r *http.Request) {
		h.render(w, &request{r: r, w: w}, http.StatusNotFound, "error", pageData{Title: "Not found", Message: "There is no such page."})
	})
}

// request is one signed-in request: its session, principal and an SDK
// client that calls the API in process with the session's token.
type request struct {
	r         *http.Request
	w         http.ResponseWriter
	sess      session
	principal auth.Principal
	api       *sdk.Client
	ctx       context.Context
}

// signedIn authenticates the session cookie through the API's
// authenticator; without a valid one a page goes to sign-in and a script
// gets 401. A token that expired or was revoked ends the session.
func (h *Handler) signedIn(next func(http.ResponseWriter, *http.Request, *request)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(sessionCookie)
		var sess session
		ok := err == nil
		if ok {
			sess, ok = h.seal.open(c.Value, h.cfg.Now())
		}
		var p auth.Principal
		if ok {
			p, err = h.cfg.Auth.AuthenticateBearer(r.Context(), sess.Token)
			if err != nil && !errors.Is(err, sandbox.ErrUnauthorized) {
				h.log.Warn("dashboard: authenticate", "err", err)
				http.Error(w, "authentication is unavailable; retry shortly", http.StatusServiceUnavailable)
				return
			}
			ok = err == nil
		}
		if !ok {
			if c != nil {
				http.SetCookie(w, sessionCookieOf("", -1, h.cfg.SecureCookies))
			}
			if strings.HasPrefix(r.URL.Path, Prefix+"/api/") {
				http.Error(w, "sign in again", http.StatusUnauthorized)
				return
			}
			next := "/"
			if r.Method == http.MethodGet {
				next = r.URL.RequestURI()
			}
			http.Redirect(w, r, Prefix+"/login?next="+url.QueryEscape(next), http.StatusSeeOther)
			return
		}
		client := sdk.New("http://paddock.internal", sess.Token, sdk.WithHTTPClient(&http.Client{Transport: inProcess{h.cfg.API}}))
		next(w, r, &request{r: r, w: w, sess: sess, principal: p, api: client, ctx: r.Context()})
	})
}

// bridge serves /ui/api/v1/... as the API's /api/v1/... with the session's
// token, so scripts use the API (event feed, log streams, terminals)
// without holding a token. Writes need the CSRF token in X-CSRF-Token.
func (h *Handler) bridge(w http.ResponseWriter, r *http.Request, rq *request) {
	path := strings.TrimPrefix(r.URL.Path, Prefix)
	if !strings.HasPrefix(path, api.Prefix+"/") {
		http.NotFound(w, r)
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	default:
		if !h.seal.checkCSRF(rq.sess, r.Header.Get("X-CSRF-Token")) {
			http.Error(w, "missing or wrong X-CSRF-Token", http.StatusForbidden)
			return
		}
	}
	out := r.Clone(r.Context())
	out.URL.Path, out.URL.RawPath = path, ""
	out.RequestURI = out.URL.RequestURI()
	out.Header.Del("Cookie")
	out.Header.Del("X-CSRF-Token")
	out.Header.Set("Authorization", "Bearer "+rq.sess.Token)
	h.cfg.API.ServeHTTP(w, out)
}

func (h *Handler) loginPage(w http.ResponseWriter, r *http.Request) {
	h.render(w, &request{r: r, w: w}, http.StatusOK, "login", h.loginData(safeNext(r.URL.Query().Get("next")), ""))
}

func (h *Handler) loginData(next, msg string) pageData {
	d := pageData{Title: "Sign in", Next: next, Message: msg}
	if h.oidc != nil {
		d.OIDC = h.oidc.cfg.Label
	}
	return d
}

func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	rq := &request{r: r, w: w}
	token := strings.TrimSpace(r.PostFormValue("token"))
	next := safeNext(r.PostFormValue("next"))
	if _, err := h.cfg.Auth.AuthenticateBearer(r.Context(), token); err != nil {
		status, msg := http.StatusUnauthorized, "That token is not valid, has expired or was revoked."
		if !errors.Is(err, sandbox.ErrUnauthorized) {
			h.log.Warn("dashboard: sign in", "err", err)
			status, msg = http.StatusServiceUnavailable, "Authentication is unavailable; retry shortly."
		}
		h.render(w, rq, status, "login", h.loginData(next, msg))
		return
	}
	sess, err := newSession(token, h.cfg.Now())
	if err == nil {
		var v string
		if v, err = h.seal.seal(sess); err == nil {
			http.SetCookie(w, sessionCookieOf(v, int(sessionTTL/time.Second), h.cfg.SecureCookies))
		}
	}
	if err != nil {
		h.fail(w, rq, http.StatusInternalServerError, "Could not start a session.")
		return
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// logout needs no CSRF token: signing someone out is harmless, and the
// cross-origin protection refuses other sites' forms anyway.
func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, sessionCookieOf("", -1, h.cfg.SecureCookies))
	http.Redirect(w, r, Prefix+"/login", http.StatusSeeOther)
}

// safeNext keeps a redirect target on this site and in the dashboard.
func safeNext(next string) string {
	if !strings.HasPrefix(next, Prefix+"/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return Prefix + "/"
	}
	return next
}

// securityHeaders forbids framing and every origin but this one for
// scripts, styles and connections.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		if !strings.HasPrefix(r.URL.Path, Prefix+"/api/") {
			h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
			h.Set("X-Frame-Options", "DENY")
			h.Set("Referrer-Policy", "same-origin")
		}
		h.Set("X-Content-Type-Options", "nosniff")
		next.ServeHTTP(w, r)
	})
}

// failErr renders an API error as a page: not found stays not found,
// unauthorized goes to sign-in.
func (h *Handler) failErr(w http.ResponseWriter, rq *request, err error) {
	var ae *sdk.APIError
	switch {
	case errors.As(err, &ae) && ae.Status == http.StatusUnauthorized:
		http.SetCookie(w, sessionCookieOf("", -1, h.cfg.SecureCookies))
		http.Redirect(w, rq.r, Prefix+"/login", http.StatusSeeOther)
	case errors.As(err, &ae) && ae.Status == http.StatusNotFound:
		h.fail(w, rq, http.StatusNotFound, "Not found: "+ae.Message)
	case errors.As(err, &ae) && ae.Status > 0:
		h.fail(w, rq, ae.Status, ae.Message)
	case errors.Is(err, context.Canceled):
	default:
		h.log.Error("dashboard page", "path", rq.r.URL.Path, "err", err)
		h.fail(w, rq, http.StatusInternalServerError, "Something went wrong: "+err.Error())
	}
}

func (h *Handler) fail(w http.ResponseWriter, rq *request, status int, msg string) {
	h.render(w, rq, status, "error", pageData{Title: http.StatusText(status), Message: msg})
}

// tooLarge parses a posted form and reports whether it was past
// maxFormBytes, which would otherwise read as a missing CSRF token.
func tooLarge(r *http.Request) bool {
	var err error
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "multipart/form-data" {
		err = r.ParseMultipartForm(32 << 20)
	} else {
		err = r.ParseForm()
	}
	var mb *http.MaxBytesError
	return errors.As(err, &mb)
}

// back redirects a form post to the page it came from (a dashboard path).
func back(rq *request, fallback string) error {
	to := fallback
	if b := rq.r.PostFormValue("back"); b != "" {
		to = safeNext(b)
	}
	http.Redirect(rq.w, rq.r, to, http.StatusSeeOther)
	return nil
}

func errorf(format string, a ...any) error { return fmt.Errorf("web: "+format, a...) }
