package diskimg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moby/sys/mountinfo"
	"github.com/paddock-dev/paddock/internal/deathsig"
	"golang.org/x/sys/unix"
)

// Available says why images cannot be made or mounted on this host ("" when
// they can): they need root, mkfs.ext4 (Debian: e2fsprogs) and loop
// devices.
func Available() string {
	if os.Geteuid() != 0 {
		return "ext4 disk images need root (loop devices and mounts)"
	}
	if _, err := exec.LookPath(Mkfs); err != nil {
		return ErrNoMkfs.Error()
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		return "no /dev/loop-control (load the loop module)"
	}
	return ""
}

// Format makes a sparse file of size bytes at image (which must not exist)
// and an ext4 filesystem in it: no reserved blocks (the cap is all the
// user's), lazy inode table and journal initialisation so the file stays
// sparse (it is all zeroes already), and no blocks reserved for growing
// it online (resize_inode), which paddock never does: they are most of a
// fresh image's data (4 MiB of 10 GiB), which every copy would carry. A
// missing mkfs.ext4 is ErrNoMkfs.
func Format(ctx context.Context, image string, size int64, opts FormatOptions) error {
	f, err := os.OpenFile(image, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	features := "^resize_inode"
	if opts.NoJournal {
		features += ",^has_journal"
	}
	args := []string{"-q", "-F", "-m", "0", "-O", features}
	if label := opts.Label; label != "" {
		if len(label) > 16 { // ext4's label field
			label = label[:16]
		}
		args = append(args, "-L", label)
	}
	if opts.BytesPerInode > 0 {
		args = append(args, "-i", strconv.Itoa(opts.BytesPerInode))
	}
	args = append(args, "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", image)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, Mkfs, args...)
	// A session of its own: nothing it does can signal paddock's group;
	// it dies with paddock.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = deathsig.Run(cmd)
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return fmt.Errorf("format %s: %w", image, ErrNoMkfs)
		}
		return fmt.Errorf("%s: %w: %s", Mkfs, err, strings.TrimSpace(out.String()))
	}
	return nil
}

// clone copies src into a new file dst by src's data extents
// (SEEK_DATA/SEEK_HOLE), with copy_file_range where the kernel has it, so
// holes stay holes.
func clone(src *os.File, dst string) (retErr error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(src.Fd()), &st); err != nil {
		return fmt.Errorf("clone %s: %w", src.Name(), err)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("clone %s: %w", src.Name(), err)
	}
	defer func() {
		if err := out.Close(); retErr == nil && err != nil {
			retErr = fmt.Errorf("clone %s: %w", src.Name(), err)
		}
		if retErr != nil {
			_ = os.Remove(dst)
		}
	}()
	in := int(src.Fd())
	for off := int64(0); off < st.Size; {
		data, err := unix.Seek(in, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			return fmt.Errorf("clone %s: %w", src.Name(), err)
		}
		hole, err := unix.Seek(in, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("clone %s: %w", src.Name(), err)
		}
		if err := copyRange(src, out, data, hole-data); err != nil {
			return fmt.Errorf("clone %s: %w", src.Name(), err)
		}
		off = hole
	}
	if err := out.Truncate(st.Size); err != nil {
		return fmt.Errorf("clone %s: %w", src.Name(), err)
	}
	return nil
}

// copyRange copies n bytes at off from in to out at the same offset, in
// the kernel when it can.
func copyRange(in, out *os.File, off, n int64) error {
	roff, woff := off, off
	for n > 0 {
		c, err := unix.CopyFileRange(int(in.Fd()), &roff, int(out.Fd()), &woff, int(min(n, 1<<30)), 0)
		if err != nil {
			if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
				_, err := io.Copy(io.NewOffsetWriter(out, woff), io.NewSectionReader(in, roff, n))
				return err
			}
			return err
		}
		if c == 0 {
			return io.ErrUnexpectedEOF
		}
		n -= int64(c)
	}
	return nil
}

// Mount options of every image: nosuid and nodev (what is inside is the
// user's), noatime; errors=remount-ro stops writes to a filesystem the
// kernel finds damaged; noinit_itable keeps the kernel from zeroing the
// lazily initialised inode tables in the background, which would write
// hundreds of MiB into each sparse image for nothing (they read as zero).
const (
	mountFlags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOATIME
	ext4Opts   = "errors=remount-ro,noinit_itable"
)

// Mount mounts image at dir through a loop device. A device the image is
// still attached to (a user being torn down may hold the filesystem a
// moment longer) is reused: mounting it again gives the same superblock,
// whereas a second device would mount a second, diverging ext4 over the
// same bytes.
func Mount(image, dir string, readOnly bool) error {
	flags := uintptr(mountFlags)
	if readOnly {
		flags |= unix.MS_RDONLY
	}
	if dev := LoopOf(image); dev != "" {
		if err := unix.Mount(dev, dir, "ext4", flags, ext4Opts); err == nil {
			return nil
		}
		// Detached in between (autoclear): attach afresh below.
	}
	for try := range attachTries {
		dev, loop, err := attachLoop(image, readOnly)
		if errors.Is(err, unix.EBUSY) {
			// Another process took the free device between our
			// GET_FREE and CONFIGURE (this one's attaches are serialised).
			time.Sleep(time.Duration(try+1) * time.Millisecond)
			continue
		}
		if err != nil {
			return err
		}
		err = unix.Mount(dev, dir, "ext4", flags, ext4Opts)
		// With LO_FLAGS_AUTOCLEAR the device detaches when its last user
		// goes: after a failed mount that is this close, after a good one
		// the unmount.
		loop.Close()
		if err != nil {
			return fmt.Errorf("mount %s: %w", image, err)
		}
		return nil
	}
	return fmt.Errorf("mount %s: no free loop device", image)
}

