package node

import (
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// snapshotPush is how a snapshot of sb reaches the nodes that run its
// runtime's sandboxes: nil for a driver that runs this host's layer
// directories; for a runtime.RegistryImager (Kubernetes), a push of the
// snapshot on top of the registry image sb runs, to
// Config.SnapshotRegistry. Without one, or without a registry image under
// sb, such a snapshot is refused before anything is copied.
func (m *Manager) snapshotPush(sb sandbox.Sandbox) (*image.SnapshotPush, error) {
	d := m.driverOf(sb)
	ri, ok := d.(runtime.RegistryImager)
	if !ok {
		return nil, nil
	}
	if m.cfg.SnapshotRegistry == "" {
		return nil, sandbox.Errorf(sandbox.ErrUnsupported, "snapshot_registry_unset",
			"runtime %q runs registry images: its snapshots are pushed to a registry as images, and this server has none (paddock serve --snapshot-registry)", d.Capabilities().Name)
	}
	base := registryImageOf(sb, ri)
	if base == "" {
		return nil, sandbox.Errorf(sandbox.ErrUnsupported, "no_registry_ref",
			"sandbox %s runs no registry image (image %q) for its snapshot to stack on", sb.ID, sb.Image)
	}
	return &image.SnapshotPush{Repo: m.cfg.SnapshotRegistry, Base: base}, nil
}

// registryImageOf is the registry image sb runs on a RegistryImager:
// Sandbox.ImageRef, or for a record made before it was kept (created from
// an image or the host image: that driver could not snapshot then), what
// it was created from.
func registryImageOf(sb sandbox.Sandbox, ri runtime.RegistryImager) string {
	switch {
	case sb.ImageRef != "":
		return sb.ImageRef
	case sb.Snapshot != "":
		return ""
	case sb.ImageDigest == "":
		return ri.HostImageRef()
	}
	return pinnedRef(sb.Image, sb.ImageDigest)
}
