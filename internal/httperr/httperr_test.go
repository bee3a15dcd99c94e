package httperr

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

func TestStatus(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		status int
		code   string
	}{
		{"not found kind", sandbox.ErrNotFound, 404, "not_found"},
		{"coded not found, wrapped", fmt.Errorf("get: %w", sandbox.Errorf(sandbox.ErrNotFound, "sandbox_not_found", "no sandbox x")), 404, "sandbox_not_found"},
		{"invalid", sandbox.Errorf(sandbox.ErrInvalid, "invalid_path", "bad"), 400, "invalid_path"},
		{"not running", sandbox.ErrNotRunning, 409, "sandbox_not_running"},
		{"conflict", sandbox.ErrConflict, 409, "conflict"},
		{"too large", sandbox.ErrTooLarge, 413, "too_large"},
		{"max bytes", &http.MaxBytesError{Limit: 10}, 413, "too_large"},
		{"exhausted", sandbox.ErrExhausted, 429, "exhausted"},
		{"budget exceeded", sandbox.Errorf(sandbox.ErrBudgetExceeded, "budget_exceeded", "over budget"), 402, "budget_exceeded"},
		{"unauthorized", sandbox.ErrUnauthorized, 401, "unauthorized"},
		{"forbidden", sandbox.ErrForbidden, 403, "forbidden"},
		{"unsupported", sandbox.ErrUnsupported, 501, "unsupported"},
		{"unavailable", sandbox.ErrUnavailable, 503, "unavailable"},
		{"bad gateway", sandbox.Errorf(ErrBadGateway, "port_not_listening", "x"), 502, "port_not_listening"},
		{"gateway timeout", ErrGatewayTimeout, 504, "upstream_timeout"},
		{"method", ErrMethodNotAllowed, 405, "method_not_allowed"},
		{"media", ErrUnsupportedMedia, 415, "unsupported_media_type"},
		{"plain", errors.New("boom"), 500, "internal"},
		// A code on an error without a kind must not turn a 500 into a 4xx.
		{"code without kind", &sandbox.Error{Code: "x", Message: "y"}, 500, "internal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, code := Status(tt.err)
			if status != tt.status || code != tt.code {
				t.Errorf("Status = %d %q, want %d %q", status, code, tt.status, tt.code)
			}
		})
	}
}

func TestWrite(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		message string
		header  string
	}{
		{"internal details stay in the log", fmt.Errorf("dial 10.0.0.2: %w", errors.New("refused")), "internal error", ""},
		{"wrapped causes are not sent", fmt.Errorf("%w: %w", sandbox.Errorf(ErrBadGateway, "port_not_listening", "nothing listens on port 3000"), errors.New("dial tcp 10.213.0.2:3000")), "nothing listens on port 3000", ""},
		{"retry after", sandbox.ErrExhausted, sandbox.ErrExhausted.Error(), "Retry-After"},
		{"challenge", sandbox.ErrUnauthorized, sandbox.ErrUnauthorized.Error(), "WWW-Authenticate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			status := Write(rec, tt.err)
			var body api.Error
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %q: %v", rec.Body.String(), err)
			}
			if rec.Code != status || body.Error.Message != tt.message || body.Error.Code == "" {
				t.Errorf("answer %d %+v, want message %q", rec.Code, body, tt.message)
			}
			if tt.header != "" && rec.Header().Get(tt.header) == "" {
				t.Errorf("missing %s header", tt.header)
			}
		})
	}
}

// retrier is an error that knows when to try again, as admission's do.
type retrier struct {
	error
	after time.Duration
}

func (r retrier) RetryAfter() time.Duration { return r.after }
func (r retrier) Unwrap() error             { return r.error }

func TestRetryAfter(t *testing.T) {
	full := retrier{sandbox.Errorf(sandbox.ErrExhausted, "queue_full", "full"), 45 * time.Second}
	tests := []struct {
		name  string
		err   error
		limit time.Duration
		want  string
	}{
		{"default", sandbox.ErrExhausted, 0, strconv.Itoa(RetryAfter)},
		{"the error's own", full, 0, "45"},
		{"rounded up", retrier{sandbox.ErrExhausted, 1200 * time.Millisecond}, 0, "2"},
		{"at least a second", retrier{sandbox.ErrExhausted, time.Millisecond}, 0, "1"},
		{"capped for a surface", fmt.Errorf("create: %w", full), 20 * time.Second, "20"},
		{"under the cap", retrier{sandbox.ErrExhausted, 3 * time.Second}, 20 * time.Second, "3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			if status := WriteMaxRetry(rec, tt.err, tt.limit); status != http.StatusTooManyRequests {
				t.Fatalf("status %d", status)
			}
			if got := rec.Header().Get("Retry-After"); got != tt.want {
				t.Errorf("Retry-After %q, want %q", got, tt.want)
			}
		})
	}
}