// attachMu serialises this process's attaches: LOOP_CTL_GET_FREE names the
// same free device to every caller until one configures it, so twenty
// sandboxes created at once raced for one device and all but one got
// EBUSY, more times than any retry count absorbed. Configuring takes well
// under a millisecond, so the lock costs a burst little.
var attachMu sync.Mutex

// attachTries bounds the retries against other processes taking the device
// GET_FREE named (losetup, another paddock): each try waits a little longer.
const attachTries = 32

// attachLoop binds image to a free loop device.
func attachLoop(image string, readOnly bool) (string, *os.File, error) {
	attachMu.Lock()
	defer attachMu.Unlock()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", nil, fmt.Errorf("loop devices: %w", err)
	}
	n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
	ctl.Close()
	if err != nil {
		return "", nil, fmt.Errorf("loop devices: get free: %w", err)
	}
	dev := "/dev/loop" + strconv.Itoa(n)
	loop, err := openLoop(dev, n)
	if err != nil {
		return "", nil, err
	}
	mode := os.O_RDWR
	if readOnly {
		mode = os.O_RDONLY
	}
	back, err := os.OpenFile(image, mode|unix.O_CLOEXEC, 0)
	if err != nil {
		loop.Close()
		return "", nil, err
	}
	defer back.Close() // the device keeps its own reference
	cfg := unix.LoopConfig{Fd: uint32(back.Fd())}
	cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
	if readOnly {
		cfg.Info.Flags |= unix.LO_FLAGS_READ_ONLY
	}
	copy(cfg.Info.File_name[:], image)
	if err := unix.IoctlLoopConfigure(int(loop.Fd()), &cfg); err != nil {
		loop.Close()
		if errors.Is(err, unix.EBUSY) {
			return "", nil, err
		}
		return "", nil, fmt.Errorf("configure %s: %w", dev, err)
	}
	return dev, loop, nil
}

// openLoop opens /dev/loopN, making the node if devtmpfs has not yet.
func openLoop(dev string, n int) (*os.File, error) {
	f, err := os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0)
	if errors.Is(err, fs.ErrNotExist) {
		if err := unix.Mknod(dev, unix.S_IFBLK|0o600, int(unix.Mkdev(7, uint32(n)))); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("create %s: %w", dev, err)
		}
		f, err = os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dev, err)
	}
	return f, nil
}

// LoopOf returns the loop device image is attached to, or "". The
// sysfs path is only a hint; the device's own status must name the image's
// device and inode.
func LoopOf(image string) string {
	var st unix.Stat_t
	if err := unix.Stat(image, &st); err != nil {
		return ""
	}
	devs, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, p := range devs {
		b, err := os.ReadFile(p)
		if err != nil || strings.TrimSpace(string(b)) != image {
			continue
		}
		name := filepath.Base(filepath.Dir(filepath.Dir(p)))
		f, err := os.OpenFile("/dev/"+name, os.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		info, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
		f.Close()
		if err == nil && info.Inode == st.Ino && info.Device == st.Dev {
			return "/dev/" + name
		}
	}
	return ""
}

// Unmount unmounts dir; one that is not mounted is not an error. A busy
// mount (a host process inside it) is detached, so it goes as soon as it
// is unused instead of staying mounted.
func Unmount(dir string) error {
	err := unix.Unmount(dir, unix.UMOUNT_NOFOLLOW)
	switch {
	case err == nil, errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
		return nil
	case errors.Is(err, unix.EBUSY):
		if err := unix.Unmount(dir, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil {
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
		return nil
	default:
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
}

// IsMountpoint reports whether dir is the root of a mount other than its
// parent's (an image mounted there), without reading mountinfo: dir and
// its parent are paddock's own directories.
func IsMountpoint(dir string) bool {
	var st, parent unix.Stat_t
	if unix.Lstat(dir, &st) != nil || unix.Lstat(filepath.Dir(dir), &parent) != nil {
		return false
	}
	return st.Dev != parent.Dev
}

// Mounted reads /proc/self/mountinfo for mountpoints at or below dir.
func Mounted(dir string) (map[string]bool, error) {
	infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return nil, fmt.Errorf("diskimg: %w", err)
	}
	out := map[string]bool{}
	for _, m := range infos {
		out[m.Mountpoint] = true
	}
	return out, nil
}

// Stat returns what the filesystem mounted at dir holds.
func Stat(dir string) (Usage, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return Usage{}, fmt.Errorf("statfs %s: %w", dir, err)
	}
	bs := uint64(st.Bsize)
	return Usage{
		Bytes:       (st.Blocks - st.Bfree) * bs,
		BytesLimit:  st.Blocks * bs,
		Inodes:      st.Files - st.Ffree,
		InodesLimit: st.Files,
		Available:   st.Bavail * bs,
	}, nil
}
