package server

import (
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/proxy"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Bounds of a signed port URL's life.
const (
	defaultSignedURLTTL = time.Hour
	maxSignedURLTTL     = 7 * 24 * time.Hour
)

var errNoSigner = sandbox.Errorf(sandbox.ErrUnsupported, "proxy_disabled", "this server does not serve sandbox ports")

func (s *Server) addPorts(w http.ResponseWriter, r *http.Request) error {
	id, err := sandboxID(r)
	if err != nil {
		return err
	}
	var req api.AddPortsRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	if len(req.Ports) == 0 {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_port", "ports must not be empty")
	}
	sb, err := s.sb.AddPorts(r.Context(), id, fromAPIPorts(req.Ports))
	if err != nil {
		return sandboxErr(id, err)
	}
	writeJSON(w, http.StatusOK, s.toAPISandbox(sb))
	return nil
}

func (s *Server) signPortURL(w http.ResponseWriter, r *http.Request) error {
	id, err := sandboxID(r)
	if err != nil {
		return err
	}
	port, err := strconv.Atoi(r.PathValue("port"))
	if err != nil || port < 1 || port > 65535 {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_port", "port must be an integer in [1, 65535], got %q", r.PathValue("port"))
	}
	var req api.SignedURLRequest
	if err := decodeJSON(w, r, &req, true); err != nil {
		return err
	}
	ttl, err := signedURLTTL(req.TTLSeconds)
	if err != nil {
		return err
	}
	if s.signer == nil || s.baseURL == "" {
		return errNoSigner
	}
	sb, err := s.sb.Get(r.Context(), id)
	if err != nil {
		return sandboxErr(id, err)
	}
	if !slices.ContainsFunc(sb.Ports, func(p sandbox.Port) bool { return p.Port == port }) {
		return sandbox.Errorf(sandbox.ErrNotFound, "port_not_declared", "port %d of sandbox %s is not declared; add it with POST .../ports", port, id)
	}
	rt, err := proxy.RouteFor(id, port, s.baseURL)
	if err != nil {
		return fmt.Errorf("route of sandbox %s port %d: %w", id, port, err)
	}
	// The token's expiry is whole seconds, as Sign rounds it.
	expires := time.Now().Add(ttl).Truncate(time.Second).UTC()
	tok := s.signer.Sign(id, port, ttl)
	writeJSON(w, http.StatusOK, api.SignedURL{
		URL:       rt.URL + "?" + url.Values{proxy.TokenParam: {tok}}.Encode(),
		ExpiresAt: expires,
	})
	return nil
}

func (s *Server) updateNetworkPolicy(w http.ResponseWriter, r *http.Request) error {
	id, err := sandboxID(r)
	if err != nil {
		return err
	}
	var req api.NetworkPolicy
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	policy, err := fromAPIPolicy(req)
	if err != nil {
		return err
	}
	sb, err := s.sb.UpdateNetworkPolicy(r.Context(), id, policy)
	if err != nil {
		return sandboxErr(id, err)
	}
	writeJSON(w, http.StatusOK, s.toAPISandbox(sb))
	return nil
}

// routesOf builds the URLs of sb's declared ports, or none when the server
// has no proxy base URL.
func (s *Server) routesOf(sb sandbox.Sandbox) []api.Route {
	if s.baseURL == "" || len(sb.Ports) == 0 {
		return nil
	}
	out := make([]api.Route, 0, len(sb.Ports))
	for _, p := range sb.Ports {
		rt, err := proxy.RouteFor(sb.ID, p.Port, s.baseURL)
		if err != nil {
			s.log.Warn("build port route", "sandbox", sb.ID, "port", p.Port, "err", err)
			continue
		}
		out = append(out, api.Route{Port: rt.Port, Subdomain: rt.Subdomain, URL: rt.URL, Public: p.Public})
	}
	return out
}

func fromAPIPorts(ports []api.PortSpec) []sandbox.Port {
	if len(ports) == 0 {
		return nil
	}
	out := make([]sandbox.Port, len(ports))
	for i, p := range ports {
		out[i] = sandbox.Port{Port: p.Port, Public: p.Public}
	}
	return out
}

// fromAPIPolicy parses the CIDRs; the node validates the rest.
func fromAPIPolicy(p api.NetworkPolicy) (sandbox.NetworkPolicy, error) {
	out := sandbox.NetworkPolicy{Mode: p.Mode, AllowDomains: p.AllowDomains}
	var err error
	if out.AllowCIDRs, err = parseCIDRs(p.AllowCIDRs); err != nil {
		return out, err
	}
	if out.DenyCIDRs, err = parseCIDRs(p.DenyCIDRs); err != nil {
		return out, err
	}
	return out, nil
}

func parseCIDRs(in []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, c := range in {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_policy", "invalid CIDR %q", c)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func toAPIPolicy(p sandbox.NetworkPolicy) *api.NetworkPolicy {
	out := &api.NetworkPolicy{Mode: p.Mode, AllowDomains: p.AllowDomains}
	for _, c := range p.AllowCIDRs {
		out.AllowCIDRs = append(out.AllowCIDRs, c.String())
	}
	for _, c := range p.DenyCIDRs {
		out.DenyCIDRs = append(out.DenyCIDRs, c.String())
	}
	return out
}

// HostHandler serves the requests of some hosts: Front asks it first.
type HostHandler interface {
	http.Handler
	HandlesHost(host string) bool
}

// PortProxy is the port proxy as Front uses it (*proxy.Proxy, or a
// wrapper that instruments it).
type PortProxy interface {
	HostHandler
	// PathHandler serves the path form /s/<id>/<port>/.
	PathHandler() http.Handler
}

// Front is the one handler of paddock's HTTP listener: requests for a host
// one of hosts claims (the app proxy's app-<id>.<domain>) go to it, a port
// host (<port>-<id>.<domain>) and the path form /s/<id>/<port>/ to the
// proxy, everything else to the API. A nil proxy serves the API and hosts.
func Front(apiHandler http.Handler, px PortProxy, hosts ...HostHandler) http.Handler {
	var paths http.Handler
	if px != nil {
		paths = px.PathHandler()
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, h := range hosts {
			if h.HandlesHost(r.Host) {
				h.ServeHTTP(w, r)
				return
			}
		}
		switch {
		case px == nil:
			apiHandler.ServeHTTP(w, r)
		case px.HandlesHost(r.Host):
			px.ServeHTTP(w, r)
		case strings.HasPrefix(r.URL.Path, "/s/"):
			paths.ServeHTTP(w, r)
		default:
			apiHandler.ServeHTTP(w, r)
		}
	})
}
