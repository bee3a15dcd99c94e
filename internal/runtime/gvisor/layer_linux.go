package gvisor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/runtime/layer"
	"github.com/paddock-dev/paddock/internal/userns"
)

var _ runtime.Snapshotter = (*Driver)(nil)

// cowPrefix names, in a sandbox's host dir, the mountpoint of the overlay
// of copy-on-write mount n (cow-<n>).
const cowPrefix = "cow-"

// Snapshot implements runtime.Snapshotter: it copies (never moves) the
// sandbox's upper dir with layer.Copy, as the runc driver does.
//
// Under --overlay2=none the sentry's root filesystem is the host overlay
// served by the gofer, and the sentry keeps no dirty file data of its own:
// write(2) goes to the host file through the descriptor the gofer donates,
// and a shared mapping maps the host file's pages, so the host's page cache
// already holds every write and no sync inside is needed
// (TestSnapshotSeesLiveWrites holds this for runsc upgrades). A running
// sandbox is paused (runsc pause: every task of the sentry stops) for the
// copy, so the layer is one instant of its filesystem, and resumed after.
func (d *Driver) Snapshot(ctx context.Context, id string, _ *runtime.Rootfs, dst string, maxBytes int64) (int64, error) {
	if err := checkID(id); err != nil {
		return 0, err
	}
	defer d.lock(id)()
	return layer.Snapshot(ctx, id, d.hostDir(id), dst, maxBytes, func() (func(), error) {
		// Each runsc call costs tens of milliseconds: pause is tried on any
		// sandbox runsc knows, and the state read only when it fails.
		if !d.hasState(id) {
			return nil, nil
		}
		if _, err := d.runsc(ctx, nil, "pause", id); err != nil {
			if st, serr := d.state(ctx, id); serr == nil && st.Status == "running" {
				d.log.Warn("snapshot: pause failed, copying a live sandbox", "sandbox", id, "err", err)
			}
			return nil, nil
		}
		return func() {
			if _, err := d.runsc(context.WithoutCancel(ctx), nil, "resume", id); err != nil {
				d.log.Error("snapshot: resume", "sandbox", id, "err", err)
			}
		}, nil
	})
}

// resumeLeftover resumes a sandbox that a crash left paused and reports
// whether it runs now. paddock pauses a sandbox only for a snapshot's copy,
// with the sandbox's lock held and a deferred resume: one still paused once
// the lock is free was paused by a paddock killed mid-copy, and would
// otherwise look lost (its agent cannot answer) and be stopped.
func (d *Driver) resumeLeftover(ctx context.Context, id string) bool {
	defer d.lock(id)()
	st, err := d.state(ctx, id)
	if err != nil || st.Status != "paused" {
		return err == nil && st.Status == "running"
	}
	if _, err := d.runsc(ctx, nil, "resume", id); err != nil {
		d.log.Error("resume a sandbox left paused", "sandbox", id, "err", err)
		return false
	}
	d.log.Warn("resumed a sandbox left paused by a crash during a snapshot", "sandbox", id)
	return true
}

// copyOnWrite mounts, in the sandbox's host dir, an overlay for each
// copy-on-write mount (Upper set) and returns the mounts with those
// overlays as plain bind sources, which runsc's gofer serves like any
// volume. The driver mounts them on the host, as the runc driver does;
// gVisor sandboxes have no user namespace to map the layers through.
func copyOnWrite(dir string, mounts []runtime.Mount) ([]runtime.Mount, error) {
	out := make([]runtime.Mount, 0, len(mounts))
	for i, m := range mounts {
		if m.Upper == "" {
			out = append(out, m)
			continue
		}
		if m.Work == "" || !filepath.IsAbs(m.Source) || !filepath.IsAbs(m.Upper) || !filepath.IsAbs(m.Work) {
			return nil, fmt.Errorf("copy-on-write mount at %s: source, upper and work must be absolute host paths", m.Dest)
		}
		target := filepath.Join(dir, cowPrefix+strconv.Itoa(i))
		if err := os.Mkdir(target, 0o700); err != nil {
			return nil, err
		}
		opts, err := userns.OverlayOptions([]string{m.Source}, m.Upper, m.Work)
		if err != nil {
			return nil, err
		}
		if err := unix.Mount("overlay", target, "overlay", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
			return nil, fmt.Errorf("copy-on-write mount at %s: mount overlay: %w", m.Dest, err)
		}
		out = append(out, runtime.Mount{Source: target, Dest: m.Dest, ReadOnly: m.ReadOnly})
	}
	return out, nil
}

// unmountCopyOnWrite unmounts the copy-on-write overlays of the sandbox in
// dir, if any are mounted.
func unmountCopyOnWrite(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	var errs []error
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), cowPrefix) {
			errs = append(errs, unmountAll(filepath.Join(dir, e.Name())))
		}
	}
	return errors.Join(errs...)
}

// unmountAll detaches every mount stacked at target.
func unmountAll(target string) error {
	for {
		err := unix.Unmount(target, unix.MNT_DETACH)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil // not mounted (any more)
		}
		if err != nil {
			return fmt.Errorf("unmount %s: %w", target, err)
		}
	}
}
