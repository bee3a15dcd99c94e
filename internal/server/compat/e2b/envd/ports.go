package envd

import (
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/paddock-dev/paddock/internal/proxy"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// portTokenTTL is the life of the port proxy token a valid traffic token
// is exchanged for: one request's.
const portTokenTTL = time.Minute

var errBadTrafficToken = sandbox.Errorf(sandbox.ErrUnauthorized, "invalid_traffic_token",
	"invalid %s for this sandbox", HeaderTrafficToken)

// servePort forwards a request for a sandbox port other than envd's
// through paddock's port proxy, in its path form. E2B's traffic token, when
// present and valid, is exchanged for the proxy's own token; without it the
// proxy checks its own credentials (a signed URL, the owner's API token,
// its cookie) as for any private port. A sandbox port in E2B needs no
// declaration, so a valid traffic token declares the port (private) first.
// E2B's credential headers never reach the sandbox.
func (h *Handler) servePort(w http.ResponseWriter, r *http.Request, id string, port int) {
	if h.cfg.Ports == nil {
		h.writeError(w, r, sandbox.Errorf(sandbox.ErrUnsupported, "ports_unavailable", "this server does not forward sandbox ports (no networking)"))
		return
	}
	r2 := r.Clone(r.Context())
	if tok := r.Header.Get(HeaderTrafficToken); tok != "" {
		if !equalToken(tok, h.cfg.Tokens.Traffic(id)) {
			h.writeError(w, r, errBadTrafficToken)
			return
		}
		if err := h.declare(r, id, port); err != nil {
			h.writeError(w, r, err)
			return
		}
		r2.Header.Set(proxy.TokenHeader, h.cfg.Signer.Sign(id, port, portTokenTTL))
	}
	for _, k := range []string{HeaderTrafficToken, HeaderAccessToken, HeaderSandboxID, HeaderSandboxPort} {
		r2.Header.Del(k)
	}
	prefix := proxy.PathPrefix(id, port)
	r2.URL.Path = prefix + r.URL.Path
	if r.URL.RawPath != "" {
		r2.URL.RawPath = prefix + r.URL.RawPath
	}
	h.cfg.Ports.ServeHTTP(w, r2)
}

// declare makes port a declared (private) port of a running sandbox id,
// as E2B opens every port.
func (h *Handler) declare(r *http.Request, id string, port int) error {
	sb, err := h.cfg.Sandboxes.Get(r.Context(), id)
	if errors.Is(err, sandbox.ErrNotFound) {
		return notFound(id)
	}
	if err != nil {
		return err
	}
	if sb.State != sandbox.Running || slices.ContainsFunc(sb.Ports, func(p sandbox.Port) bool { return p.Port == port }) {
		return nil // the proxy answers for a sandbox that does not run
	}
	_, err = h.cfg.Sandboxes.AddPorts(r.Context(), id, []sandbox.Port{{Port: port}})
	return err
}
