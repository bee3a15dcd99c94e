package server

import (
	"context"
	"errors"
	"net/http"

	"github.com/paddock-dev/paddock/internal/httperr"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Errors the server itself raises. Each wraps a kind so that httperr maps
// them like errors from any other layer.
var (
	errMethodNotAllowed = sandbox.Errorf(httperr.ErrMethodNotAllowed, "method_not_allowed", "method not allowed")
	errRouteNotFound    = sandbox.Errorf(sandbox.ErrNotFound, "not_found", "no such endpoint")
	errUnauthenticated  = sandbox.Errorf(sandbox.ErrUnauthorized, "unauthenticated", "missing bearer token: send Authorization: Bearer <token>")
	errInvalidToken     = sandbox.Errorf(sandbox.ErrUnauthorized, "invalid_token", "the bearer token is not valid")
	errUnsupportedMedia = sandbox.Errorf(httperr.ErrUnsupportedMedia, "unsupported_media_type",
		"upload a tar stream: Content-Type application/x-tar, application/gzip or application/octet-stream")
)

// statusClientClosed is logged (never sent: nobody is listening) when the
// client went away before the answer, as nginx does.
const statusClientClosed = httperr.StatusClientClosed

// writeError answers err through httperr, the one mapping from error kinds
// to statuses and codes. Internal details are logged, never sent. A request
// for a sandbox another replica runs goes there when it still can.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	forwarded, err := httperr.Forward(w, r, err)
	if forwarded {
		return
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		s.log.Debug("request canceled by client", "method", r.Method, "path", r.URL.Path, "status", statusClientClosed)
		return
	}
	status, _ := httperr.Status(err)
	switch {
	case status == http.StatusInternalServerError:
		s.log.Error("internal error", "method", r.Method, "path", r.URL.Path,
			"sandbox", r.PathValue("id"), "err", err)
	case status >= 500:
		s.log.Warn("request failed", "method", r.Method, "path", r.URL.Path,
			"sandbox", r.PathValue("id"), "status", status, "err", err)
	}
	httperr.Write(w, err)
}

// writeJSON answers v as JSON with status.
func writeJSON(w http.ResponseWriter, status int, v any) { httperr.WriteJSON(w, status, v) }
