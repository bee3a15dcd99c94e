package userns

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Overlay is an overlayfs mount whose layers are idmapped through a
// sandbox's namespace.
type Overlay struct {
	Lowers      []string // topmost first
	Upper, Work string   // siblings: one idmapped clone of their parent serves both
	Flags       uintptr  // mount(2) flags
	// Stage is a dir (that must not exist) where the layers' idmapped
	// clones are attached while the overlay is mounted; Mount removes it.
	Stage string
}

// maxMountData is the kernel's limit on mount(2)'s option string (a page).
const maxMountData = 4096

// Mount mounts o at target with every layer an idmapped clone through ns,
// as ns's root (see As): the layers keep the ids the sandbox sees
// (container-relative) on disk, so one image layer, snapshot or volume
// serves sandboxes of any range unchanged, and whatever the sandbox writes
// is stored with its own ids.
//
// The clones are attached below o.Stage only while overlayfs resolves its
// layers (it then holds private clones of them) and detached right after,
// so nothing but the overlay stays mounted. Naming detached clones to
// overlayfs (/proc/self/fd/N) would save the attach, but overlayfs takes
// detached layers only since Linux 6.15, idmapped ones since 5.19.
func (o Overlay) Mount(target string, ns *NS) (err error) {
	if filepath.Dir(o.Upper) != filepath.Dir(o.Work) {
		return fmt.Errorf("mount overlay: upper %s and work %s must be in one directory", o.Upper, o.Work)
	}
	if err := os.Mkdir(o.Stage, 0o700); err != nil {
		return fmt.Errorf("mount overlay: %w", err)
	}
	defer func() {
		if serr := Unstage(o.Stage); err == nil {
			err = serr
		}
	}()
	attach := func(name, path string) (string, error) {
		at := filepath.Join(o.Stage, name)
		if err := os.Mkdir(at, 0o700); err != nil {
			return "", err
		}
		fd, err := Clone(path, ns)
		if err != nil {
			return "", err
		}
		defer unix.Close(fd)
		if err := unix.MoveMount(fd, "", unix.AT_FDCWD, at, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			return "", &os.PathError{Op: "move_mount", Path: at, Err: err}
		}
		return at, nil
	}
	lowers := make([]string, len(o.Lowers))
	for i, l := range o.Lowers {
		if lowers[i], err = attach(strconv.Itoa(i), l); err != nil {
			return fmt.Errorf("mount overlay: %w", err)
		}
	}
	rw, err := attach("rw", filepath.Dir(o.Upper))
	if err != nil {
		return fmt.Errorf("mount overlay: %w", err)
	}
	opts, err := OverlayOptions(lowers, filepath.Join(rw, filepath.Base(o.Upper)), filepath.Join(rw, filepath.Base(o.Work)))
	if err != nil {
		return err
	}
	if err := As(ns.base, func() error { return unix.Mount("overlay", target, "overlay", o.Flags, opts) }); err != nil {
		return fmt.Errorf("mount overlay: %w", err)
	}
	return nil
}

// OverlayOptions are overlayfs's mount options for these layers, or
// ErrInvalid "too_many_layers" past what one mount(2) takes.
func OverlayOptions(lowers []string, upper, work string) (string, error) {
	opts := "lowerdir=" + strings.Join(lowers, ":") + ",upperdir=" + upper + ",workdir=" + work
	if len(opts) >= maxMountData {
		return "", sandbox.Errorf(sandbox.ErrInvalid, "too_many_layers", "%d layers are too many for one overlay mount", len(lowers))
	}
	return opts, nil
}

// Unstage detaches whatever is attached in a staging dir (Overlay.Stage,
// left by a crash) and removes it. A missing dir is not an error.
func Unstage(stage string) error {
	ents, err := os.ReadDir(stage)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		p := filepath.Join(stage, e.Name())
		if err := unix.Unmount(p, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("detach %s: %w", p, err))
			continue
		}
		errs = append(errs, os.Remove(p))
	}
	errs = append(errs, os.Remove(stage))
	return errors.Join(errs...)
}
