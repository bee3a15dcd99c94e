package sandbox

import (
	"errors"
	"fmt"
)

// Error kinds. Every error that reaches the API wraps one of them; the server
// maps kinds to HTTP statuses in one place.
var (
	ErrNotFound     = errors.New("not found")
	ErrInvalid      = errors.New("invalid argument")
	ErrConflict     = errors.New("conflict")
	ErrTooLarge     = errors.New("too large")
	ErrExhausted    = errors.New("resource exhausted")
	ErrUnauthorized = errors.New("unauthorized")
	ErrForbidden    = errors.New("forbidden")
	ErrUnsupported  = errors.New("unsupported")
	ErrUnavailable  = errors.New("unavailable")
	// ErrBudgetExceeded: the team has spent its monthly budget and its hard
	// cap refuses new work until the month ends or the budget is raised.
	ErrBudgetExceeded = errors.New("budget exceeded")
	ErrNotRunning     = fmt.Errorf("sandbox not running: %w", ErrConflict)
	ErrAgentProtocol  = errors.New("agent protocol error")
)

// Error is an error with a kind (one of the Err values above), a stable
// machine-readable code (such as "invalid_path") and a message for people.
type Error struct {
	Kind    error
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

// Unwrap lets errors.Is match the kind.
func (e *Error) Unwrap() error { return e.Kind }

// Errorf builds an *Error.
func Errorf(kind error, code, format string, args ...any) error {
	return &Error{Kind: kind, Code: code, Message: fmt.Sprintf(format, args...)}
}

// CodeOf returns the code of the first *Error in err's chain, or "".
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}
