// Package vercel serves Vercel Sandbox's REST API on paddock, so that a
// program written against the unmodified @vercel/sandbox SDK (3.x, which
// speaks v2 plus POST /v3/sandboxes, and 1.x, which speaks v1) runs against
// a self-hosted paddock by passing the SDK a fetch that rewrites
// https://vercel.com/api to <paddock>/compat/vercel.
//
// Callers are paddock's: the bearer token is a paddock API token (or OIDC
// JWT), and the request's teamId names a paddock team the caller may use.
// Everything this API keeps is scoped by that team's id, and the sandboxes
// it creates belong to that team, as if made through /api/v1.
//
// It owns no sandboxes: a Vercel session (v2) or sandbox (v1) is one
// paddock sandbox, driven through the same server.Sandboxes, server.Snapshots
// and agent client the native API uses. What Vercel's model has beyond that
// (names unique per team and project, a sandbox's config, its sessions, the
// current snapshot a persistent sandbox resumes from) lives in paddock's
// store (Records, through the thin Store adapter), so that paddock
// replicas sharing one store share it too. Changes are optimistic: a save
// that lost to another writer reads the record again and reapplies what
// the request did (Handler.change), so no write is lost and no lock is
// held across a request. Anything the SDK can ask that paddock cannot do
// answers a clear error in Vercel's shape; docs/compat-vercel.md lists
// each method.
package vercel

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/proxy"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/server"
	"github.com/paddock-dev/paddock/internal/store"
)

// Prefix is where the handler is mounted on paddock's listener.
const Prefix = "/compat/vercel"

// Region is what sessions report as their region: every session runs on
// this host, whatever region a request names.
const Region = "local"

// Authenticator says who presents a bearer credential; *auth.Authenticator
// implements it, the same check /api/v1 makes.
type Authenticator interface {
	// AuthenticateBearer returns the caller, or an error wrapping
	// sandbox.ErrUnauthorized; other errors are internal.
	AuthenticateBearer(ctx context.Context, token string) (auth.Principal, error)
}

// Teams finds the paddock team a request's teamId names;
// *auth.Authenticator implements it.
type Teams interface {
	// GetTeam returns a team by id, or an error wrapping sandbox.ErrNotFound.
	GetTeam(ctx context.Context, id string) (store.Team, error)
	ListTeams(ctx context.Context) ([]store.Team, error)
}

var (
	_ Authenticator = (*auth.Authenticator)(nil)
	_ Teams         = (*auth.Authenticator)(nil)
)

