// Package e2b serves E2B's REST control plane on paddock, so that programs
// written against the unmodified `e2b` SDKs create, list, pause, resume
// and kill paddock sandboxes: E2B_API_URL points the SDK at
// <paddock>/compat/e2b (or the host api.<domain> serves the same routes at
// its root), and E2B_API_KEY is a paddock token of the team, made in E2B's
// spelling (`paddock token create --e2b`).
//
// It owns no sandboxes: an E2B sandbox is a paddock sandbox of the
// caller's team, driven through server.Sandboxes and its pause power like
// the native API. What E2B shows beyond that (the template asked for, the
// metadata list filters on) is a store record per sandbox (store.E2BSandbox),
// so replicas sharing one store agree. Errors are E2B's shape, {"code",
// "message"}, with paddock's statuses (internal/httperr). The envd data
// plane (commands, PTYs, files on 49983-<id>.<domain>) is package envd;
// create and connect hand out its per-sandbox tokens (envd.Tokens).
// docs/compat-e2b.md lists each SDK method and what answers it.
package e2b

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/httperr"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/server"
	"github.com/paddock-dev/paddock/internal/server/compat/e2b/envd"
	"github.com/paddock-dev/paddock/internal/store"
)

// Prefix is where the handler is mounted on paddock's listener.
const Prefix = "/compat/e2b"

// EnvdVersion is what sandboxes report as their envd version: the SDKs
// turn features on by it, so it is the version of what package envd
// serves (envd.Version).
const EnvdVersion = envd.Version

// ClientID is what sandboxes report as the client that runs them.
const ClientID = "paddock"

// DefaultTemplate is the template the SDKs ask for when given none; it
// means paddock's default image.
const DefaultTemplate = "base"

// Authenticator says who presents a key; *auth.Authenticator implements it.
type Authenticator interface {
	AuthenticateBearer(ctx context.Context, token string) (auth.Principal, error)
}

// Records keeps the layer's records; store.Store implements it.
type Records interface {
	CreateE2BSandbox(ctx context.Context, v store.E2BSandbox) error
	GetE2BSandbox(ctx context.Context, teamID, id string) (store.E2BSandbox, error)
	DeleteE2BSandbox(ctx context.Context, teamID, id string) error
	ListE2BSandboxes(ctx context.Context, f store.E2BSandboxFilter, page store.Page) ([]store.E2BSandbox, string, error)
}

var (
	_ Authenticator = (*auth.Authenticator)(nil)
	_ Records       = store.Store(nil)
)

// Config wires a Handler.
type Config struct {
	Sandboxes server.Sandboxes // required; pause and connect need its server.Pauser power
	Auth      Authenticator    // required
	Records   Records          // required
	// Snapshots takes snapshots; nil makes the snapshot routes answer 501.
	Snapshots server.Snapshots
	// Domain is what sandboxes report as their domain (the SDKs reach
	// <port>-<id>.<domain>): paddock's domain, with the public URL's port.
	Domain string
	// Tokens makes the sandboxes' envd access and traffic tokens, handed
	// out by create and connect; nil hands out none (no data plane).
	Tokens *envd.Tokens
	// DefaultImage is what the template "base" means ("host" if empty).
	DefaultImage string
	Logger       *slog.Logger
	Now          func() time.Time // nil: time.Now
}

// Handler is the API under Prefix. It holds no goroutines.
type Handler struct {
	cfg Config
	mux *http.ServeMux
}

var _ http.Handler = (*Handler)(nil)

// New builds a Handler.
func New(cfg Config) (*Handler, error) {
	switch {
	case cfg.Sandboxes == nil:
		return nil, errors.New("e2b compat config: Sandboxes is required")
	case cfg.Auth == nil:
		return nil, errors.New("e2b compat config: Auth is required")
	case cfg.Records == nil:
		return nil, errors.New("e2b compat config: Records is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.DefaultImage == "" {
		cfg.DefaultImage = "host"
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux()}
	for _, rt := range routeTable {
		handle := rt.handle
		h.mux.HandleFunc(rt.method+" "+rt.path, func(w http.ResponseWriter, r *http.Request) {
			p, err := h.authenticate(r)
			if err == nil {
				r := r.WithContext(withCaller(r.Context(), p))
				// Another replica's sandbox goes there before a body is read.
				if err = h.elsewhere(r); err == nil {
					err = handle(h, w, r)
				}
			}
			if err != nil {
				h.writeError(w, r, err)
			}
		})
	}
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.writeError(w, r, sandbox.Errorf(sandbox.ErrNotFound, "not_found", "%s %s is not an E2B API route paddock serves", r.Method, r.URL.Path))
	})
	return h, nil
}

