// Package server is paddock's HTTP API (/api/v1): routing, bearer-token
// auth, request decoding and validation, the one mapping from errors to HTTP
// statuses, and the NDJSON streaming of command output. It owns no
// sandboxes itself: it drives them through the small Sandboxes interface
// (internal/node's Manager satisfies it; internal/daemon wires the two)
// and talks to each sandbox's agent through internal/agent's client.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/proxy"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Sandboxes is what the server needs from the sandbox layer of one host
// (internal/node's Manager, adapted in internal/daemon). Requests are the
// sandbox package's types, which every layer shares.
type Sandboxes interface {
	Create(ctx context.Context, req sandbox.CreateRequest) (sandbox.Sandbox, error)
	Get(ctx context.Context, id string) (sandbox.Sandbox, error)
	List(ctx context.Context, opts sandbox.ListOptions) ([]sandbox.Sandbox, string, error)
	Stop(ctx context.Context, id string) (sandbox.Sandbox, error)
	Delete(ctx context.Context, id string) error
	ExtendTimeout(ctx context.Context, id string, by time.Duration) (sandbox.Sandbox, error)
	// Agent returns a client for a running sandbox's agent; the caller does not close it.
	Agent(ctx context.Context, id string) (*agent.Client, error)
	// Exec runs a command in a running sandbox: it checks the request,
	// fills its defaults, starts it and records it in the history (see
	// node.Manager.Exec), so the API and the Vercel layer only translate.
	Exec(ctx context.Context, id string, req sandbox.ExecRequest) (agent.Command, error)
	Stats(ctx context.Context, id string) (runtime.Stats, error)
	AddPorts(ctx context.Context, id string, ports []sandbox.Port) (sandbox.Sandbox, error)
	UpdateNetworkPolicy(ctx context.Context, id string, policy sandbox.NetworkPolicy) (sandbox.Sandbox, error)
	// SetLabels replaces a sandbox's labels (checked with sandbox.ValidateLabels).
	SetLabels(ctx context.Context, id string, labels map[string]string) (sandbox.Sandbox, error)
}

// Pauser is the optional power of Sandboxes to pause a sandbox (keep its
// filesystem, stop it) and resume it under the same id; node.Manager has
// it. Without it the routes answer 501.
type Pauser interface {
	Pause(ctx context.Context, id string) (sandbox.Sandbox, error)
	// Resume gives the sandbox timeout, or the paused run's if zero.
	Resume(ctx context.Context, id string, timeout time.Duration) (sandbox.Sandbox, error)
}

// Defaults and bounds of request bodies.
const (
	// DefaultMaxUploadBytes bounds one file upload (a tar stream).
	DefaultMaxUploadBytes = 2 << 30
	// maxJSONBytes bounds every JSON request body.
	maxJSONBytes = 1 << 20
	// maxListLimit bounds ?limit on list endpoints.
	maxListLimit = 1000
)

