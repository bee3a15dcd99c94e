package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/runtime/layer"
	"github.com/paddock-dev/paddock/internal/runtime/ocispec"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

var _ runtime.Snapshotter = (*Driver)(nil)

// Snapshot implements runtime.Snapshotter. The Pod's writable layer is on
// its node, out of paddock's reach: the agent, which sees the sandbox's
// root filesystem, streams what changed since it started (agent.Client.
// Changes: entries by ctime, and the names each changed directory holds
// now), and layer.FromChanges writes that into dst in the runc driver's
// form, telling deletions from base's Lowers, the image's layers this
// host unpacked when the node resolved the image.
//
// A sandbox of the host image (or of a snapshot stacked on it) has no
// layers here, its image being only a registry name: its Pod mounts that
// image a second time, as it was, and the agent sends what each changed
// directory held there (agent.TypeBaseNames), which tells the deletions.
// A stopped sandbox's Pod is gone, and its writable layer with it:
// refused as the node refuses a sandbox whose layer was removed. The
// sandbox keeps running during the copy (nothing here freezes a Pod): a
// file written meanwhile may be torn.
func (d *Driver) Snapshot(ctx context.Context, id string, base *runtime.Rootfs, dst string, maxBytes int64) (int64, error) {
	if err := ocispec.CheckID(id); err != nil {
		return 0, err
	}
	// Deletions are told from the image's layers here, or, for the host
	// image, whose layers paddock does not hold, from what the agent reads
	// of the Pod's second mount of its image (pod, baseDir).
	var lowers []string
	if base != nil && !base.OnHost {
		if lowers = base.Lowers; len(lowers) == 0 {
			return 0, sandbox.Errorf(sandbox.ErrUnsupported, "snapshot_unsupported", "sandbox %s: its image's layers are not on this host", id)
		}
	}
	c, err := d.Agent(ctx, id)
	if errors.Is(err, sandbox.ErrNotRunning) {
		return 0, sandbox.Errorf(sandbox.ErrConflict, "sandbox_layer_removed",
			"sandbox %s is stopped: its Pod, and the writable layer with it, is gone: there is nothing to snapshot", id)
	}
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if lowers == nil {
		pod, err := d.runningPod(ctx, id)
		if err != nil {
			return 0, err
		}
		if !slices.ContainsFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == baseVolume }) {
			return 0, sandbox.Errorf(sandbox.ErrUnsupported, "snapshot_unsupported",
				"sandbox %s runs the host image in a Pod made without its image's second mount (an earlier paddock): its deletions cannot be told", id)
		}
	}
	n, err := snapshotFrom(ctx, c, lowers, dst, maxBytes)
	if err != nil {
		return 0, fmt.Errorf("kubernetes: snapshot sandbox %s: %w", id, err)
	}
	return n, nil
}

// snapshotFrom writes the changes the agent c streams into dst.
func snapshotFrom(ctx context.Context, c *agent.Client, lowers []string, dst string, maxBytes int64) (int64, error) {
	rc, err := c.Changes(ctx)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	return layer.FromChanges(ctx, rc, dst, lowers, maxBytes)
}
