// Package envd serves E2B's sandbox data plane, the API the e2b SDKs call
// "envd" (commands, PTYs, files on port 49983 of a sandbox), and E2B's way
// of reaching the other ports of a sandbox, on paddock itself: the sandbox
// runs no second daemon. Every call is translated into paddock's agent
// protocol on the host side (server.Sandboxes.Agent and Exec).
//
// A request reaches the Handler in one of two forms: the host form
// 49983-<id>.<domain>, or the single host form (sandbox.<domain>, or any
// host E2B_SANDBOX_URL names) whose E2b-Sandbox-Id and E2b-Sandbox-Port
// headers name the sandbox and port. Port 49983 is envd; any other port is
// forwarded through paddock's port proxy (Config.Ports), where E2B's
// e2b-traffic-access-token header stands for the proxy's own token.
//
// Every envd request needs the sandbox's access token (X-Access-Token),
// which the control plane hands out as envdAccessToken in create and
// connect answers; Tokens says how it is made. The Connect protocol is
// served by connect-go with this package's JSON codec over plain Go
// structs (codec.go): paddock's own definitions of the protocol's
// messages, no generated code. Each service adds itself to the Handler's
// mux in its file's init (see addService): process.go the Process service,
// filesystem.go, files.go and watchers.go the Filesystem service and /files.
package envd

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/proxy"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Version is the envd version paddock reports (the control plane's
// envdVersion). The SDKs gate features on it: 0.3.0 lets a command run
// without stdin, 0.4.0 leaves the default user to the server (no
// Authorization header), 0.5.2 allows CloseStdin, 0.5.7 uploads files as
// octet-stream. Later gates (0.6.2 file metadata, 0.6.3 watch events with
// entries, 0.6.4 watches on network mounts) are refused by the SDK itself
// with a clear error until they are served.
const Version = "0.5.7"

// Port is the sandbox port the SDKs reach envd on.
const Port = 49983

// singleLabel is the single host's label under the domain: sandbox.<domain>.
const singleLabel = "sandbox"

// Headers of the single host form, and E2B's token for private ports.
const (
	HeaderSandboxID    = "E2b-Sandbox-Id"
	HeaderSandboxPort  = "E2b-Sandbox-Port"
	HeaderAccessToken  = "X-Access-Token"
	HeaderTrafficToken = "E2b-Traffic-Access-Token"
	// HeaderKeepalive asks a server stream for a keepalive event every so
	// many seconds, so proxies on the way do not close an idle stream.
	HeaderKeepalive = "Keepalive-Ping-Interval"
)

// Sandboxes is what envd needs of paddock's sandbox layer;
// server.Sandboxes has it.
type Sandboxes interface {
	Get(ctx context.Context, id string) (sandbox.Sandbox, error)
	// Agent returns a client for a running sandbox's agent; the caller does not close it.
	Agent(ctx context.Context, id string) (*agent.Client, error)
	// Exec starts a command as the API does (checked, defaults filled,
	// recorded in the history).
	Exec(ctx context.Context, id string, req sandbox.ExecRequest) (agent.Command, error)
	AddPorts(ctx context.Context, id string, ports []sandbox.Port) (sandbox.Sandbox, error)
}

// Config wires a Handler.
type Config struct {
	Sandboxes Sandboxes // required
	Tokens    *Tokens   // required
	// Domain is paddock's domain: 49983-<id>.<Domain> is envd's host form
	// and sandbox.<Domain> the single host. Empty serves the single host
	// form through the headers only.
	Domain string
	// Ports forwards a request to a sandbox port in paddock's path form
	// (/s/<id>/<port>/...): the port proxy's PathHandler. Nil refuses
	// every port but envd's.
	Ports http.Handler
	// Signer makes the port proxy's token for a request that carries a
	// valid traffic token; required with Ports.
	Signer *proxy.Signer
	Logger *slog.Logger
	Now    func() time.Time // nil: time.Now
}

// Handler serves envd and E2B's port forms. Its streams end when their
// requests do; it holds no goroutines of its own.
type Handler struct {
	cfg    Config
	mux    *http.ServeMux
	domain string // Config.Domain, normalized
}

var _ http.Handler = (*Handler)(nil)

// services adds envd's services and routes to a Handler's mux; each
// service's file appends to it in an init, so services are added without
// editing this file.
var services []func(h *Handler, mux *http.ServeMux)

// addService registers f to add a service's routes to every new Handler.
func addService(f func(h *Handler, mux *http.ServeMux)) { services = append(services, f) }