// Config wires a Handler.
type Config struct {
	Sandboxes server.Sandboxes // required
	Auth      Authenticator    // required: paddock's API tokens
	Teams     Teams            // required: what teamId may name
	Store     *Store           // required: the records, in paddock's store
	// Snapshots takes and keeps snapshots; nil makes persistence, snapshot
	// and fork answer 501.
	Snapshots server.Snapshots
	// Signer and PortBaseURL build routes[].url as signed port URLs, and
	// the URL and token of openInteractive; without them routes are empty
	// and interactive sessions answer 501.
	Signer      *proxy.Signer
	PortBaseURL string
	// Usage is paddock's meter, which the usage figures of sessions that
	// ended come from; nil reports only what this API saw (see usage.go).
	Usage  Usage
	Logger *slog.Logger
	// MaxUploadBytes bounds one fs/write body; 0 means server.DefaultMaxUploadBytes.
	MaxUploadBytes int64
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Validate reports a missing dependency.
func (c Config) Validate() error {
	switch {
	case c.Sandboxes == nil:
		return errors.New("vercel compat config: Sandboxes is required")
	case c.Auth == nil:
		return errors.New("vercel compat config: Auth is required")
	case c.Teams == nil:
		return errors.New("vercel compat config: Teams is required")
	case c.Store == nil:
		return errors.New("vercel compat config: Store is required")
	case c.MaxUploadBytes < 0:
		return errors.New("vercel compat config: MaxUploadBytes is negative")
	}
	return nil
}

// Handler is the API under Prefix. It holds no goroutines of its own.
type Handler struct {
	sb        server.Sandboxes
	snaps     server.Snapshots
	auth      Authenticator
	teams     Teams
	store     *Store
	signer    *proxy.Signer
	baseURL   string
	meter     Usage
	log       *slog.Logger
	maxUpload int64
	now       func() time.Time
	mux       *http.ServeMux
	// tokenMux serves what a signed token, not a bearer token, opens:
	// the interactive sessions' WebSocket.
	tokenMux *http.ServeMux

	mu        sync.Mutex        // guards transient
	transient map[string]string // session id -> "stopping" or "snapshotting" while this API does it

	// streams is cancelled by CloseStreams, ending command streams and
	// long polls so that a shutdown need not wait for them.
	streams     context.Context
	stopStreams context.CancelFunc
}

var _ http.Handler = (*Handler)(nil)

// New builds a Handler.
func New(cfg Config) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	h := &Handler{
		sb: cfg.Sandboxes, snaps: cfg.Snapshots, auth: cfg.Auth, teams: cfg.Teams, store: cfg.Store,
		signer: cfg.Signer, baseURL: cfg.PortBaseURL, meter: cfg.Usage, log: cfg.Logger, maxUpload: cfg.MaxUploadBytes,
		now: cfg.Now, mux: http.NewServeMux(), tokenMux: http.NewServeMux(), transient: map[string]string{},
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.maxUpload == 0 {
		h.maxUpload = server.DefaultMaxUploadBytes
	}
	h.streams, h.stopStreams = context.WithCancel(context.Background())
	h.tokenMux.HandleFunc("GET "+Prefix+interactivePath, func(w http.ResponseWriter, r *http.Request) {
		if err := h.serveInteractive(w, r); err != nil {
			h.writeError(w, r, err)
		}
	})
	for _, rt := range routeTable {
		handle := rt.handle
		h.mux.HandleFunc(rt.method+" "+Prefix+rt.path, func(w http.ResponseWriter, r *http.Request) {
			if err := h.elsewhere(r); err != nil {
				h.writeError(w, r, err) // forwarded there, body unread
				return
			}
			if err := handle(h, w, r); err != nil {
				h.writeError(w, r, err)
			}
		})
	}
	return h, nil
}

// CloseStreams ends open command streams and long polls; commands keep
// running. Register it with http.Server.RegisterOnShutdown.
func (h *Handler) CloseStreams() { h.stopStreams() }

// route is one endpoint, below Prefix.
type route struct {
	method, path string
	handle       func(*Handler, http.ResponseWriter, *http.Request) error
}

var routeTable = []route{
	// v2 and v3 (SDK 3.x).
	{"POST", "/v3/sandboxes", (*Handler).createV2},
	{"POST", "/v2/sandboxes", (*Handler).createV2},
	{"GET", "/v2/sandboxes", (*Handler).listV2},
	{"GET", "/v2/sandboxes/{name}", (*Handler).getV2},
	{"PATCH", "/v2/sandboxes/{name}", (*Handler).updateV2},
	{"DELETE", "/v2/sandboxes/{name}", (*Handler).deleteV2},
	{"POST", "/v2/sandboxes/{name}/fork", (*Handler).forkV2},
	{"GET", "/v2/sandboxes/sessions", (*Handler).listSessions},
	{"GET", "/v2/sandboxes/sessions/{sid}", (*Handler).getSession},
	{"POST", "/v2/sandboxes/sessions/{sid}/cmd", (*Handler).runCommand},
	{"GET", "/v2/sandboxes/sessions/{sid}/cmd/{cmd}", (*Handler).getCommand},
	{"GET", "/v2/sandboxes/sessions/{sid}/cmd/{cmd}/logs", (*Handler).commandLogs},
	{"POST", "/v2/sandboxes/sessions/{sid}/cmd/{cmd}/kill", (*Handler).killCommand},
	{"POST", "/v2/sandboxes/sessions/{sid}/fs/mkdir", (*Handler).mkdir},
	{"POST", "/v2/sandboxes/sessions/{sid}/fs/write", (*Handler).writeFiles},
	{"POST", "/v2/sandboxes/sessions/{sid}/fs/read", (*Handler).readFile},
	{"POST", "/v2/sandboxes/sessions/{sid}/stop", (*Handler).stopSession},
	{"POST", "/v2/sandboxes/sessions/{sid}/network-policy", (*Handler).networkPolicy},
	{"POST", "/v2/sandboxes/sessions/{sid}/extend-timeout", (*Handler).extendTimeout},
	{"POST", "/v2/sandboxes/sessions/{sid}/snapshot", (*Handler).snapshotSession},
	{"POST", "/v2/sandboxes/sessions/{sid}/interactive", (*Handler).openInteractive},
	{"GET", "/v2/sandboxes/sessions/{sid}/cmd", unsupported("listing a session's commands is not supported")},
	{"POST", "/v3/sandboxes/sessions/{sid}/snapshot", (*Handler).snapshotSession},
	{"GET", "/v2/sandboxes/snapshots", (*Handler).listSnapshotsV2},
	{"GET", "/v2/sandboxes/snapshots/tree", unsupported("the snapshot tree is not supported; list snapshots with Snapshot.list")},
	{"GET", "/v2/sandboxes/snapshots/{id}", (*Handler).getSnapshot},
	{"DELETE", "/v2/sandboxes/snapshots/{id}", (*Handler).deleteSnapshot},
	{"GET", "/v2/sandboxes/drives", unsupported(drivesUnsupported)},
	{"GET", "/v2/sandboxes/drives/{name}", unsupported(drivesUnsupported)},
	{"DELETE", "/v2/sandboxes/drives/{name}", unsupported(drivesUnsupported)},
	// POST /v2/sandboxes/drives/{name} would clash with .../{name}/fork in
	// the mux; forkV2 answers it.

	// v1 (SDK 1.x): the sandbox id is the session id.
	{"POST", "/v1/sandboxes", (*Handler).createV1},
	{"GET", "/v1/sandboxes", (*Handler).listV1},
	{"GET", "/v1/sandboxes/{sid}", (*Handler).getV1},
	{"POST", "/v1/sandboxes/{sid}/cmd", (*Handler).runCommand},
	{"GET", "/v1/sandboxes/{sid}/cmd/{cmd}", (*Handler).getCommand},
	{"GET", "/v1/sandboxes/{sid}/cmd/{cmd}/logs", (*Handler).commandLogs},
	{"POST", "/v1/sandboxes/{sid}/{cmd}/kill", (*Handler).killCommand},
	{"POST", "/v1/sandboxes/{sid}/fs/mkdir", (*Handler).mkdir},
	{"POST", "/v1/sandboxes/{sid}/fs/write", (*Handler).writeFiles},
	{"POST", "/v1/sandboxes/{sid}/fs/read", (*Handler).readFile},
	{"POST", "/v1/sandboxes/{sid}/stop", (*Handler).stopSession},
	{"POST", "/v1/sandboxes/{sid}/network-policy", (*Handler).networkPolicy},
	{"POST", "/v1/sandboxes/{sid}/extend-timeout", (*Handler).extendTimeout},
	{"POST", "/v1/sandboxes/{sid}/snapshot", (*Handler).snapshotSession},
	{"GET", "/v1/sandboxes/snapshots", (*Handler).listSnapshotsV1},
	{"GET", "/v1/sandboxes/snapshots/{id}", (*Handler).getSnapshot},
	{"DELETE", "/v1/sandboxes/snapshots/{id}", (*Handler).deleteSnapshot},
}

const drivesUnsupported = "drives are not supported by paddock's Vercel compatibility layer"

func unsupported(msg string) func(*Handler, http.ResponseWriter, *http.Request) error {
	return func(*Handler, http.ResponseWriter, *http.Request) error {
		return sandbox.Errorf(sandbox.ErrUnsupported, "not_implemented", "%s", msg)
	}
}

// ServeHTTP authenticates, then routes. Every request needs a paddock API
// token as its bearer token and a teamId naming a team the caller may use,
// as the SDK always sends one.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := h.now()
	sw := &server.StatusWriter{ResponseWriter: w}
	defer func() {
		h.log.LogAttrs(r.Context(), slog.LevelInfo, "vercel compat request",
			slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.Int("status", sw.StatusOr200()), slog.Duration("duration", h.now().Sub(start)))
	}()
	// One bad request must not take the daemon down: a panic is a 500, or
	// a cut connection once the answer has begun.
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		if v == http.ErrAbortHandler {
			panic(v)
		}
		if sw.Status() != 0 {
			// Too late for an error answer; net/http does not log an
			// ErrAbortHandler, so the panic is logged here.
			h.log.Error("vercel compat: handler panic", "method", r.Method, "path", r.URL.Path, "panic", v)
			panic(http.ErrAbortHandler)
		}
		h.writeError(sw, r, fmt.Errorf("panic: %v", v))
	}()
	if _, pattern := h.tokenMux.Handler(r); pattern != "" {
		h.tokenMux.ServeHTTP(sw, r)
		return
	}
	c, err := h.authenticate(r)
	if err != nil {
		h.writeError(sw, r, err)
		return
	}
	r = r.WithContext(context.WithValue(r.Context(), callerKey{}, c))
	if _, pattern := h.mux.Handler(r); pattern == "" {
		h.writeError(sw, r, sandbox.Errorf(sandbox.ErrNotFound, "not_found", "no such endpoint: %s %s", r.Method, strings.TrimPrefix(r.URL.Path, Prefix)))
		return
	}
	h.mux.ServeHTTP(sw, r)
}