// Config wires a Server.
type Config struct {
	Sandboxes Sandboxes // required
	// Auth authenticates every /api/v1 request (required, or Tokens).
	Auth Authenticator
	// Tokens is the file token store from before teams, used through
	// TokenStoreAuthenticator when Auth is nil.
	Tokens TokenStore
	// Accounts manages teams, users and tokens; nil makes /teams and
	// /tokens answer 501.
	Accounts Accounts
	Logger   *slog.Logger
	// MaxUploadBytes bounds one upload to /files; 0 means DefaultMaxUploadBytes.
	MaxUploadBytes int64
	// StagingDir is the server's own directory for uploads it keeps whole
	// before use (image imports), emptied by New; "" stages them in
	// os.TempDir(), which may be a RAM-backed tmpfs. StagingBytes bounds
	// what all uploads in flight stage together (DefaultStagingBytes if 0).
	StagingDir   string
	StagingBytes int64
	// PortBaseURL is the proxy's public base ("http://localhost:7420"),
	// from which sandbox routes are built; empty shows no routes.
	PortBaseURL string
	// Signer signs port URLs; nil makes signed-url answer 501.
	Signer *proxy.Signer
	// Images is the host's image store; nil makes /images answer 501.
	Images Images
	// ImageKeychain lets every team's pulls without credentials use the
	// server's docker keychain (the operator's registry logins); without
	// it only the host admin's do.
	ImageKeychain bool
	// Snapshots takes and keeps sandbox snapshots; nil makes the snapshot
	// and fork endpoints answer 501.
	Snapshots Snapshots
	// Volumes keeps named volumes; nil makes /volumes answer 501.
	Volumes Volumes
	// Projects is the project control plane; nil makes /projects and
	// /activations answer 501.
	Projects Projects
	// Apps is the path form of the app proxy (internal/proxy's AppProxy),
	// served at /projects/{id}/app/... for every method once the caller is
	// authenticated; nil answers 501 there.
	Apps http.Handler
	// History keeps commands after their sandbox stopped (see
	// history.go); nil answers commands only while the sandbox runs.
	History History
	// Pools are the host's warm pools; nil makes /pools answer 501.
	Pools Pools
	// Admission shows and sets teams' limits (/teams/{id}/limits); nil
	// answers 501 there. Creates are admitted below the server, in
	// Sandboxes.
	Admission Admission
	// Metering answers /usage and /teams/{id}/budget (see usage.go); nil
	// makes them answer 501.
	Metering Metering
	// Ready is GET /readyz's check: nil when every dependency can serve,
	// else an error saying what cannot (ErrUnavailable, with a code). nil
	// Ready: always ready.
	Ready func(ctx context.Context) error
	// Events is the lifecycle event feed (GET /events); nil answers 501.
	Events Events
	// Webhooks keeps teams' webhooks; nil makes /webhooks answer 501.
	Webhooks Webhooks
	// Runtimes lists the host's runtimes (GET /runtimes); nil answers 501.
	Runtimes Runtimes
}

// Validate reports a missing dependency or an impossible bound.
func (c Config) Validate() error {
	switch {
	case c.Sandboxes == nil:
		return errors.New("server config: Sandboxes is required")
	case c.Auth == nil && c.Tokens == nil:
		return errors.New("server config: Auth (or Tokens) is required")
	case c.MaxUploadBytes < 0 || c.StagingBytes < 0:
		return fmt.Errorf("server config: MaxUploadBytes %d or StagingBytes %d is negative", c.MaxUploadBytes, c.StagingBytes)
	}
	return nil
}

// Server serves the API and the health probes (/healthz, /readyz). It
// holds no goroutines of its own: every goroutine it starts belongs to one
// request and ends with it (image pulls belong to the image store).
type Server struct {
	sb        Sandboxes
	auth      Authenticator
	accounts  Accounts
	log       *slog.Logger
	maxUpload int64
	staging   *staging // image imports
	baseURL   string
	signer    *proxy.Signer
	images    Images
	// imageKeychain: see Config.ImageKeychain.
	imageKeychain bool
	snaps         Snapshots
	volumes       Volumes
	projects      Projects
	apps          http.Handler
	history       History
	pools         Pools
	admission     Admission
	metering      Metering
	ready         func(context.Context) error
	events        Events
	webhooks      Webhooks
	runtimes      Runtimes
	mux           *http.ServeMux
	handler       http.Handler

	// streams is cancelled by CloseStreams; log streams and long polls
	// derive from it so a shutdown need not wait for them.
	streams     context.Context
	stopStreams context.CancelFunc
}

// New builds a server from cfg.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{
		sb:            cfg.Sandboxes,
		auth:          cfg.Auth,
		accounts:      cfg.Accounts,
		log:           cfg.Logger,
		maxUpload:     cfg.MaxUploadBytes,
		baseURL:       cfg.PortBaseURL,
		signer:        cfg.Signer,
		images:        cfg.Images,
		imageKeychain: cfg.ImageKeychain,
		snaps:         cfg.Snapshots,
		volumes:       cfg.Volumes,
		projects:      cfg.Projects,
		apps:          cfg.Apps,
		history:       cfg.History,
		pools:         cfg.Pools,
		runtimes:      cfg.Runtimes,
		admission:     cfg.Admission,
		metering:      cfg.Metering,
		ready:         cfg.Ready,
		events:        cfg.Events,
		webhooks:      cfg.Webhooks,
		mux:           http.NewServeMux(),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.auth == nil {
		s.auth = TokenStoreAuthenticator(cfg.Tokens)
	}
	if s.maxUpload == 0 {
		s.maxUpload = DefaultMaxUploadBytes
	}
	var err error
	if s.staging, err = stagingFor(cfg); err != nil {
		return nil, err
	}
	s.streams, s.stopStreams = context.WithCancel(context.Background())
	s.routes()
	s.handler = s.logRequests(s.recoverPanics(s.authenticate(http.HandlerFunc(s.route))))
	return s, nil
}

