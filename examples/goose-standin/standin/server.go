package standin

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"path"
	"path/filepath"
	"sync"
	"time"
)

// SecretHeader is the header that carries the shared secret.
const SecretHeader = "X-Secret-Key"

// unauthenticated are the paths goosed serves without X-Secret-Key (the
// MCP-app pages check a ?secret= themselves; the stand-in has none of them,
// so they are 404).
var unauthenticated = map[string]bool{
	"/status": true, "/features": true,
	"/mcp-ui-proxy": true, "/mcp-app-proxy": true, "/mcp-app-guest": true,
}

// sessionState is a session and what the server keeps for it in memory.
type sessionState struct {
	sess Session
	// agentReady: an agent with a provider is loaded for the session
	// (/agent/resume with load_model_and_extensions, or
	// /agent/update_provider), as goosed keeps one in memory; it does not
	// survive a restart.
	agentReady bool
	// ctx ends when the session is deleted or the server closes: every
	// turn on the session derives from it.
	ctx    context.Context
	cancel context.CancelFunc
	// dirty: the last save failed; Close tries again.
	dirty bool
}

// Server is the stand-in. New loads the sessions; Handler serves the API;
// Close ends streams and turns and flushes the sessions.
type Server struct {
	cfg     Config
	secret  []byte
	log     *slog.Logger
	handler http.Handler
	store   *sessionStore
	confDir *dirStore

	ctx    context.Context // ends at Close: streams and turns stop
	cancel context.CancelFunc
	wg     sync.WaitGroup // turns of POST /sessions/{id}/reply

	mu       sync.Mutex // guards the fields below and the sessions' state
	sessions map[string]*sessionState
	buses    map[string]*bus
	config   configValues
	closed   bool

	closeOnce sync.Once
	closeErr  error
}

// New opens the session directory (DataDir/sessions), loads every session
// in it, and returns a server ready to serve.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	s := &Server{cfg: cfg, log: cfg.Logger, buses: map[string]*bus{}}
	if cfg.Secret != "" {
		s.secret = []byte(cfg.Secret)
	} else {
		// goosed v1.31: a random secret, never printed.
		var b [32]byte
		_, _ = rand.Read(b[:])
		s.secret = []byte(hex.EncodeToString(b[:]))
	}
	var err error
	if s.store, err = openSessionStore(filepath.Join(cfg.DataDir, "sessions")); err != nil {
		return nil, fmt.Errorf("standin: sessions: %w", err)
	}
	loaded, err := s.store.load()
	if err != nil {
		s.store.close()
		return nil, fmt.Errorf("standin: %w", err)
	}
	if s.confDir, err = openDirStore(cfg.ConfigDir); err != nil {
		s.store.close()
		return nil, fmt.Errorf("standin: config: %w", err)
	}
	if s.config, err = loadConfig(s.confDir); err != nil {
		s.store.close()
		s.confDir.close()
		return nil, fmt.Errorf("standin: %w", err)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.sessions = make(map[string]*sessionState, len(loaded))
	for id, sess := range loaded {
		s.sessions[id] = s.newState(*sess)
	}
	s.handler = s.routes()
	s.log.Info("goose stand-in: sessions loaded", "sessions", len(loaded), "dir", filepath.Join(cfg.DataDir, "sessions"))
	return s, nil
}

func (s *Server) newState(sess Session) *sessionState {
	ctx, cancel := context.WithCancel(s.ctx)
	return &sessionState{sess: sess, ctx: ctx, cancel: cancel}
}

func (s *Server) now() time.Time { return s.cfg.Now().UTC() }

// Handler is the whole API, auth and CORS included.
func (s *Server) Handler() http.Handler { return s.handler }

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Close ends every SSE stream and cancels every turn, waits for the
// background turns, and writes any session whose last save failed. It is
// what SIGTERM calls; it is safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		buses := maps.Clone(s.buses)
		s.mu.Unlock()
		s.cancel()
		for _, b := range buses {
			b.close()
		}
		s.wg.Wait()

		s.mu.Lock()
		var errs []error
		for _, st := range s.sessions {
			if st.dirty {
				if err := s.store.save(&st.sess); err != nil {
					errs = append(errs, fmt.Errorf("session %s: %w", st.sess.ID, err))
					continue
				}
				st.dirty = false
			}
		}
		s.mu.Unlock()
		errs = append(errs, s.store.close(), s.confDir.close())
		s.closeErr = errors.Join(errs...)
		s.log.Info("goose stand-in: closed, sessions flushed", "sessions", len(s.sessions))
	})
	return s.closeErr
}

