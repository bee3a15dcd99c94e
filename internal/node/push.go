package node

import (
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// snapshotPush is how a snapshot of sb reaches the nodes that run its
// runtime's sandboxes: for a runtime.RegistryImager (Kubernetes), a push
// of the snapshot on top of the registry image sb runs, to
// Config.SnapshotRegistry. Without one, or without a registry image under
// sb, such a snapshot is refused before anything is copied. A driver that
// runs this host's layer directories needs none (sharingPush).
func (m *Manager) snapshotPush(sb sandbox.Sandbox, share bool) (*image.SnapshotPush, error) {
	d := m.driverOf(sb)
	ri, ok := d.(runtime.RegistryImager)
	if !ok {
		if !share {
			return nil, nil
		}
		return m.sharingPush(sb), nil
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

// sharingPush is the push of a snapshot of sb, on a driver that runs this
// host's layers, that lets the other replicas sharing the store pull it
// (image.Store.ResolveSnapshot): with Config.SnapshotRegistry set and a
// registry image under sb (Sandbox.ImageRef, else the image it was created
// from, pinned by digest). A push that fails keeps the snapshot on this
// host only, as a snapshot of a sandbox of the host image, of an imported
// image or of a snapshot in no registry is: this replica runs it either
// way, and the others name it (snapshot_on_other_replica).
func (m *Manager) sharingPush(sb sandbox.Sandbox) *image.SnapshotPush {
	if m.cfg.SnapshotRegistry == "" {
		return nil
	}
	base := sb.ImageRef
	if base == "" && sb.Snapshot == "" {
		base = pinnedRef(sb.Image, sb.ImageDigest)
	}
	if base == "" {
		return nil
	}
	return &image.SnapshotPush{Repo: m.cfg.SnapshotRegistry, Base: base, BestEffort: true}
}
