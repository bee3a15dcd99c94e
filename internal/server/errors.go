package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Errors the server itself raises. Each wraps a sandbox kind so that
// writeError maps them like errors from any other layer; the two that need a
// status no kind has (405, 415) are matched by identity first.
var (
	errMethodNotAllowed = sandbox.Errorf(sandbox.ErrInvalid, "method_not_allowed", "method not allowed")
	errRouteNotFound    = sandbox.Errorf(sandbox.ErrNotFound, "not_found", "no such endpoint")
	errUnauthenticated  = sandbox.Errorf(sandbox.ErrUnauthorized, "unauthenticated", "missing bearer token: send Authorization: Bearer <token>")
	errInvalidToken     = sandbox.Errorf(sandbox.ErrUnauthorized, "invalid_token", "the bearer token is not valid")
	errUnsupportedMedia = sandbox.Errorf(sandbox.ErrInvalid, "unsupported_media_type",
		"upload a tar stream: Content-Type application/x-tar, application/gzip or application/octet-stream")
)

// statusClientClosed is logged (never sent: nobody is listening) when the
// client went away before the answer, as nginx does.
const statusClientClosed = 499

// writeError is the one function that turns an error into an HTTP status and
// an API error code. Internal details are logged, never sent.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, code, msg := http.StatusInternalServerError, "internal", "internal error"
	var maxBytes *http.MaxBytesError
	switch {
	case errors.Is(err, errMethodNotAllowed):
		status = http.StatusMethodNotAllowed
	case errors.Is(err, errUnsupportedMedia):
		status = http.StatusUnsupportedMediaType
	case errors.As(err, &maxBytes):
		status, code, msg = http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("request body exceeds %d bytes", maxBytes.Limit)
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		s.log.Debug("request canceled by client", "method", r.Method, "path", r.URL.Path, "status", statusClientClosed)
		return
	case errors.Is(err, sandbox.ErrNotRunning):
		status, code = http.StatusConflict, "sandbox_not_running"
	case errors.Is(err, sandbox.ErrNotFound):
		status, code = http.StatusNotFound, "not_found"
	case errors.Is(err, sandbox.ErrInvalid):
		status, code = http.StatusBadRequest, "invalid_argument"
	case errors.Is(err, sandbox.ErrConflict):
		status, code = http.StatusConflict, "conflict"
	case errors.Is(err, sandbox.ErrTooLarge):
		status, code = http.StatusRequestEntityTooLarge, "too_large"
	case errors.Is(err, sandbox.ErrExhausted):
		// 429 rather than 507: the client can retry once capacity frees up.
		status, code = http.StatusTooManyRequests, "exhausted"
		w.Header().Set("Retry-After", "5")
	case errors.Is(err, sandbox.ErrUnauthorized):
		status, code = http.StatusUnauthorized, "unauthorized"
		w.Header().Set("WWW-Authenticate", `Bearer realm="paddock"`)
	case errors.Is(err, sandbox.ErrForbidden):
		status, code = http.StatusForbidden, "forbidden"
	case errors.Is(err, sandbox.ErrUnsupported):
		status, code = http.StatusNotImplemented, "unsupported"
	case errors.Is(err, sandbox.ErrUnavailable):
		status, code = http.StatusServiceUnavailable, "unavailable"
	}
	if status != http.StatusInternalServerError {
		if c := sandbox.CodeOf(err); c != "" {
			code = c
		}
		if msg == "internal error" {
			msg = err.Error()
		}
	} else {
		s.log.Error("internal error", "method", r.Method, "path", r.URL.Path,
			"sandbox", r.PathValue("id"), "err", err)
	}
	if status >= 500 && status != http.StatusInternalServerError {
		s.log.Warn("request failed", "method", r.Method, "path", r.URL.Path,
			"sandbox", r.PathValue("id"), "status", status, "err", err)
	}
	writeJSON(w, status, api.Error{Error: api.ErrorDetail{Code: code, Message: msg}})
}

// writeJSON answers v as JSON with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		// Only unencodable types fail here: a programming error.
		http.Error(w, `{"error":{"code":"internal","message":"encode answer"}}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", api.ContentTypeJSON)
	w.WriteHeader(status)
	_, _ = w.Write(append(data, '\n'))
}
