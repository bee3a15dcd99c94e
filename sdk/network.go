package sdk

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/paddock-dev/paddock/api"
)

// AddPorts declares more ports to serve through the proxy; the sandbox's
// Routes are updated.
func (s *Sandbox) AddPorts(ctx context.Context, ports ...api.PortSpec) error {
	return s.c.do(ctx, http.MethodPost, sandboxPath(s.ID)+"/ports", nil, api.AddPortsRequest{Ports: ports}, &s.Sandbox)
}

// SignedURL returns a URL that opens a declared private port for ttl
// (0 means the server's default of one hour).
func (s *Sandbox) SignedURL(ctx context.Context, port int, ttl time.Duration) (api.SignedURL, error) {
	var out api.SignedURL
	err := s.c.do(ctx, http.MethodPost, sandboxPath(s.ID)+"/ports/"+strconv.Itoa(port)+"/signed-url", nil,
		api.SignedURLRequest{TTLSeconds: int64(ttl / time.Second)}, &out)
	return out, err
}

// SetNetworkPolicy replaces the running sandbox's egress policy.
func (s *Sandbox) SetNetworkPolicy(ctx context.Context, p api.NetworkPolicy) error {
	return s.c.do(ctx, http.MethodPut, sandboxPath(s.ID)+"/network-policy", nil, p, &s.Sandbox)
}
