package node

import (
	"context"
	"path"
	"strings"

	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/volume"
)

// maxVolumes bounds the volumes one sandbox mounts.
const maxVolumes = 8

// Volumes is what the node needs from named volumes; *volume.Manager (the
// host's) and the kubernetes runtime's claim.Manager satisfy it. Acquire
// (which looks the name up in the
// sandbox's team only, so another team's volume is not found) runs before
// the driver creates the sandbox and returns the host directories of the mount at the mount's
// path (a copy-on-write mount's overlay is the driver's to mount), or the
// claim a Pod mounts there;
// Release runs once the driver has stopped it (its processes are gone) and
// is idempotent. Holders lets reconcile release the sandboxes that did not
// survive a restart. SetUser runs once the sandbox's agent has said who its
// user is: a volume still empty gets its root owned by that user.
type Volumes interface {
	Acquire(ctx context.Context, sandboxID, teamID string, m sandbox.VolumeMount) (volume.Dirs, error)
	SetUser(ctx context.Context, sandboxID string, uid, gid uint32) error
	Release(ctx context.Context, sandboxID string) error
	Holders() []string
}

var _ Volumes = (*volume.Manager)(nil)

// normalizeVolumes checks a create request's volumes before anything is
// built and fills the default mode. The driver checks the paths against
// its own mounts again; here they only need to be well-formed and apart.
func normalizeVolumes(cfg *Config, vols []sandbox.VolumeMount) ([]sandbox.VolumeMount, error) {
	if len(vols) == 0 {
		return nil, nil
	}
	if cfg.Volumes == nil {
		return nil, sandbox.Errorf(sandbox.ErrUnsupported, "volumes_unsupported", "this host has no volumes")
	}
	if len(vols) > maxVolumes {
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "too_many_volumes", "at most %d volumes per sandbox, got %d", maxVolumes, len(vols))
	}
	out := make([]sandbox.VolumeMount, 0, len(vols))
	for _, v := range vols {
		if !volume.ValidName(v.Volume) {
			return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_volume_name", "invalid volume name %q", v.Volume)
		}
		switch v.Mode {
		case "":
			v.Mode = sandbox.VolumeReadWrite
		case sandbox.VolumeReadWrite, sandbox.VolumeCopyOnWrite:
		default:
			return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_volume_mode", "volume mode must be %q or %q, got %q",
				sandbox.VolumeReadWrite, sandbox.VolumeCopyOnWrite, v.Mode)
		}
		if !path.IsAbs(v.Path) || path.Clean(v.Path) != v.Path || v.Path == "/" || strings.ContainsRune(v.Path, 0) {
			return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_mount_path", "volume path %q must be absolute, clean and not /", v.Path)
		}
		for _, o := range out {
			if o.Volume == v.Volume {
				return nil, sandbox.Errorf(sandbox.ErrInvalid, "duplicate_volume", "volume %q is mounted twice", v.Volume)
			}
			if o.Path == v.Path || strings.HasPrefix(v.Path, o.Path+"/") || strings.HasPrefix(o.Path, v.Path+"/") {
				return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_mount_path", "volume paths %s and %s overlap", o.Path, v.Path)
			}
		}
		out = append(out, v)
	}
	return out, nil
}

// prepareVolumes acquires the volumes a sandbox mounts and adds their host
// directories to spec. On error the caller's failure path releases what
// was acquired.
func (m *Manager) prepareVolumes(ctx context.Context, e *entry, spec *runtime.Spec, vols []sandbox.VolumeMount) error {
	if len(vols) == 0 {
		return nil
	}
	if m.cfg.Volumes == nil {
		return sandbox.Errorf(sandbox.ErrUnsupported, "volumes_unsupported", "this host has no volumes")
	}
	for _, v := range vols {
		d, err := m.cfg.Volumes.Acquire(ctx, spec.ID, e.sb.TeamID, v)
		if err != nil {
			return err
		}
		spec.Mounts = append(spec.Mounts, runtime.Mount{Source: d.Source, Dest: v.Path, Upper: d.Upper, Work: d.Work, Claim: d.Claim})
	}
	return nil
}

// releaseVolumes gives back a sandbox's volumes once the driver has
// stopped it. A failure is logged: the record has moved on, and reconcile
// retries through Holders at the next start.
func (m *Manager) releaseVolumes(ctx context.Context, id string) {
	if m.cfg.Volumes == nil {
		return
	}
	if err := m.cfg.Volumes.Release(ctx, id); err != nil {
		m.log.Error("release volumes", "sandbox", id, "err", err)
	}
}

// reconcileVolumes releases every volume holder that is not a pending or
// running sandbox after reconcile: sandboxes lost in a restart or a
// reboot, and stops or deletes that crashed before their release.
func (m *Manager) reconcileVolumes(ctx context.Context) {
	if m.cfg.Volumes == nil {
		return
	}
	for _, id := range m.cfg.Volumes.Holders() {
		m.mu.Lock()
		_, active := m.active[id]
		m.mu.Unlock()
		if !active {
			m.log.Info("releasing volumes of a sandbox that no longer runs", "sandbox", id)
			m.releaseVolumes(ctx, id)
		}
	}
}