var (
	errUnauthenticated = sandbox.Errorf(sandbox.ErrUnauthorized, "unauthorized", "missing bearer token: send Authorization: Bearer <paddock API token>")
	errInvalidToken    = sandbox.Errorf(sandbox.ErrUnauthorized, "unauthorized", "the bearer token is not a valid paddock API token")
	errNoTeam          = sandbox.Errorf(sandbox.ErrInvalid, "bad_request", "Invalid request: the teamId query parameter is required")
)

// errTeamForbidden is Vercel's answer for a team the token cannot use. A
// team that does not exist and another team's look the same, so that
// nobody learns which teams exist.
func errTeamForbidden(ref string) error {
	return sandbox.Errorf(sandbox.ErrForbidden, "forbidden", "Not authorized: this token cannot use team %q", ref)
}

// caller is who sends a request and the paddock team its teamId names.
type caller struct {
	p    auth.Principal
	team string // the resolved paddock team id
}

type callerKey struct{}

// callerOf returns what ServeHTTP resolved; a handler reached without it
// (never, through ServeHTTP) gets the zero caller, whose empty team owns
// nothing.
func callerOf(r *http.Request) caller {
	c, _ := r.Context().Value(callerKey{}).(caller)
	return c
}

// teamOf is the request's paddock team id: the scope of every record.
func teamOf(r *http.Request) string { return callerOf(r).team }

