package node

import (
	"context"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// populate fetches src and writes it into the new sandbox.
func (m *Manager) populate(ctx context.Context, e *entry, client *agent.Client, src *sandbox.Source) (*sandbox.SourceInfo, error) {
	return nil, sandbox.Errorf(sandbox.ErrUnsupported, "sources_unsupported", "sources are not supported yet")
}
