// Package httperr is the one mapping from paddock's error kinds to HTTP
// statuses and API error codes, and the one writer of the API's error shape
// {"error":{"code","message"}}. The API server and the port proxy both
// answer through it, so a kind means the same status on every surface.
package httperr

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Kinds that only HTTP surfaces raise, for statuses no sandbox kind has.
var (
	ErrMethodNotAllowed = errors.New("method not allowed")     // 405
	ErrUnsupportedMedia = errors.New("unsupported media type") // 415
	// ErrGone: what was asked for existed and is gone for good (410), such
	// as the output of a stopped sandbox's command.
	ErrGone = errors.New("gone")
	// ErrBadGateway: a sandbox's port could not be reached or answered
	// badly (502). It wraps ErrUnavailable: the sandbox side failed.
	ErrBadGateway = fmt.Errorf("bad gateway: %w", sandbox.ErrUnavailable)
	// ErrGatewayTimeout: a sandbox's port did not answer in time (504).
	ErrGatewayTimeout = fmt.Errorf("gateway timeout: %w", sandbox.ErrUnavailable)
)

// StatusClientClosed is what callers log (never send: nobody listens) when
// the client went away before the answer, as nginx does.
const StatusClientClosed = 499

// RetryAfter is the Retry-After, in seconds, of a 429 for exhausted
// capacity whose error says nothing better (see Retrier).
const RetryAfter = 5

// Retrier is an error that knows when to try again, such as admission's
// refusal (a full queue, a passed deadline, the rate window).
type Retrier interface{ RetryAfter() time.Duration }

// RetryAfterSeconds is the Retry-After of err, in whole seconds rounded
// up, at least 1; at most limit when limit > 0 (a surface whose clients give
// up on longer values).
func RetryAfterSeconds(err error, limit time.Duration) int {
	secs := RetryAfter
	var r Retrier
	if errors.As(err, &r) && r.RetryAfter() > 0 {
		secs = int((r.RetryAfter() + time.Second - 1) / time.Second)
	}
	if limit > 0 {
		secs = min(secs, int(limit/time.Second))
	}
	return max(secs, 1)
}

// Status maps err to an HTTP status and an API error code. The code is the
// first *sandbox.Error's when it has one, else a default per kind; anything
// without a kind is a 500 "internal".
func Status(err error) (status int, code string) {
	var maxBytes *http.MaxBytesError
	switch {
	case errors.Is(err, ErrMethodNotAllowed):
		status, code = http.StatusMethodNotAllowed, "method_not_allowed"
	case errors.Is(err, ErrUnsupportedMedia):
		status, code = http.StatusUnsupportedMediaType, "unsupported_media_type"
	case errors.Is(err, ErrGone):
		status, code = http.StatusGone, "gone"
	case errors.As(err, &maxBytes):
		return http.StatusRequestEntityTooLarge, "too_large"
	case errors.Is(err, ErrGatewayTimeout):
		status, code = http.StatusGatewayTimeout, "upstream_timeout"
	case errors.Is(err, ErrBadGateway):
		status, code = http.StatusBadGateway, "bad_gateway"
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
	case errors.Is(err, sandbox.ErrBudgetExceeded):
		// 402 rather than 429: retrying does not help until the month ends
		// or the host admin raises the budget, and clients that back off
		// on 429 would keep trying.
		status, code = http.StatusPaymentRequired, "budget_exceeded"
	case errors.Is(err, sandbox.ErrUnauthorized):
		status, code = http.StatusUnauthorized, "unauthorized"
	case errors.Is(err, sandbox.ErrForbidden):
		status, code = http.StatusForbidden, "forbidden"
	case errors.Is(err, sandbox.ErrUnsupported):
		status, code = http.StatusNotImplemented, "unsupported"
	case errors.Is(err, sandbox.ErrUnavailable):
		status, code = http.StatusServiceUnavailable, "unavailable"
	default:
		return http.StatusInternalServerError, "internal"
	}
	if c := sandbox.CodeOf(err); c != "" {
		code = c
	}
	return status, code
}

// Message is what a client is told about err: nothing for an internal
// error (the caller logs it), else the message of the first *sandbox.Error,
// which says what went wrong without the wrapped causes (addresses,
// syscalls, paths on the host) that stay in the log.
func Message(err error, status int) string {
	var maxBytes *http.MaxBytesError
	var se *sandbox.Error
	switch {
	case status == http.StatusInternalServerError:
		return "internal error"
	case errors.As(err, &maxBytes):
		return "request body exceeds " + strconv.FormatInt(maxBytes.Limit, 10) + " bytes"
	case errors.As(err, &se):
		return se.Message
	default:
		return err.Error()
	}
}

// Write answers err in the API's error shape, with the headers its status
// calls for, and returns the status it sent.
func Write(w http.ResponseWriter, err error) int { return WriteMaxRetry(w, err, 0) }

// WriteMaxRetry is Write with a Retry-After of at most maxRetry (0: no
// bound), for a surface whose clients give up on longer values.
func WriteMaxRetry(w http.ResponseWriter, err error, maxRetry time.Duration) int {
	status, code := Status(err)
	h := w.Header()
	var r Retrier
	switch {
	case status == http.StatusTooManyRequests,
		// Unavailable for a while, such as a sandbox whose replica is
		// gone: the error says when to look again.
		status == http.StatusServiceUnavailable && errors.As(err, &r):
		h.Set("Retry-After", strconv.Itoa(RetryAfterSeconds(err, maxRetry)))
	case status == http.StatusUnauthorized:
		h.Set("WWW-Authenticate", `Bearer realm="paddock"`)
	}
	h.Set("Cache-Control", "no-store")
	WriteJSON(w, status, api.Error{Error: api.ErrorDetail{Code: code, Message: Message(err, status)}})
	return status
}

// WriteJSON answers v as JSON with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
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