func (h *Handler) authenticate(r *http.Request) (caller, error) {
	secret, ok := auth.BearerToken(r.Header.Get("Authorization"))
	if !ok {
		return caller{}, errUnauthenticated
	}
	p, err := h.auth.AuthenticateBearer(r.Context(), secret)
	if err != nil {
		if errors.Is(err, sandbox.ErrUnauthorized) {
			// Why (expired, unknown user) is for the log, as in /api/v1.
			h.log.Debug("vercel compat: authentication refused", "path", r.URL.Path, "err", err)
			return caller{}, errInvalidToken
		}
		return caller{}, fmt.Errorf("authenticate: %w", err)
	}
	ref := r.URL.Query().Get("teamId")
	if ref == "" {
		return caller{}, errNoTeam
	}
	team, err := h.resolveTeam(r.Context(), p, ref)
	if err != nil {
		return caller{}, err
	}
	return caller{p: p, team: team}, nil
}

// resolveTeam maps a teamId onto a paddock team the principal may use: a
// team's id, else its name (ids first: a name that is another team's id
// names that team). A member may name only their own team; a host admin
// any team that exists.
func (h *Handler) resolveTeam(ctx context.Context, p auth.Principal, ref string) (string, error) {
	if !p.HostAdmin {
		switch ref {
		case "":
		case p.TeamID:
			return p.TeamID, nil
		}
		if p.TeamID == "" {
			return "", errTeamForbidden(ref)
		}
	}
	t, err := h.teams.GetTeam(ctx, ref)
	switch {
	case err == nil && p.CanAccessTeam(t.ID):
		return t.ID, nil
	case err == nil:
		return "", errTeamForbidden(ref)
	case !errors.Is(err, sandbox.ErrNotFound):
		return "", fmt.Errorf("resolve team: %w", err)
	}
	if !p.HostAdmin {
		// A member's own team is the only name they may use.
		own, err := h.teams.GetTeam(ctx, p.TeamID)
		switch {
		case err == nil && own.Name == ref:
			return own.ID, nil
		case err == nil || errors.Is(err, sandbox.ErrNotFound):
			return "", errTeamForbidden(ref)
		default:
			return "", fmt.Errorf("resolve team: %w", err)
		}
	}
	ts, err := h.teams.ListTeams(ctx)
	if err != nil {
		return "", fmt.Errorf("resolve team: %w", err)
	}
	for _, t := range ts {
		if t.Name == ref {
			return t.ID, nil
		}
	}
	return "", errTeamForbidden(ref)
}

