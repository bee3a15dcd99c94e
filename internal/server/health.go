package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// probeTable is served outside api.Prefix and without authentication: the
// probes of a load balancer, a kubelet or a supervisor. The OpenAPI test
// checks it with routeTable.
var probeTable = []route{
	{"GET", "/healthz", (*Server).healthz},
	{"GET", "/readyz", (*Server).readyz},
}

// readyTimeout bounds one readiness check: a probe that hangs is worse
// than one that fails.
const readyTimeout = 5 * time.Second

// healthz answers as long as the process serves HTTP.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, err := fmt.Fprintln(w, "ok")
	return err
}

// readyz answers 200 when Config.Ready finds every dependency able to
// serve, else 503 with the error naming what is not ready.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	if s.ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		if err := s.ready(ctx); err != nil {
			if !errors.Is(err, sandbox.ErrUnavailable) {
				err = fmt.Errorf("%w: %w", errNotReady, err)
			}
			return err
		}
	}
	return s.healthz(w, r)
}

var errNotReady = sandbox.Errorf(sandbox.ErrUnavailable, "not_ready", "the server is not ready")

// isProbe reports whether path is one of probeTable's.
func isProbe(path string) bool {
	for _, rt := range probeTable {
		if rt.path == path {
			return true
		}
	}
	return false
}
