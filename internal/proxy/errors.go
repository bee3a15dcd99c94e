package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"syscall"

	"github.com/paddock-dev/paddock/internal/httperr"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Kinds for failures past the proxy itself (httperr maps them to 502/504).
var (
	// ErrBadGateway: the sandbox's port could not be reached or answered badly.
	ErrBadGateway = httperr.ErrBadGateway
	// ErrGatewayTimeout: the sandbox's port did not answer in time.
	ErrGatewayTimeout = httperr.ErrGatewayTimeout
)

var (
	errUnauthenticated = sandbox.Errorf(sandbox.ErrUnauthorized, "unauthenticated",
		"this port is private: open it with a signed URL (paddock_token) or send the owner's Authorization: Bearer token")
	errInvalidToken  = sandbox.Errorf(sandbox.ErrForbidden, "invalid_token", "the port token is not valid for this sandbox and port")
	errTokenExpired  = sandbox.Errorf(sandbox.ErrForbidden, "token_expired", "the port token has expired: ask for a new signed URL")
	errUnknownHost   = sandbox.Errorf(sandbox.ErrNotFound, "unknown_host", "the host does not name a sandbox port: use <port>-<sandbox id>.<domain>")
	errBadPath       = sandbox.Errorf(sandbox.ErrNotFound, "not_found", "the path does not name a sandbox port: use /s/<sandbox id>/<port>/")
	ErrClientClosed  = errors.New("client closed the request")
	statusClientGone = httperr.StatusClientClosed
)

// StatusOf maps an error to the HTTP status and API code the proxy answers:
// httperr's mapping, plus the client-gone case that is logged, not sent.
// A stopped sandbox reaches it as ErrUnavailable (503, the upstream's
// failure) rather than the API's 409, see notRunning.
func StatusOf(err error) (status int, code string) {
	if errors.Is(err, ErrClientClosed) {
		return statusClientGone, "client_closed"
	}
	return httperr.Status(err)
}

// upstreamError classifies an error from the transport into a kind, keeping
// the cause in the chain for the log.
func upstreamError(ctx context.Context, sandboxID string, port int, err error) error {
	var ne net.Error
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%w: %w", ErrClientClosed, err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w: %w", sandbox.Errorf(ErrBadGateway, "port_not_listening",
			"nothing listens on port %d of sandbox %s", port, sandboxID), err)
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("%w: %w", sandbox.Errorf(ErrGatewayTimeout, "upstream_timeout",
			"port %d of sandbox %s did not answer in time", port, sandboxID), err)
	default:
		return fmt.Errorf("%w: %w", sandbox.Errorf(ErrBadGateway, "bad_gateway",
			"port %d of sandbox %s failed to answer", port, sandboxID), err)
	}
}

// writeError answers err through httperr. Internal details are logged,
// never sent: clients get the first *sandbox.Error's message, so wrapped
// causes (sandbox addresses, syscalls) stay in the log.
func (p *Proxy) writeError(w http.ResponseWriter, r *http.Request, sandboxID string, err error) {
	forwarded, err := httperr.Forward(w, r, err)
	if forwarded {
		return // another replica runs the sandbox, and answered
	}
	status, _ := StatusOf(err)
	log := p.log.With("sandbox", sandboxID, "method", r.Method, "host", r.Host, "path", r.URL.Path)
	switch {
	case status == statusClientGone:
		log.Debug("request canceled by client", "status", status)
		return
	case status == http.StatusInternalServerError:
		log.Error("proxy internal error", "err", err)
	case status >= 500:
		log.Warn("proxy request failed", "status", status, "err", err)
	}
	httperr.Write(w, err)
}
