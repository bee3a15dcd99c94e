package runc

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/userns"
)

// overlay is one overlayfs mount the driver makes for a sandbox: its root
// filesystem, or a copy-on-write volume.
type overlay struct {
	lowers      []string // topmost first
	upper, work string   // siblings in one directory
	flags       uintptr
	// stage is where a user namespace's idmapped layers are attached while
	// mounting (userns.Overlay.Stage): a dir in the sandbox's host dir
	// named with stagePrefix, which teardown sweeps after a crash.
	stage string
}

const stagePrefix = ".idmap-"

// mount mounts o at target: with the sandbox's user namespace ns, through
// idmapped layers (see userns.Overlay); without, as it is.
func (o overlay) mount(target string, ns *userns.NS) error {
	if ns != nil {
		return userns.Overlay{Lowers: o.lowers, Upper: o.upper, Work: o.work, Flags: o.flags, Stage: o.stage}.Mount(target, ns)
	}
	opts, err := userns.OverlayOptions(o.lowers, o.upper, o.work)
	if err != nil {
		return err
	}
	if err := unix.Mount("overlay", target, "overlay", o.flags, opts); err != nil {
		return fmt.Errorf("mount overlay: %w", err)
	}
	return nil
}
