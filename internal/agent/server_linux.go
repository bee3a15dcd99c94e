//go:build linux

package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Server is the agent's HTTP server and process supervisor. Start it with
// NewServer, serve with Serve, stop with Close.
type Server struct {
	cfg  ServerConfig
	log  *slog.Logger
	root *os.Root // cfg.Root, for files and mkdir
	mux  *http.ServeMux
	logs *logStore

	// user is who commands run as without sudo and who owns what they
	// write; userErr, when set, why cfg.ImageUser did not resolve. Both
	// are set once in NewServer.
	user    User
	userErr error

	// ctx ends at Close; it bounds the reaper, the command supervisors and
	// every request (so streams and waits end at shutdown).
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // reaper and command supervisors

	mu      sync.Mutex
	cmds    map[string]*command // guarded by mu
	order   []string            // guarded by mu: command ids, oldest first
	running map[int]*command    // guarded by mu: pid -> command not yet reaped
	closed  bool                // guarded by mu
	// watches and watchDirs count open watches and the directories they
	// watch, against cfg.MaxWatches and cfg.MaxWatchDirs.
	watches   int // guarded by mu
	watchDirs int // guarded by mu
	sigchld   chan os.Signal
	shutdown  sync.Once

	// own counts the bytes of the agent's own TCP connections, which the
	// network figures leave out (see handleStats).
	own ownTraffic

	// oom reads the OOM kill counter; oomAdj is the agent's own
	// oom_score_adj, read once at start (see start).
	oom    *oomCounter
	oomAdj int
	// guard is the agent's own OOM killer; nil without a MemoryLimit.
	guard *memGuard
	// mark is the ctime of the state dir's ChangesMark, from which the
	// changes stream counts the sandbox's changes; markErr, when set, why
	// there is none. Set once in NewServer.
	mark    unix.Timespec
	markErr error
}

// NewServer prepares the state dir and starts the reaper.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("agent: create state dir: %w", err)
	}
	// MkdirAll keeps an existing dir's mode; the logs must stay private.
	if err := os.Chmod(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("agent: chmod state dir: %w", err)
	}
	root, err := os.OpenRoot(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("agent: open root: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		root:    root,
		logs:    newLogStore(cfg),
		ctx:     ctx,
		cancel:  cancel,
		cmds:    make(map[string]*command),
		running: make(map[int]*command),
		sigchld: make(chan os.Signal, 1),
		oom:     newOOMCounter(cfg.CgroupRoot),
		oomAdj:  ownOOMScoreAdj(),
	}
	if cfg.MemoryLimit > 0 {
		if s.guard, err = newMemGuard(cfg.CgroupRoot, cfg.MemoryLimit); err != nil {
			cancel()
			root.Close()
			return nil, fmt.Errorf("agent: memory limit: %w", err)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.guard.run(ctx.Done(), s.log.Warn)
		}()
	}
	if s.mark, s.markErr = startMark(cfg.StateDir); s.markErr != nil {
		s.log.Error("no start mark: refusing the changes stream", "err", s.markErr)
	}
	if s.user, s.userErr = s.loadUser(); s.userErr != nil {
		s.log.Error("image user not resolved: refusing commands and writes", "user", cfg.ImageUser, "err", s.userErr)
	} else {
		for _, dir := range cfg.OwnIfEmpty {
			if err := ownIfEmpty(dir, int(s.user.UID), int(s.user.GID)); err != nil {
				// The sandbox still runs: it may only read the volume.
				s.log.Warn("give an empty volume to the sandbox user", "dir", dir, "err", err)
			}
		}
	}
	s.routes()
	signal.Notify(s.sigchld, unix.SIGCHLD)
	s.wg.Add(1)
	go s.reap()
	return s, nil
}

