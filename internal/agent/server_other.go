//go:build !linux

package agent

import (
	"context"
	"fmt"
	"net"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Server is the in-sandbox agent; it only runs on Linux.
type Server struct{}

// NewServer fails: the agent runs inside Linux sandboxes only.
func NewServer(cfg ServerConfig) (*Server, error) {
	return nil, fmt.Errorf("agent server: %w on this OS", sandbox.ErrUnsupported)
}

// Serve is unreachable without a Server.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	return fmt.Errorf("agent server: %w on this OS", sandbox.ErrUnsupported)
}

// Close does nothing.
func (s *Server) Close() error { return nil }