// Handler returns the HTTP handler of the whole API.
func (s *Server) Handler() http.Handler { return s.handler }

// CloseStreams ends open log streams (with an error line) and long polls
// (with 503 "server_shutting_down"), which could otherwise last as long as
// their commands, so a graceful shutdown finishes promptly. Commands keep
// running. Register it with http.Server.RegisterOnShutdown.
func (s *Server) CloseStreams() { s.stopStreams() }

var errShuttingDown = sandbox.Errorf(sandbox.ErrUnavailable, "server_shutting_down", "the server is shutting down; retry shortly")

// longPoll returns a context for a request that may last as long as a
// command: it ends with the request or with CloseStreams.
func (s *Server) longPoll(r *http.Request) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(s.streams, cancel)
	return ctx, func() { stop(); cancel() }
}

// shutdownErr reports errShuttingDown when err came from CloseStreams.
func (s *Server) shutdownErr(r *http.Request, err error) error {
	if s.streams.Err() != nil && r.Context().Err() == nil {
		return errShuttingDown
	}
	return err
}

// route is one endpoint; the table is also what the OpenAPI test checks.
type route struct {
	method, path string // path below api.Prefix
	handle       func(*Server, http.ResponseWriter, *http.Request) error
}

var routeTable = []route{
	{"POST", "/sandboxes", (*Server).createSandbox},
	{"GET", "/sandboxes", (*Server).listSandboxes},
	{"GET", "/sandboxes/{id}", (*Server).getSandbox},
	{"DELETE", "/sandboxes/{id}", (*Server).deleteSandbox},
	{"POST", "/sandboxes/{id}/stop", (*Server).stopSandbox},
	{"POST", "/sandboxes/{id}/extend-timeout", (*Server).extendTimeout},
	{"POST", "/sandboxes/{id}/pause", (*Server).pauseSandbox},
	{"POST", "/sandboxes/{id}/resume", (*Server).resumeSandbox},
	{"GET", "/sandboxes/{id}/stats", (*Server).sandboxStats},
	{"GET", "/sandboxes/{id}/ports", (*Server).listPorts},
	{"POST", "/sandboxes/{id}/ports", (*Server).addPorts},
	{"POST", "/sandboxes/{id}/ports/{port}/signed-url", (*Server).signPortURL},
	{"PUT", "/sandboxes/{id}/network-policy", (*Server).updateNetworkPolicy},
	{"PUT", "/sandboxes/{id}/labels", (*Server).setLabels},

	{"POST", "/sandboxes/{id}/commands", (*Server).runCommand},
	{"GET", "/sandboxes/{id}/commands", (*Server).listCommands},
	{"GET", "/sandboxes/{id}/commands/{cmd}", (*Server).getCommand},
	{"GET", "/sandboxes/{id}/commands/{cmd}/wait", (*Server).waitCommand},
	{"GET", "/sandboxes/{id}/commands/{cmd}/logs", (*Server).commandLogs},
	{"POST", "/sandboxes/{id}/commands/{cmd}/kill", (*Server).killCommand},
	{"POST", "/sandboxes/{id}/commands/{cmd}/stdin", (*Server).commandStdin},

	{"POST", "/sandboxes/{id}/pty", (*Server).startPTY},
	{"GET", "/sandboxes/{id}/pty/{cmd}/output", (*Server).ptyOutput},
	{"POST", "/sandboxes/{id}/pty/{cmd}/input", (*Server).ptyInput},
	{"POST", "/sandboxes/{id}/pty/{cmd}/resize", (*Server).ptyResize},
	{"GET", "/sandboxes/{id}/watch", (*Server).watch},

	{"PUT", "/sandboxes/{id}/files", (*Server).writeFiles},
	{"POST", "/sandboxes/{id}/files", (*Server).writeFiles},
	{"GET", "/sandboxes/{id}/files", (*Server).readFile},
	{"GET", "/sandboxes/{id}/archive", (*Server).readArchive},
	{"POST", "/sandboxes/{id}/directories", (*Server).mkdir},
	{"GET", "/sandboxes/{id}/directories", (*Server).listDirectory},

	{"POST", "/images/pull", (*Server).pullImage},
	{"POST", "/images/import", (*Server).importImage},
	{"GET", "/images", (*Server).listImages},
	{"GET", "/images/{ref...}", (*Server).getImage},
	{"DELETE", "/images", (*Server).removeImage},

	{"POST", "/sandboxes/{id}/snapshot", (*Server).snapshotSandbox},
	{"POST", "/sandboxes/{id}/fork", (*Server).forkSandbox},
	{"GET", "/snapshots", (*Server).listSnapshots},
	{"GET", "/snapshots/{id}", (*Server).getSnapshot},
	{"DELETE", "/snapshots/{id}", (*Server).deleteSnapshot},

	{"POST", "/teams", (*Server).createTeam},
	{"GET", "/teams", (*Server).listTeams},
	{"POST", "/teams/{id}/users", (*Server).createUser},
	{"GET", "/teams/{id}/users", (*Server).listUsers},
	{"DELETE", "/teams/{id}/users/{user}", (*Server).deleteUser},
	{"GET", "/teams/{id}/limits", (*Server).getTeamLimits},
	{"PUT", "/teams/{id}/limits", (*Server).setTeamLimits},
	{"DELETE", "/teams/{id}/limits", (*Server).resetTeamLimits},
	{"POST", "/tokens", (*Server).createToken},
	{"GET", "/tokens", (*Server).listTokens},
	{"DELETE", "/tokens/{id}", (*Server).deleteToken},

	{"POST", "/volumes", (*Server).createVolume},
	{"GET", "/volumes", (*Server).listVolumes},
	{"GET", "/volumes/{name}", (*Server).getVolume},
	{"DELETE", "/volumes/{name}", (*Server).deleteVolume},

	{"POST", "/projects", (*Server).createProject},
	{"GET", "/projects", (*Server).listProjects},
	{"GET", "/projects/{id}", (*Server).getProject},
	{"PUT", "/projects/{id}", (*Server).updateProject},
	{"DELETE", "/projects/{id}", (*Server).deleteProject},
	{"POST", "/projects/{id}/activate", (*Server).activateProject},
	{"POST", "/projects/{id}/deactivate", (*Server).deactivateProject},
	{"POST", "/projects/{id}/heartbeat", (*Server).heartbeatProject},
	{"GET", "/projects/{id}/activations", (*Server).listActivations},
	{"POST", "/projects/{id}/app-url", (*Server).appURL},
	{"GET", "/activations/{id}", (*Server).getActivation},
	{"GET", "/activations/{id}/events", (*Server).activationEvents},

	{"GET", "/usage", (*Server).listUsage},

	{"GET", "/runtimes", (*Server).listRuntimes},

	{"GET", "/pools", (*Server).listPools},
	{"GET", "/pools/{name}", (*Server).getPool},
	{"PUT", "/pools/{name}", (*Server).setPool},
	{"DELETE", "/pools/{name}", (*Server).deletePool},
	{"GET", "/teams/{id}/budget", (*Server).getBudget},
	{"PUT", "/teams/{id}/budget", (*Server).putBudget},
	{"DELETE", "/teams/{id}/budget", (*Server).deleteBudget},
	{"GET", "/events", (*Server).eventFeed},
	{"POST", "/webhooks", (*Server).createWebhook},
	{"GET", "/webhooks", (*Server).listWebhooks},
	{"GET", "/webhooks/{id}", (*Server).getWebhook},
	{"DELETE", "/webhooks/{id}", (*Server).deleteWebhook},
	{"GET", "/webhooks/{id}/deliveries", (*Server).listDeliveries},
}

