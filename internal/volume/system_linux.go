package volume

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
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// linuxSystem formats images with mkfs.ext4 and mounts them through loop
// devices configured with ioctls (no losetup).
type linuxSystem struct{}

func newSystem() system { return linuxSystem{} }

// Mkfs is the formatter's name; its absence is reported by Available.
const Mkfs = "mkfs.ext4"

// Available says why volumes cannot work on this host ("" when they can):
// they need root, mkfs.ext4 (Debian: e2fsprogs) and loop devices.
func Available() string {
	if os.Geteuid() != 0 {
		return "volumes need root (loop devices and mounts)"
	}
	if _, err := exec.LookPath(Mkfs); err != nil {
		return Mkfs + " not found (install e2fsprogs)"
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		return "no /dev/loop-control (load the loop module)"
	}
	return ""
}

// format makes a sparse file of size bytes and an ext4 filesystem in it.
// No reserved blocks (the cap is all the sandbox's), lazy table and journal
// initialisation so the file stays sparse (it is all zeroes already).
func (linuxSystem) format(ctx context.Context, image string, size int64, label string) error {
	f, err := os.OpenFile(image, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
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
	if len(label) > 16 { // ext4's label field
		label = label[:16]
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, Mkfs, "-q", "-F", "-m", "0", "-L", label,
		"-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", image)
	// A session of its own: nothing it does can signal paddock's group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return sandbox.Errorf(sandbox.ErrUnsupported, "volumes_unsupported", "volumes need %s (install e2fsprogs)", Mkfs)
		}
		return fmt.Errorf("%s: %w: %s", Mkfs, err, strings.TrimSpace(out.String()))
	}
	return nil
}

// mount mounts image at dir through a loop device. A device the image is
// still attached to (a sandbox being torn down may hold the filesystem a
// moment longer) is reused: mounting it again gives the same superblock,
// whereas a second device would mount a second, diverging ext4 over the
// same bytes.
func (s linuxSystem) mount(image, dir string) error {
	const (
		flags    = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOATIME
		ext4Opts = "errors=remount-ro"
	)
	if dev := attachedLoop(image); dev != "" {
		if err := unix.Mount(dev, dir, "ext4", flags, ext4Opts); err == nil {
			return nil
		}
		// Detached in between (autoclear): attach afresh below.
	}
	for range 8 {
		dev, loop, err := attachLoop(image)
		if errors.Is(err, unix.EBUSY) {
			continue // another process took the free device first
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

// attachLoop binds image to a free loop device.
func attachLoop(image string) (string, *os.File, error) {
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
	back, err := os.OpenFile(image, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		loop.Close()
		return "", nil, err
	}
	defer back.Close() // the device keeps its own reference
	cfg := unix.LoopConfig{Fd: uint32(back.Fd())}
	cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
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

// attachedLoop returns the loop device image is attached to, or "". The
// sysfs path is only a hint; the device's own status must name the image's
// device and inode.
func attachedLoop(image string) string {
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

// unmount unmounts dir; one that is not mounted is not an error. A busy
// mount (a host process inside it) is detached, so it goes as soon as it
// is unused instead of staying mounted.
func (linuxSystem) unmount(dir string) error {
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

// mounted reads /proc/self/mountinfo for mountpoints at or below dir.
func (linuxSystem) mounted(dir string) (map[string]bool, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("volume: %w", err)
	}
	out := map[string]bool{}
	prefix := strings.TrimSuffix(dir, "/") + "/"
	for line := range strings.SplitSeq(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescape(f[4])
		if mp == dir || strings.HasPrefix(mp, prefix) {
			out[mp] = true
		}
	}
	return out, nil
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// allocated is what a file takes on disk.
func allocated(fi fs.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return fi.Size()
}

func owner(fi fs.FileInfo) (uid, gid int, ok bool) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid), int(st.Gid), true
	}
	return 0, 0, false
}

// openDirAt opens the directory name in parent without following a symlink
// at name (parent is a host path paddock made; name is one component).
func openDirAt(parent, name string) (*os.File, error) {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return nil, fmt.Errorf("open %q in %s: not one path component", name, parent)
	}
	p, err := os.OpenFile(parent, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	fd, err := unix.Openat(int(p.Fd()), name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: filepath.Join(parent, name), Err: err}
	}
	return os.NewFile(uintptr(fd), filepath.Join(parent, name)), nil
}

func (linuxSystem) emptyDir(parent, name string) (bool, error) {
	f, err := openDirAt(parent, name)
	if err != nil {
		return false, err
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if errors.Is(err, io.EOF) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return len(names) == 0, nil
}

func (linuxSystem) chownDir(parent, name string, uid, gid int) error {
	f, err := openDirAt(parent, name)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Chown(uid, gid) // fchown: the directory just opened, not a path
}