// route is one endpoint, below Prefix.
type route struct {
	method, path string
	handle       func(*Handler, http.ResponseWriter, *http.Request) error
}

var routeTable = []route{
	{"POST", "/sandboxes", (*Handler).create},
	{"POST", "/v2/sandboxes", (*Handler).create},
	{"GET", "/sandboxes", (*Handler).listV1},
	{"GET", "/v2/sandboxes", (*Handler).listV2},
	{"GET", "/sandboxes/{id}", (*Handler).get},
	{"DELETE", "/sandboxes/{id}", (*Handler).kill},
	{"POST", "/sandboxes/{id}/timeout", (*Handler).setTimeout},
	{"POST", "/sandboxes/{id}/connect", (*Handler).connect},
	{"POST", "/v2/sandboxes/{id}/connect", (*Handler).connect},
	{"POST", "/sandboxes/{id}/resume", (*Handler).resume},
	{"POST", "/sandboxes/{id}/pause", (*Handler).pause},
	{"GET", "/sandboxes/{id}/metrics", (*Handler).metrics},
	{"POST", "/sandboxes/{id}/snapshots", (*Handler).snapshot},
	{"GET", "/snapshots", (*Handler).listSnapshots},
	{"PUT", "/sandboxes/{id}/network", (*Handler).updateNetwork},
	{"POST", "/sandboxes/{id}/refreshes", (*Handler).refresh},
	{"POST", "/sandboxes/{id}/fork", unsupported("forking through the E2B API is not supported yet; snapshot the sandbox and create from the snapshot")},
	{"GET", "/v2/sandboxes/{id}/logs", unsupported("sandbox logs are not served through the E2B API; use paddock's command history")},
	{"GET", "/sandboxes/{id}/logs", unsupported("sandbox logs are not served through the E2B API; use paddock's command history")},
	{"GET", "/sandboxes/metrics", unsupported("metrics of several sandboxes at once are not supported; ask each sandbox")},
}

// ServeHTTP serves the routes under Prefix, or at the root for the
// api.<domain> host form.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if rest, ok := strings.CutPrefix(r.URL.Path, Prefix); ok && (rest == "" || rest[0] == '/') {
		r2 := r.Clone(r.Context())
		r2.URL.Path, r2.URL.RawPath = rest, ""
		r = r2
	}
	w.Header().Set("Cache-Control", "no-store")
	h.mux.ServeHTTP(w, r)
}

// authenticate reads X-API-Key (what the SDKs send), else a bearer token
// (E2B's access tokens, here any paddock credential).
func (h *Handler) authenticate(r *http.Request) (auth.Principal, error) {
	key := strings.TrimSpace(r.Header.Get("X-API-Key"))
	if key == "" {
		key, _ = auth.BearerToken(r.Header.Get("Authorization"))
	}
	if key == "" {
		return auth.Principal{}, errMissingKey
	}
	return h.cfg.Auth.AuthenticateBearer(r.Context(), key)
}

var errMissingKey = sandbox.Errorf(sandbox.ErrUnauthorized, "missing_api_key", "missing API key: send X-API-Key (E2B_API_KEY: a paddock token, e.g. from paddock token create --e2b)")

type callerKey struct{}

func withCaller(ctx context.Context, p auth.Principal) context.Context {
	return context.WithValue(ctx, callerKey{}, p)
}

func callerOf(r *http.Request) auth.Principal {
	p, _ := r.Context().Value(callerKey{}).(auth.Principal)
	return p
}

func unsupported(msg string) func(*Handler, http.ResponseWriter, *http.Request) error {
	return func(*Handler, http.ResponseWriter, *http.Request) error {
		return sandbox.Errorf(sandbox.ErrUnsupported, "not_implemented", "%s", msg)
	}
}

// writeError answers err in E2B's shape with paddock's status for it.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	forwarded, err := httperr.Forward(w, r, err)
	if forwarded {
		return // another replica runs the sandbox, and answered
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client left
	}
	status, _ := httperr.Status(err)
	httperr.WriteJSON(w, status, errorBody{Code: status, Message: httperr.Message(err, status)})
	switch {
	case status == http.StatusInternalServerError:
		h.cfg.Logger.Error("e2b compat: internal error", "method", r.Method, "path", r.URL.Path, "err", err)
	case status >= 500 && status != http.StatusNotImplemented:
		h.cfg.Logger.Warn("e2b compat: request failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
}