func (s *Server) routes() {
	for _, rt := range routeTable {
		h := rt.handle
		handle := func(w http.ResponseWriter, r *http.Request) error { return h(s, w, r) }
		if isSandboxRoute(rt.path) {
			handle = s.ownedSandbox(handle)
		}
		s.mux.Handle(rt.method+" "+api.Prefix+rt.path, s.errorHandler(handle))
	}
	for _, rt := range probeTable {
		h := rt.handle
		s.mux.Handle(rt.method+" "+rt.path, s.errorHandler(func(w http.ResponseWriter, r *http.Request) error { return h(s, w, r) }))
	}
	// The app proxy takes every method, so it stays out of routeTable (and
	// the OpenAPI check); the bare prefix is served too, without a redirect
	// that would drop a POST's body.
	s.mux.HandleFunc(api.Prefix+"/projects/{id}/app", s.serveApp)
	s.mux.HandleFunc(api.Prefix+"/projects/{id}/app/", s.serveApp)
}

// route dispatches to the mux, but answers the mux's own 404 and 405 in the
// API's JSON error shape (keeping the Allow header) instead of plain text.
func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	if _, pattern := s.mux.Handler(r); pattern != "" {
		s.mux.ServeHTTP(w, r)
		return
	}
	rec := &headerRecorder{header: http.Header{}}
	s.mux.ServeHTTP(rec, r)
	if rec.status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", rec.header.Get("Allow"))
		s.writeError(w, r, errMethodNotAllowed)
		return
	}
	s.writeError(w, r, errRouteNotFound)
}

