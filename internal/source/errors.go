package source

import (
	"context"
	"errors"
	"net"

	"github.com/paddock-dev/paddock/internal/netguard"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Error codes of a failed fetch. All are 400s but too large (413) and a
// refused address (403): the source, not the caller's request to paddock,
// is what went wrong, and the message says how.
const (
	CodeInvalid          = "source_invalid"
	CodeAuthFailed       = "source_auth_failed"
	CodeNotFound         = "source_not_found"
	CodeUnreachable      = "source_unreachable"
	CodeRevisionNotFound = "source_revision_not_found"
	CodeEmpty            = "source_empty"
	CodeTooLarge         = "source_too_large"
	CodeForbidden        = "source_address_forbidden"
	CodeInvalidEntry     = "source_invalid_entry"
	CodeInvalidArchive   = "source_invalid_archive"
)

func invalidf(code, format string, args ...any) error {
	return sandbox.Errorf(sandbox.ErrInvalid, code, format, args...)
}

func entryErrorf(format string, args ...any) error {
	return sandbox.Errorf(sandbox.ErrInvalid, CodeInvalidEntry, format, args...)
}

func tooLarge(what string, limit int64) error {
	return sandbox.Errorf(sandbox.ErrTooLarge, CodeTooLarge, "the source's %s exceeds the limit of %d bytes", what, limit)
}

// networkError turns a transport failure into an API error. The host is
// named; the URL is not, since it may carry a query-string secret.
func networkError(ctx context.Context, host string, err error) error {
	var be *netguard.BlockedError
	var dnsErr *net.DNSError
	var se *sandbox.Error
	switch {
	case errors.As(err, &se):
		return err
	case errors.As(err, &be):
		return sandbox.Errorf(sandbox.ErrForbidden, CodeForbidden,
			"source host %s: %s (sources may not reach link-local, multicast, sandbox or, unless the server allows it, loopback and private addresses)", host, be.Error())
	case errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil:
		return sandbox.Errorf(sandbox.ErrInvalid, CodeUnreachable, "source host %s: the fetch timed out", host)
	case errors.As(err, &dnsErr):
		return sandbox.Errorf(sandbox.ErrInvalid, CodeUnreachable, "source host %s could not be resolved", host)
	}
	return sandbox.Errorf(sandbox.ErrInvalid, CodeUnreachable, "source host %s could not be reached: %v", host, err)
}
