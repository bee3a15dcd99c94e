package runc

import (
	"context"
	"fmt"

	"github.com/opencontainers/runc/libcontainer"

	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/runtime/layer"
)

var _ runtime.Snapshotter = (*Driver)(nil)

// Snapshot implements runtime.Snapshotter. It copies (never moves) the
// upper dir, so the sandbox goes on running on it. A running sandbox is
// frozen (cgroup freezer) for the copy, so the layer is one instant of its
// filesystem; a sandbox whose freeze fails is copied live, and a file
// written meanwhile may be torn.
func (d *Driver) Snapshot(ctx context.Context, id string, _ *runtime.Rootfs, dst string, maxBytes int64) (int64, error) {
	if err := checkID(id); err != nil {
		return 0, err
	}
	unlock := d.lock(id)
	defer unlock()
	return layer.Snapshot(ctx, id, d.hostDir(id), dst, maxBytes, func() (func(), error) {
		c, err := d.load(id)
		if err != nil || c == nil {
			return nil, err
		}
		if st, err := c.Status(); err != nil || st != libcontainer.Running {
			return nil, nil
		}
		if err := c.Pause(); err != nil {
			d.log.Warn("snapshot: freeze failed, copying a live sandbox", "sandbox", id, "err", err)
			return nil, nil
		}
		return func() {
			if err := c.Resume(); err != nil {
				d.log.Error("snapshot: thaw", "sandbox", id, "err", err)
			}
		}, nil
	})
}

// thawLeftover resumes a sandbox that a crash left frozen and returns its
// status after. paddock freezes a sandbox only for a snapshot's copy, with
// the sandbox's lock held and a deferred thaw: one still frozen once the
// lock is free was frozen by a paddock killed mid-copy, and would
// otherwise look lost to the next start (its agent cannot answer) and be
// stopped.
func (d *Driver) thawLeftover(id string) (libcontainer.Status, error) {
	unlock := d.lock(id)
	defer unlock()
	c, err := d.load(id)
	if err != nil || c == nil {
		return libcontainer.Stopped, err
	}
	st, err := c.Status()
	if err != nil || st != libcontainer.Paused {
		return st, err
	}
	if err := c.Resume(); err != nil {
		return st, fmt.Errorf("thaw sandbox %s: %w", id, err)
	}
	d.log.Warn("thawed a sandbox left frozen by a crash during a snapshot", "sandbox", id)
	return c.Status()
}
