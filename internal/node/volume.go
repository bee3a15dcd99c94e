package node

import (
	"context"

	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// prepareVolumes resolves the volumes a sandbox mounts into spec.
func (m *Manager) prepareVolumes(ctx context.Context, e *entry, spec *runtime.Spec, vols []sandbox.VolumeMount) error {
	if len(vols) == 0 {
		return nil
	}
	return sandbox.Errorf(sandbox.ErrUnsupported, "volumes_unsupported", "volumes are not supported yet")
}