// headerRecorder keeps the status and headers of the mux's fallback answers
// and drops their plain-text body.
type headerRecorder struct {
	header http.Header
	status int
}

func (h *headerRecorder) Header() http.Header         { return h.header }
func (h *headerRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (h *headerRecorder) WriteHeader(status int)      { h.status = status }

// errorHandler adapts a handler that returns an error: the error is written
// by writeError, the one place that turns errors into answers.
func (s *Server) errorHandler(h func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	})
}

// logRequests logs one line per request. The sandbox id is read after the
// mux ran, because routing is what fills the path values.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &StatusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		attrs := []slog.Attr{
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.Int("status", sw.StatusOr200()),
			slog.Duration("duration", time.Since(start)),
		}
		if id := r.PathValue("id"); id != "" {
			attrs = append(attrs, slog.String(idLogKey(r.URL.Path), id))
		}
		if cmd := r.PathValue("cmd"); cmd != "" {
			attrs = append(attrs, slog.String("command", cmd))
		}
		level := slog.LevelInfo
		if isProbe(r.URL.Path) && sw.StatusOr200() == http.StatusOK {
			level = slog.LevelDebug // a probe every few seconds is not news
		}
		s.log.LogAttrs(r.Context(), level, "http request", attrs...)
	})
}

// recoverPanics turns a handler panic into a 500 so one bad request cannot
// take the daemon down. http.ErrAbortHandler keeps its meaning.
func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.Error("handler panic", "method", r.Method, "path", r.URL.Path, "panic", v)
			if sw, ok := w.(*StatusWriter); ok && sw.status != 0 {
				// Too late for an error answer: cut the connection so the
				// client sees a broken response rather than a truncated success.
				panic(http.ErrAbortHandler)
			}
			s.writeError(w, r, fmt.Errorf("panic: %v", v))
		}()
		next.ServeHTTP(w, r)
	})
}

// StatusWriter records the status of a response for a request log (the
// API's and the compat layers'). Unwrap lets http.ResponseController reach
// Flush and deadlines of the real writer.
type StatusWriter struct {
	http.ResponseWriter
	status int
}

func (w *StatusWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *StatusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *StatusWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *StatusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Status is the status written so far, 0 before the response began.
func (w *StatusWriter) Status() int { return w.status }

// StatusOr200 is the status to log: net/http answers 200 for a handler
// that wrote nothing.
func (w *StatusWriter) StatusOr200() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}