// saveLocked writes st's session; a failure is logged and retried at Close.
func (s *Server) saveLocked(st *sessionState) error {
	if err := s.store.save(&st.sess); err != nil {
		st.dirty = true
		s.log.Error("goose stand-in: cannot save session", "session", st.sess.ID, "err", err)
		return err
	}
	st.dirty = false
	return nil
}

// routes builds the handler: CORS outermost, then auth, then the routes.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", s.handleStatus)
	mux.HandleFunc("GET /features", s.handleFeatures)

	mux.HandleFunc("POST /agent/start", s.handleAgentStart)
	mux.HandleFunc("POST /agent/resume", s.handleAgentResume)
	mux.HandleFunc("POST /agent/stop", s.handleAgentStop)
	mux.HandleFunc("POST /agent/update_provider", s.handleUpdateProvider)

	mux.HandleFunc("GET /sessions", s.handleListSessions)
	mux.HandleFunc("GET /sessions/{id}", s.handleGetSession)
	mux.HandleFunc("DELETE /sessions/{id}", s.handleDeleteSession)
	mux.HandleFunc("GET /sessions/{id}/export", s.handleExportSession)
	mux.HandleFunc("POST /sessions/import", s.handleImportSession)

	mux.HandleFunc("POST /reply", s.handleReply)
	mux.HandleFunc("GET /sessions/{id}/events", s.handleEvents)
	mux.HandleFunc("POST /sessions/{id}/reply", s.handleSessionReply)
	mux.HandleFunc("POST /sessions/{id}/cancel", s.handleCancel)

	mux.HandleFunc("POST /config/read", s.handleConfigRead)
	mux.HandleFunc("POST /config/upsert", s.handleConfigUpsert)
	mux.HandleFunc("POST /config/remove", s.handleConfigRemove)

	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// CORS as goosed's CorsLayer: any origin, method and header, and
		// preflights answered before auth.
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Add("Vary", "origin, access-control-request-method, access-control-request-headers")
		if r.Method == http.MethodOptions {
			h.Set("Access-Control-Allow-Methods", "*")
			h.Set("Access-Control-Allow-Headers", "*")
			w.WriteHeader(http.StatusOK)
			return
		}
		if !unauthenticated[r.URL.Path] && !s.authorized(r) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		// axum matches paths as sent: "..", "." and empty segments match no
		// route (net/http's mux would redirect to the cleaned path).
		if p := r.URL.Path; p == "" || p[0] != '/' || path.Clean(p) != p {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		if next, pattern := mux.Handler(r); pattern == "" {
			// No route: the mux's 404 or 405, with an empty body as axum sends.
			next.ServeHTTP(bareWriter{w}, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// authorized compares X-Secret-Key with the secret in constant time.
func (s *Server) authorized(r *http.Request) bool {
	got := r.Header.Get(SecretHeader)
	return got != "" && subtle.ConstantTimeCompare([]byte(got), s.secret) == 1
}

// bareWriter keeps a response's status and drops its body.
type bareWriter struct{ http.ResponseWriter }

func (b bareWriter) WriteHeader(code int) {
	b.ResponseWriter.Header().Del("Content-Type")
	b.ResponseWriter.Header().Del("X-Content-Type-Options")
	b.ResponseWriter.WriteHeader(code)
}

func (b bareWriter) Write(p []byte) (int, error) { return len(p), nil }

// writeJSON answers v as JSON with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "cannot encode the answer: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(data)
}

// writeError answers goosed's ErrorResponse: {"message": "..."}.
func writeError(w http.ResponseWriter, status int, msg string) {
	data, _ := json.Marshal(struct {
		Message string `json:"message"`
	}{msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(data)
}

// bare answers a status with an empty body, as goosed's handlers that
// return a bare StatusCode do.
func bare(w http.ResponseWriter, status int) { w.WriteHeader(status) }