// scopeOf reads the team and the project; projectParam names the query
// parameter the SDK uses for this endpoint ("projectId" or "project"), ""
// when the project comes from the body.
func scopeOf(r *http.Request, projectParam string) (Scope, error) {
	s := Scope{Team: teamOf(r)}
	if projectParam != "" {
		s.Project = r.URL.Query().Get(projectParam)
		if s.Project == "" {
			return s, sandbox.Errorf(sandbox.ErrInvalid, "bad_request", "Invalid request: the %s query parameter is required", projectParam)
		}
	}
	return s, nil
}

// listScope is the scope of a list: the team and, when given, ?project=.
func listScope(r *http.Request) Scope {
	return Scope{Team: teamOf(r), Project: r.URL.Query().Get("project")}
}

// setTransient marks a session as being stopped or snapshotted by this
// API, so that other calls on it answer 422 sandbox_stopping or
// sandbox_snapshotting (on which the SDK resumes and retries) meanwhile.
// It is this process's: a session's sandbox runs on this host, and calls
// that reach it through another replica find no sandbox there.
func (h *Handler) setTransient(sid, status string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if status == "" {
		delete(h.transient, sid)
		return
	}
	h.transient[sid] = status
}

func (h *Handler) transientOf(sid string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.transient[sid]
}

// nameAlphabet is what generated sandbox names are made of.
const nameAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

func randomName() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	out := make([]byte, len(b))
	for i, c := range b {
		out[i] = nameAlphabet[int(c)%len(nameAlphabet)]
	}
	return "sbx-" + string(out)
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// elsewhere is the *sandbox.ElsewhereError of a request for a session
// (its ID is its paddock sandbox's) that another replica runs, found
// before a handler reads the body, so that writeError can still forward
// the request there whole; nil for any other, which its handler answers.
// A v2 route names its sandbox, whose current session is the one asked
// (update, delete and fork decode a body before they look it up).
// Another team's session is left to the handler: not found.
func (h *Handler) elsewhere(r *http.Request) error {
	sid := r.PathValue("sid")
	if sid == "" && r.PathValue("name") != "" {
		rec, err := h.namedRecord(r)
		if err != nil {
			return nil // the handler answers it
		}
		if cur := rec.current(); cur != nil {
			sid = cur.ID
		}
	}
	if sid == "" || !sandbox.ValidID(sid) {
		return nil
	}
	_, err := h.sb.Get(r.Context(), sid)
	if ee := new(sandbox.ElsewhereError); errors.As(err, &ee) && ee.TeamID == teamOf(r) {
		return err
	}
	return nil
}