// New builds a Handler.
func New(cfg Config) (*Handler, error) {
	switch {
	case cfg.Sandboxes == nil:
		return nil, errors.New("envd config: Sandboxes is required")
	case cfg.Tokens == nil:
		return nil, errors.New("envd config: Tokens is required")
	case cfg.Ports != nil && cfg.Signer == nil:
		return nil, errors.New("envd config: Signer is required with Ports")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux(), domain: proxy.NormalizeDomain(cfg.Domain)}
	h.mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	for _, add := range services {
		add(h, h.mux)
	}
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.writeError(w, r, sandbox.Errorf(sandbox.ErrNotFound, "not_found", "%s %s is not an envd route paddock serves", r.Method, r.URL.Path))
	})
	return h, nil
}

// Claims reports whether r is for envd or a sandbox port in E2B's forms,
// so paddock's front sends it here before anything else: a host
// 49983-<id>.<domain>, the single host sandbox.<domain>, a request that
// names a sandbox in E2b-Sandbox-Id (E2B_SANDBOX_URL may point at
// paddock's own address), or a port host with one of E2B's tokens (which
// must not reach the sandbox).
func (h *Handler) Claims(r *http.Request) bool {
	if r.Header.Get(HeaderSandboxID) != "" {
		return true
	}
	if h.domain == "" {
		return false
	}
	if sub, ok := proxy.Subdomain(r.Host, h.domain); ok && sub == singleLabel {
		return true
	}
	_, port, ok := proxy.ParseHost(r.Host, h.domain)
	return ok && (port == Port || r.Header.Get(HeaderTrafficToken) != "" || r.Header.Get(HeaderAccessToken) != "")
}

// ServeHTTP finds the sandbox and port a request is for, and serves envd
// or forwards to the port.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, port, err := h.destination(r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	// Another replica's sandbox: that replica checks the tokens (its
	// own) and serves it, so the request goes there as it came.
	if _, err := h.cfg.Sandboxes.Get(r.Context(), id); errors.As(err, new(*sandbox.ElsewhereError)) {
		h.writeError(w, r, err)
		return
	}
	if port != Port {
		h.servePort(w, r, id, port)
		return
	}
	t, err := h.authorize(r, id)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	proxy.ClearDeadlines(w) // streams outlive the API's timeouts
	h.mux.ServeHTTP(w, r.WithContext(withTarget(r.Context(), t)))
}

// destination is the sandbox and port of a request: from its host in the
// host form, else from the headers. A host form whose headers name another
// sandbox or port is refused rather than guessed at.
func (h *Handler) destination(r *http.Request) (string, int, error) {
	hid, hport := r.Header.Get(HeaderSandboxID), r.Header.Get(HeaderSandboxPort)
	if id, port, ok := proxy.ParseHost(r.Host, h.domain); ok && h.domain != "" {
		if (hid != "" && hid != id) || (hport != "" && hport != strconv.Itoa(port)) {
			return "", 0, sandbox.Errorf(sandbox.ErrInvalid, "invalid_sandbox_header",
				"the host names sandbox %s port %d, the %s and %s headers another", id, port, HeaderSandboxID, HeaderSandboxPort)
		}
		return id, port, nil
	}
	if hid == "" {
		return "", 0, sandbox.Errorf(sandbox.ErrNotFound, "sandbox_not_found",
			"name the sandbox in the host (<port>-<id>.<domain>) or in the %s and %s headers", HeaderSandboxID, HeaderSandboxPort)
	}
	if !sandbox.ValidID(hid) {
		return "", 0, sandbox.Errorf(sandbox.ErrNotFound, "sandbox_not_found", "sandbox %q not found", hid)
	}
	port := Port
	if hport != "" {
		p, err := strconv.Atoi(hport)
		if err != nil || p < 1 || p > 65535 || strconv.Itoa(p) != hport {
			return "", 0, sandbox.Errorf(sandbox.ErrInvalid, "invalid_port", "%s %q is not a port", HeaderSandboxPort, hport)
		}
		port = p
	}
	return hid, port, nil
}

// target is the sandbox an envd request is for, resolved and authorized
// by ServeHTTP before any route runs; a route reads it with targetOf.
type target struct {
	TeamID    string
	SandboxID string
	Sandbox   sandbox.Sandbox
	// Agent is the sandbox's agent client; the caller does not close it.
	Agent *agent.Client
	// User is the Linux user the request asked for ("user" or "root"),
	// Sudo whether that is root: see userOf.
	User string
	Sudo bool
	// AccessToken is the sandbox's envd access token, the key of signed
	// file URLs.
	AccessToken string
}

type targetKey struct{}

func withTarget(ctx context.Context, t *target) context.Context {
	return context.WithValue(ctx, targetKey{}, t)
}

// targetOf is the request's target; every route behind ServeHTTP has one.
func targetOf(ctx context.Context) *target {
	t, _ := ctx.Value(targetKey{}).(*target)
	if t == nil {
		panic("envd: a route ran without a target")
	}
	return t
}