func (s *Server) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /v1/ping", s.handlePing)
	m.HandleFunc("POST /v1/commands", s.handleStart)
	m.HandleFunc("POST /v1/warm", s.handleWarm)
	m.HandleFunc("GET /v1/commands", s.handleList)
	m.HandleFunc("GET /v1/commands/{id}", s.handleGet)
	m.HandleFunc("GET /v1/commands/{id}/wait", s.handleWait)
	m.HandleFunc("GET /v1/commands/{id}/output", s.handleOutput)
	m.HandleFunc("POST /v1/commands/{id}/signal", s.handleSignal)
	m.HandleFunc("POST /v1/commands/{id}/stdin", s.handleStdin)
	m.HandleFunc("POST /v1/commands/{id}/resize", s.handleResize)
	m.HandleFunc("PUT /v1/files", s.handleWriteTar)
	m.HandleFunc("GET /v1/files", s.handleReadFile)
	m.HandleFunc("GET /v1/archive", s.handleReadArchive)
	m.HandleFunc("GET /v1/changes", s.handleChanges)
	m.HandleFunc("POST /v1/mkdir", s.handleMkdir)
	m.HandleFunc("PUT /v1/file", s.handleWriteFile)
	m.HandleFunc("GET /v1/stat", s.handleStat)
	m.HandleFunc("GET /v1/list", s.handleListDir)
	m.HandleFunc("POST /v1/move", s.handleMove)
	m.HandleFunc("POST /v1/remove", s.handleRemove)
	m.HandleFunc("GET /v1/ports", s.handlePorts)
	m.HandleFunc("GET /v1/stats", s.handleStats)
	m.HandleFunc("GET /v1/watch", s.handleWatch)
	s.mux = m
}

// Handler exposes the routes (for tests and embedding), behind the
// credential check when the config has a token.
func (s *Server) Handler() http.Handler {
	if s.cfg.Token != "" {
		return requireToken(s.cfg.Token, s.mux)
	}
	return s.mux
}

// Serve answers requests on ln until ctx ends or Close is called, then shuts
// the HTTP server down gracefully. It returns nil after such a stop.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 30 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return s.ctx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	ln = s.own.listener(ln)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("agent serve: %w", err)
	case <-ctx.Done():
	case <-s.ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := hs.Shutdown(sctx)
	<-errc
	if err != nil {
		return fmt.Errorf("agent shutdown: %w", err)
	}
	return nil
}

// Close kills every running command's process group, waits for their
// supervisors and the reaper, and ends open streams.
func (s *Server) Close() error {
	s.shutdown.Do(func() {
		s.mu.Lock()
		s.closed = true
		for pid := range s.running {
			_ = unix.Kill(-pid, unix.SIGKILL)
		}
		s.mu.Unlock()
		// Supervisors must see their exit statuses before the reaper
		// stops, so wait for them first, then cancel.
		s.waitSupervisors()
		s.cancel()
		s.wg.Wait()
		signal.Stop(s.sigchld)
		s.logs.close()
		s.oom.close()
		s.root.Close()
	})
	return nil
}

func (s *Server) waitSupervisors() {
	s.mu.Lock()
	cmds := make([]*command, 0, len(s.cmds))
	for _, c := range s.cmds {
		cmds = append(cmds, c)
	}
	s.mu.Unlock()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for _, c := range cmds {
		select {
		case <-c.done:
		case <-deadline.C:
			s.log.Warn("agent close: command did not finish", "command", c.id)
			return
		}
	}
}

func (s *Server) handlePing(w http.ResponseWriter, _ *http.Request) {
	info := Info{Version: s.cfg.Version, PID: os.Getpid(), Seccomp: s.cfg.Seccomp}
	if s.guard != nil {
		info.OOMKills = s.guard.kills.Load()
	}
	s.userAnswer(&info)
	writeJSON(w, http.StatusOK, info)
}

// writeJSON is the one place answers are encoded.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError is the one place errors become HTTP answers.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status := StatusForKind(err)
	code := sandbox.CodeOf(err)
	if code == "" {
		code = "internal"
	}
	if status >= 500 {
		s.log.Error("agent request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	var body ErrorBody
	body.Error.Code = code
	body.Error.Message = err.Error()
	writeJSON(w, status, body)
}
