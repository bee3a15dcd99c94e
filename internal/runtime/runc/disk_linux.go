package runc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/paddock-dev/paddock/internal/diskimg"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// A sandbox with a disk cap (Resources.DiskMB) keeps its writable layer in
// an ext4 image of that size of its own (internal/diskimg), so a write past
// the cap fails with ENOSPC inside the sandbox and the host's filesystem
// loses at most the cap:
//
//	<host dir>/disk.img     the sparse image, a copy of the size's template
//	<host dir>/disk/        where it is mounted while the sandbox runs
//	<host dir>/disk/upper   the overlay's upper dir
//	<host dir>/disk/work    the overlay's work dir
//
// Without a cap the upper and work dirs are plain directories in the host
// dir, on the data dir's filesystem. Stop unmounts the image (the loop
// device detaches by itself); Snapshot of a stopped sandbox mounts it
// read-only for the copy; Destroy removes it.
const (
	diskImageName = "disk.img"
	diskName      = "disk"
	templatesName = ".disks" // under DataDir/runc: a formatted image per size
)

// BytesPerInode is the inode density of sandbox disks: one inode per 8 KiB
// gives a 10 GiB disk 1.3M files, room for node_modules-heavy trees (which
// average well above 8 KiB a file). The inode count caps files as the size
// caps bytes; inode tables take 3% of the disk.
const BytesPerInode = 8192

// diskFormat is how sandbox disks are formatted: without a journal, since
// a running sandbox's layer does not survive a host crash anyway (its
// record is failed on restart) and a stopped one was unmounted cleanly.
var diskFormat = diskimg.FormatOptions{Label: "paddock-sandbox", BytesPerInode: BytesPerInode, NoJournal: true}

// Host disk reserve: a create is refused while the data dir's filesystem
// has less room than the reserve plus the new sandbox's cap.
const (
	minReserve     = 1 << 30
	reservePercent = 5
)

// reserve is the free space the data dir's filesystem keeps for paddock's
// own files (the store, images, logs) whatever sandboxes do.
func (d *Driver) reserve(fsSize uint64) uint64 {
	if d.cfg.DiskReserve != 0 {
		return uint64(max(d.cfg.DiskReserve, 0))
	}
	return max(minReserve, fsSize*reservePercent/100)
}

// checkHostSpace refuses a sandbox whose cap (0: none) the data dir's
// filesystem could not hold on top of the reserve. Images are sparse, so
// sandboxes may together be promised more than the host has (overcommit):
// the rule only makes sure that a new sandbox could fill its own cap
// without eating into the reserve, and that no sandbox starts on a host
// already down to its reserve.
func (d *Driver) checkHostSpace(capBytes int64) error {
	u, err := diskimg.Stat(d.runDir)
	if err != nil {
		return fmt.Errorf("host disk space: %w", err)
	}
	need := d.reserve(u.BytesLimit) + uint64(capBytes)
	if u.Available < need {
		return sandbox.Errorf(sandbox.ErrUnavailable, "host_disk_full",
			"this host's disk has %d MiB free, under the %d MiB a new sandbox needs (its %d MiB disk cap plus a reserve of %d MiB)",
			u.Available>>20, need>>20, capBytes>>20, d.reserve(u.BytesLimit)>>20)
	}
	return nil
}

// prepareLayer makes the sandbox's upper and work dirs in its host dir,
// which must be empty, on a disk of diskMB MiB when diskMB > 0: one the
// pool made ahead of time if it has one of that size, else a new one. On
// error the caller's clean-up (teardown, then removal of the host dir)
// undoes what was done.
func (d *Driver) prepareLayer(ctx context.Context, dir string, diskMB int64) (upper, work string, err error) {
	if diskMB == 0 {
		upper, work = filepath.Join(dir, upperName), filepath.Join(dir, workName)
		for _, p := range []string{upper, work} {
			if err := os.Mkdir(p, 0o755); err != nil {
				return "", "", err
			}
		}
		return upper, work, nil
	}
	if !d.diskCap {
		return "", "", errNoDisks(diskimg.Available())
	}
	mnt := filepath.Join(dir, diskName)
	if d.pool == nil || !d.pool.take(diskMB<<20, dir) {
		if err := d.makeDisk(ctx, dir, diskMB<<20); err != nil {
			return "", "", err
		}
	}
	return filepath.Join(mnt, upperName), filepath.Join(mnt, workName), nil
}

// makeDisk makes a disk of size bytes in dir: the image copied from the
// size's template, mounted at dir/disk, holding empty upper and work dirs.
func (d *Driver) makeDisk(ctx context.Context, dir string, size int64) error {
	img, mnt := filepath.Join(dir, diskImageName), filepath.Join(dir, diskName)
	if err := d.disks.Make(ctx, img, size); err != nil {
		if errors.Is(err, diskimg.ErrNoMkfs) {
			return errNoDisks(err.Error())
		}
		return fmt.Errorf("disk: %w", err)
	}
	if err := os.Mkdir(mnt, 0o700); err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	if err := diskimg.Mount(img, mnt, false); err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	for _, p := range []string{upperName, workName} {
		if err := os.Mkdir(filepath.Join(mnt, p), 0o755); err != nil {
			return fmt.Errorf("disk: %w", err)
		}
	}
	return nil
}

// errNoDisks refuses a disk cap on a host that cannot make images: an
// operator who accepts uncapped layers says so with a cap of 0.
func errNoDisks(why string) error {
	return sandbox.Errorf(sandbox.ErrUnsupported, "sandbox_disk_unsupported",
		"sandbox disk caps are unavailable on this host (%s): fix it (see paddock doctor), or run paddock with --sandbox-disk 0 to keep writable layers uncapped on the host's filesystem", why)
}

// hasDisk reports whether the sandbox in dir has a disk image.
func hasDisk(dir string) bool {
	_, err := os.Lstat(filepath.Join(dir, diskImageName))
	return err == nil
}

// upperDir is where the sandbox in dir keeps its upper dir: on its disk
// (which must be mounted to be read) or in dir.
func upperDir(dir string) string {
	if hasDisk(dir) {
		return filepath.Join(dir, diskName, upperName)
	}
	return filepath.Join(dir, upperName)
}

// mountForRead makes a stopped sandbox's layer readable: its disk is
// mounted read-only if it is not mounted. The returned func undoes it.
func mountForRead(dir string) (func(), error) {
	mnt := filepath.Join(dir, diskName)
	if !hasDisk(dir) || diskimg.IsMountpoint(mnt) {
		return func() {}, nil
	}
	if err := diskimg.Mount(filepath.Join(dir, diskImageName), mnt, true); err != nil {
		return nil, fmt.Errorf("disk: %w", err)
	}
	return func() { _ = diskimg.Unmount(mnt) }, nil
}

// unmountDisk unmounts the sandbox's disk, if it has one mounted; the
// overlay above it must be gone (or detached) first.
func unmountDisk(dir string) error {
	if !hasDisk(dir) {
		return nil
	}
	return diskimg.Unmount(filepath.Join(dir, diskName))
}

// diskStats fills the disk figures of a sandbox whose disk is mounted.
func diskStats(dir string) (diskimg.Usage, bool) {
	mnt := filepath.Join(dir, diskName)
	if !diskimg.IsMountpoint(mnt) {
		return diskimg.Usage{}, false
	}
	u, err := diskimg.Stat(mnt)
	return u, err == nil
}
