package sandbox

import (
	"errors"
	"fmt"
	"time"
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

// CodeSnapshotRunningOnly is the code of the error a snapshot of a stopped
// sandbox fails with on a runtime that snapshots running sandboxes only
// (Kubernetes: a stopped sandbox's Pod is gone with its changes). A caller
// that would stop a sandbox and then snapshot it takes the snapshot first
// on seeing it.
const CodeSnapshotRunningOnly = "snapshot_of_stopped_unsupported"

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

// ElsewhereError says that a sandbox is not this replica's but another's,
// among replicas sharing one store: the HTTP surfaces forward the request
// to URL (see httperr.Forward). Where a request cannot be forwarded, or the
// owner is gone (URL ""), it is ErrUnavailable
// "sandbox_replica_unavailable": the sandbox exists, and may be served
// again once its replica is back or another takes it over.
type ElsewhereError struct {
	ID      string // the sandbox
	TeamID  string // its team: a surface answers another team's "not found" without asking the owner
	Replica string // the replica that runs it (its node name)
	// URL is where Replica serves, "" when it is gone: its liveness lease
	// lapsed, or it never advertised a URL.
	URL string
}

// ElsewhereRetry is how long a client is told to wait before asking again
// for a sandbox whose replica cannot be reached.
const ElsewhereRetry = 2 * time.Second

func (e *ElsewhereError) Error() string {
	if e.URL == "" {
		return fmt.Sprintf("sandbox %s is served by replica %s, which is not reachable now; try again later", e.ID, e.Replica)
	}
	return fmt.Sprintf("sandbox %s is served by replica %s (%s)", e.ID, e.Replica, e.URL)
}

// Unwrap gives the error's kind and code, for a surface that does not
// forward. Its message leaves out the URL: a replica's address is not the
// client's business.
func (e *ElsewhereError) Unwrap() error {
	return &Error{Kind: ErrUnavailable, Code: "sandbox_replica_unavailable",
		Message: fmt.Sprintf("sandbox %s is served by replica %s, which cannot take this request now; try again later", e.ID, e.Replica)}
}

// RetryAfter is when to try again (httperr's Retrier).
func (e *ElsewhereError) RetryAfter() time.Duration { return ElsewhereRetry }
