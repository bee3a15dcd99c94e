package layer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/paddock-dev/paddock/internal/diskimg"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// A sandbox with a disk cap (Resources.DiskMB) keeps its writable layer in
// an ext4 image of that size of its own (internal/diskimg), so a write past
// the cap fails with ENOSPC inside the sandbox and the host's filesystem
// loses at most the cap. In the sandbox's host dir:
//
//	disk.img     the sparse image, a copy of the size's template
//	disk/        where it is mounted while the sandbox runs
//	disk/upper   the overlay's upper dir
//	disk/work    the overlay's work dir
//
// Without a cap the upper and work dirs are plain directories in the host
// dir, on the data dir's filesystem. The driver's Stop unmounts the image
// (UnmountDisk; the loop device detaches by itself); a snapshot of a
// stopped sandbox mounts it read-only for the copy (MountForRead); Destroy
// removes it with the host dir.
const (
	UpperName     = "upper"
	WorkName      = "work"
	DiskImageName = "disk.img"
	DiskName      = "disk"
	templatesName = ".disks" // under the driver's run dir: a formatted image per size
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

// DisksConfig configures a driver's Disks.
type DisksConfig struct {
	// RunDir is the driver's directory of sandbox host dirs, on the data
	// dir's filesystem: templates and the pool live below it.
	RunDir string
	// Reserve is the free space, in bytes, the filesystem keeps beyond a
	// new sandbox's cap. 0: the larger of 1 GiB and 5% of the filesystem;
	// negative: no reserve.
	Reserve int64
	// PoolMB, when set, keeps a few disks of this size made ahead of time.
	PoolMB int64
	Logger *slog.Logger
}

// Disks makes the writable layers of one driver's sandboxes: plain
// directories, or capped disks. Safe for concurrent use.
type Disks struct {
	cfg       DisksConfig
	log       *slog.Logger
	templates *diskimg.Templates
	ok        bool      // this host can make disks
	pool      *diskPool // nil without PoolMB
}

// OpenDisks prepares the templates, removes what an earlier process left
// in the pool's directory and, with PoolMB, starts filling it. A host that
// cannot make disks is logged, not refused: Available says so.
func OpenDisks(cfg DisksConfig) (*Disks, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	d := &Disks{cfg: cfg, log: cfg.Logger}
	var err error
	if d.templates, err = diskimg.NewTemplates(filepath.Join(cfg.RunDir, templatesName), diskFormat, 0); err != nil {
		return nil, err
	}
	if why := diskimg.Available(); why != "" {
		d.log.Warn("sandbox disk caps unavailable: sandboxes with one are refused", "why", why)
	} else {
		d.ok = true
	}
	if d.pool, err = d.startPool(); err != nil {
		return nil, err
	}
	return d, nil
}

// Available reports whether this host can make capped disks.
func (d *Disks) Available() bool { return d.ok }

// Close stops the pool and removes the disks nobody took.
func (d *Disks) Close() {
	if d.pool != nil {
		d.pool.close()
	}
}

// reserve is the free space the data dir's filesystem keeps for paddock's
// own files (the store, images, logs) whatever sandboxes do.
func (d *Disks) reserve(fsSize uint64) uint64 {
	if d.cfg.Reserve != 0 {
		return uint64(max(d.cfg.Reserve, 0))
	}
	return max(minReserve, fsSize*reservePercent/100)
}

// CheckHostSpace refuses a sandbox whose cap (0: none) the data dir's
// filesystem could not hold on top of the reserve. Images are sparse, so
// sandboxes may together be promised more than the host has (overcommit):
// the rule only makes sure that a new sandbox could fill its own cap
// without eating into the reserve, and that no sandbox starts on a host
// already down to its reserve.
func (d *Disks) CheckHostSpace(capBytes int64) error {
	u, err := diskimg.Stat(d.cfg.RunDir)
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

// Prepare makes the sandbox's upper and work dirs in its host dir, which
// must be empty, on a disk of diskMB MiB when diskMB > 0: one the pool
// made ahead of time if it has one of that size, else a new one. On error
// the caller's clean-up (UnmountDisk, then removal of the host dir) undoes
// what was done.
func (d *Disks) Prepare(ctx context.Context, dir string, diskMB int64) (upper, work string, err error) {
	if diskMB == 0 {
		upper, work = filepath.Join(dir, UpperName), filepath.Join(dir, WorkName)
		for _, p := range []string{upper, work} {
			if err := os.Mkdir(p, 0o755); err != nil {
				return "", "", err
			}
		}
		return upper, work, nil
	}
	if !d.ok {
		return "", "", errNoDisks(diskimg.Available())
	}
	mnt := filepath.Join(dir, DiskName)
	if d.pool == nil || !d.pool.take(diskMB<<20, dir) {
		if err := d.makeDisk(ctx, dir, diskMB<<20); err != nil {
			return "", "", err
		}
	}
	return filepath.Join(mnt, UpperName), filepath.Join(mnt, WorkName), nil
}

// makeDisk makes a disk of size bytes in dir: the image copied from the
// size's template, mounted at dir/disk, holding empty upper and work dirs.
func (d *Disks) makeDisk(ctx context.Context, dir string, size int64) error {
	img, mnt := filepath.Join(dir, DiskImageName), filepath.Join(dir, DiskName)
	if err := d.templates.Make(ctx, img, size); err != nil {
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
	for _, p := range []string{UpperName, WorkName} {
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
	_, err := os.Lstat(filepath.Join(dir, DiskImageName))
	return err == nil
}

// UpperDir is where the sandbox in dir keeps its upper dir: on its disk
// (which must be mounted to be read) or in dir.
func UpperDir(dir string) string {
	if hasDisk(dir) {
		return filepath.Join(dir, DiskName, UpperName)
	}
	return filepath.Join(dir, UpperName)
}

// MountForRead makes a stopped sandbox's layer readable: its disk is
// mounted read-only if it is not mounted. The returned func undoes it.
func MountForRead(dir string) (func(), error) {
	mnt := filepath.Join(dir, DiskName)
	if !hasDisk(dir) || diskimg.IsMountpoint(mnt) {
		return func() {}, nil
	}
	if err := diskimg.Mount(filepath.Join(dir, DiskImageName), mnt, true); err != nil {
		return nil, fmt.Errorf("disk: %w", err)
	}
	return func() { _ = diskimg.Unmount(mnt) }, nil
}

// UnmountDisk unmounts the sandbox's disk, if it has one mounted; the
// overlay above it must be gone (or detached) first.
func UnmountDisk(dir string) error {
	if !hasDisk(dir) {
		return nil
	}
	return diskimg.Unmount(filepath.Join(dir, DiskName))
}

// DiskStats returns the disk figures of a sandbox whose disk is mounted.
func DiskStats(dir string) (diskimg.Usage, bool) {
	mnt := filepath.Join(dir, DiskName)
	if !diskimg.IsMountpoint(mnt) {
		return diskimg.Usage{}, false
	}
	u, err := diskimg.Stat(mnt)
	return u, err == nil
}
