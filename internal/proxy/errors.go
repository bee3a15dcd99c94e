package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"syscall"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Kinds the proxy adds, for failures past the proxy itself. Both wrap
// sandbox.ErrUnavailable so that any other error writer maps them to 503.
var (
	// ErrBadGateway: the sandbox's port could not be reached or answered badly.
	ErrBadGateway = fmt.Errorf("bad gateway: %w", sandbox.ErrUnavailable)
	// ErrGatewayTimeout: the sandbox's port did not answer in time.
	ErrGatewayTimeout = fmt.Errorf("gateway timeout: %w", sandbox.ErrUnavailable)
)

var (
	errUnauthenticated = sandbox.Errorf(sandbox.ErrUnauthorized, "unauthenticated",
		"this port is private: open it with a signed URL (paddock_token) or send the owner's Authorization: Bearer token")
	errInvalidToken  = sandbox.Errorf(sandbox.ErrForbidden, "invalid_token", "the port token is not valid for this sandbox and port")
	errTokenExpired  = sandbox.Errorf(sandbox.ErrForbidden, "token_expired", "the port token has expired: ask for a new signed URL")
	errUnknownHost   = sandbox.Errorf(sandbox.ErrNotFound, "unknown_host", "the host does not name a sandbox port: use <port>-<sandbox id>.<domain>")
	errBadPath       = sandbox.Errorf(sandbox.ErrNotFound, "not_found", "the path does not name a sandbox port: use /s/<sandbox id>/<port>/")
	errClientClosed  = errors.New("client closed the request")
	statusClientGone = 499 // logged, never sent, as nginx does
)

// statusOf maps an error to the HTTP status and API code the proxy answers.
// It follows the server's mapping but speaks as a gateway: a stopped sandbox
// or a closed port is the upstream's failure (503/502), not a conflict in
// the request. Pure, so tested by table.
func statusOf(err error) (status int, code string) {
	status, code = http.StatusInternalServerError, "internal"
	switch {
	case errors.Is(err, errClientClosed):
		return statusClientGone, "client_closed"
	case errors.Is(err, ErrGatewayTimeout):
		status, code = http.StatusGatewayTimeout, "upstream_timeout"
	case errors.Is(err, ErrBadGateway):
		status, code = http.StatusBadGateway, "bad_gateway"
	case errors.Is(err, sandbox.ErrNotRunning):
		status, code = http.StatusServiceUnavailable, "sandbox_not_running"
	case errors.Is(err, sandbox.ErrNotFound):
		status, code = http.StatusNotFound, "not_found"
	case errors.Is(err, sandbox.ErrInvalid):
		status, code = http.StatusBadRequest, "invalid_argument"
	case errors.Is(err, sandbox.ErrUnauthorized):
		status, code = http.StatusUnauthorized, "unauthorized"
	case errors.Is(err, sandbox.ErrForbidden):
		status, code = http.StatusForbidden, "forbidden"
	case errors.Is(err, sandbox.ErrUnavailable):
		status, code = http.StatusServiceUnavailable, "unavailable"
	case errors.Is(err, sandbox.ErrConflict):
		status, code = http.StatusConflict, "conflict"
	}
	if status != http.StatusInternalServerError {
		if c := sandbox.CodeOf(err); c != "" {
			code = c
		}
	}
	return status, code
}

// upstreamError classifies an error from the transport into a kind, keeping
// the cause in the chain for the log.
func upstreamError(ctx context.Context, sandboxID string, port int, err error) error {
	var ne net.Error
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%w: %w", errClientClosed, err)
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

// writeError answers err as {"error":{"code","message"}}. Internal details
// are logged, never sent; messages of kinded errors are the first
// *sandbox.Error's, so wrapped causes (addresses, syscalls) stay in the log.
func (p *Proxy) writeError(w http.ResponseWriter, r *http.Request, sandboxID string, err error) {
	status, code := statusOf(err)
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
	msg := "internal error"
	var se *sandbox.Error
	if status != http.StatusInternalServerError {
		msg = err.Error()
		if errors.As(err, &se) {
			msg = se.Message
		}
	}
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	if status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="paddock"`)
	}
	data, _ := json.Marshal(api.Error{Error: api.ErrorDetail{Code: code, Message: msg}})
	h.Set("Content-Type", api.ContentTypeJSON)
	w.WriteHeader(status)
	_, _ = w.Write(append(data, '\n'))
}
