package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/escape/wire"
)

// checkSetuid executes a setuid-root, setgid-root copy of the probe (made
// by the runner with sudo, on the sandbox's own root filesystem) as the
// user: nothing of root may come with it.
func checkSetuid(cfg *config) wire.Result {
	a := newAttempts("setuid-exec")
	if os.Getuid() == 0 {
		return a.result("already root")
	}
	if cfg.suid == "" {
		return a.result("no -suid copy given")
	}
	var st unix.Stat_t
	if !a.control("stat "+cfg.suid, unix.Stat(cfg.suid, &st)) {
		return a.result("")
	}
	if st.Uid != 0 || st.Mode&unix.S_ISUID == 0 || st.Mode&unix.S_ISGID == 0 {
		a.failf("%s is not setuid-root and setgid (mode %o, owner %d): the attack cannot be tried", cfg.suid, st.Mode&0o7777, st.Uid)
		return a.result("")
	}
	out, err := exec.Command(cfg.suid, "-ids").Output()
	if !a.control("exec "+cfg.suid, err) {
		return a.result("")
	}
	var v ids
	if err := json.Unmarshal(out, &v); err != nil {
		a.failf("ids from %s: %v (%q)", cfg.suid, err, out)
		return a.result("")
	}
	desc := fmt.Sprintf("uid %d/%d/%d gid %d/%d/%d CapEff %s CapPrm %s", v.UID, v.EUID, v.SUID, v.GID, v.EGID, v.SGID,
		capList(v.CapEff), capList(v.CapPrm))
	if v.EUID == 0 || v.SUID == 0 || v.EGID == 0 || v.SGID == 0 || v.CapEff != 0 || v.CapPrm != 0 {
		a.worked("exec of a setuid-root binary", desc)
	} else {
		a.tried = append(a.tried, "exec of a setuid-root binary: "+desc)
	}
	return a.result("")
}

// checkSetfcap gives a file CAP_SYS_ADMIN through security.capability.
func checkSetfcap(cfg *config) wire.Result {
	a := newAttempts("setfcap")
	dir, err := tempDir()
	if !a.control("temp dir", err) {
		return a.result("")
	}
	defer os.RemoveAll(dir)
	p := filepath.Join(dir, "f")
	if !a.control("create "+p, os.WriteFile(p, nil, 0o755)) {
		return a.result("")
	}
	// vfs_cap_data revision 2, effective, permitted = CAP_SYS_ADMIN.
	v := []byte{1, 0, 0, 2, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	err = unix.Setxattr(p, "security.capability", v, 0)
	a.call("setxattr security.capability", err, "set: the file would run with CAP_SYS_ADMIN")
	return a.result("")
}

// spawn starts the probe as a child with attr, so the kernel's refusal of
// the namespace flags (unshare or clone) comes back from Start.
func spawn(attr *syscall.SysProcAttr) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, "-noop")
	cmd.SysProcAttr = attr
	return cmd.Run()
}

// checkUserns makes a new user namespace, where the caller would hold every
// capability over the namespaces it creates (the door to most kernel bugs).
func checkUserns(cfg *config) wire.Result {
	a := newAttempts("userns-new")
	if !a.control("spawn a child", spawn(&syscall.SysProcAttr{})) {
		return a.result("")
	}
	maps := []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}}
	gmaps := []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}}
	a.call("clone(CLONE_NEWUSER) as root of it", spawn(&syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWUSER,
		UidMappings: maps, GidMappings: gmaps}), "created")
	a.call("unshare(CLONE_NEWUSER)", spawn(&syscall.SysProcAttr{Unshareflags: unix.CLONE_NEWUSER}), "created")
	return a.result("")
}

// checkUsernsMaps rewrites this process's own id maps and setgroups.
func checkUsernsMaps(cfg *config) wire.Result {
	a := newAttempts("userns-maps")
	for _, w := range []struct{ file, value string }{
		{"setgroups", "deny"},
		{"uid_map", "0 0 4294967295\n"},
		{"gid_map", "0 0 4294967295\n"},
	} {
		p := "/proc/self/" + w.file
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			a.refused("open "+p, err)
			continue
		}
		_, err = f.Write([]byte(w.value))
		f.Close()
		a.call("write "+p, err, "written")
	}
	return a.result("")
}

// checkUnshare makes every other kind of namespace, each through unshare
// and through clone.
func checkUnshare(cfg *config) wire.Result {
	a := newAttempts("unshare")
	if !a.control("spawn a child", spawn(&syscall.SysProcAttr{})) {
		return a.result("")
	}
	for _, ns := range []struct {
		name string
		flag uintptr
	}{
		{"NEWNS", unix.CLONE_NEWNS}, {"NEWNET", unix.CLONE_NEWNET}, {"NEWPID", unix.CLONE_NEWPID},
		{"NEWUTS", unix.CLONE_NEWUTS}, {"NEWIPC", unix.CLONE_NEWIPC}, {"NEWCGROUP", unix.CLONE_NEWCGROUP},
		{"NEWTIME", unix.CLONE_NEWTIME},
	} {
		a.call("unshare(CLONE_"+ns.name+")", spawn(&syscall.SysProcAttr{Unshareflags: ns.flag}), "created")
		if ns.flag != unix.CLONE_NEWTIME { // clone cannot take NEWTIME
			a.call("clone(CLONE_"+ns.name+")", spawn(&syscall.SysProcAttr{Cloneflags: ns.flag}), "created")
		}
	}
	return a.result("")
}

// checkSetns joins PID 1's namespaces and this process's own (a caller
// without CAP_SYS_ADMIN can join none), by path and by pidfd.
func checkSetns(cfg *config) wire.Result {
	a := newAttempts("setns")
	// The thread may change namespace; it dies with the process.
	runtime.LockOSThread()
	for _, pid := range []string{"1", "self"} {
		for _, ns := range []string{"mnt", "pid", "net", "uts", "ipc", "cgroup", "user", "time"} {
			p := "/proc/" + pid + "/ns/" + ns
			fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				if !isNotExist(err) {
					a.refused("open "+p, err)
				}
				continue
			}
			err = unix.Setns(fd, 0)
			unix.Close(fd)
			switch {
			case err == nil:
				a.worked("setns("+p+")", "joined")
			case errors.Is(err, unix.EINVAL) && ns == "user" && pid == "self":
				// Joining one's own user namespace is EINVAL for everyone.
			default:
				a.refused("setns("+p+")", err)
			}
		}
	}
	if pfd, err := unix.PidfdOpen(1, 0); err == nil {
		err = unix.Setns(pfd, unix.CLONE_NEWNET|unix.CLONE_NEWUTS|unix.CLONE_NEWIPC)
		unix.Close(pfd)
		a.call("setns(pidfd of 1, NET|UTS|IPC)", err, "joined")
	}
	return a.result("")
}

// checkChroot: chroot, and if that is allowed the classic way out of a
// chroot (chroot into a subdirectory, then climb past the root).
func checkChroot(cfg *config) wire.Result {
	a := newAttempts("chroot")
	dir, err := tempDir()
	if !a.control("temp dir", err) {
		return a.result("")
	}
	defer os.RemoveAll(dir)
	if err := unix.Chroot(dir); err != nil {
		a.refused("chroot "+dir, err)
		return a.result("")
	}
	evidence := "chroot allowed"
	os.Mkdir("/x", 0o700)
	if unix.Chroot("/x") == nil {
		for range 64 {
			unix.Chdir("..")
		}
		if unix.Chroot(".") == nil {
			ents, _ := os.ReadDir("/")
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			evidence += fmt.Sprintf("; after climbing out, / holds %v", names)
			for _, p := range cfg.hostFiles {
				if _, err := os.Stat(p); err == nil {
					evidence += "; host file " + p + " visible"
				}
			}
		}
	}
	a.worked("chroot", evidence)
	return a.result("")
}

// mountCheck mounts a filesystem on a scratch directory.
func mountCheck(source, fstype string, flags uintptr, data string) func(*config) wire.Result {
	return func(cfg *config) wire.Result {
		name := "mount-" + fstype
		if flags&unix.MS_BIND != 0 {
			name = "mount-bind"
		}
		a := newAttempts(name)
		dir, err := tempDir()
		if !a.control("temp dir", err) {
			return a.result("")
		}
		defer os.RemoveAll(dir)
		what := fmt.Sprintf("mount(%q, %s, %q)", source, dir, fstype)
		err = unix.Mount(source, dir, fstype, flags, data)
		if err == nil {
			unix.Unmount(dir, unix.MNT_DETACH)
		}
		a.call(what, err, "mounted (and unmounted)")
		return a.result("")
	}
}

// checkMountCgroup mounts cgroup hierarchies afresh: a v1 hierarchy the
// sandbox mounts itself comes with a writable release_agent.
func checkMountCgroup(cfg *config) wire.Result {
	a := newAttempts("mount-cgroup")
	dir, err := tempDir()
	if !a.control("temp dir", err) {
		return a.result("")
	}
	defer os.RemoveAll(dir)
	for _, m := range []struct{ fstype, data string }{{"cgroup", "rdma"}, {"cgroup", "memory"}, {"cgroup", "none,name=paddock-escape"}, {"cgroup2", ""}} {
		err := unix.Mount("cgroup", dir, m.fstype, 0, m.data)
		if err == nil {
			unix.Unmount(dir, unix.MNT_DETACH)
		}
		a.call(fmt.Sprintf("mount %s %q", m.fstype, m.data), err, "mounted (and unmounted)")
	}
	return a.result("")
}

// checkMountAPI: the new mount API (fsopen, open_tree, move_mount).
func checkMountAPI(cfg *config) wire.Result {
	a := newAttempts("mount-api")
	fd, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	if err == nil {
		unix.Close(fd)
	}
	a.call("fsopen(tmpfs)", err, "got a filesystem context")
	fd, err = unix.OpenTree(unix.AT_FDCWD, "/", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err == nil {
		unix.Close(fd)
	}
	a.call("open_tree(/, CLONE)", err, "cloned the mount tree")
	return a.result("")
}

// checkRemount makes read-only mounts writable (and, if that works, makes
// them read-only again).
func checkRemount(cfg *config) wire.Result {
	a := newAttempts("remount-rw")
	mounts, err := mountinfo()
	if !a.control("read mountinfo", err) {
		return a.result("")
	}
	for _, m := range mounts {
		if !m.readOnly() || !slices.Contains([]string{"/usr", "/proc/sys", "/sys", "/sys/fs/cgroup", "/proc/sysrq-trigger", "/.paddock/agent", "/"}, m.point) {
			continue
		}
		err := unix.Mount("", m.point, "", unix.MS_REMOUNT|unix.MS_BIND, "")
		if err == nil {
			unix.Mount("", m.point, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, "")
		}
		a.call("remount "+m.point+" read-write", err, "remounted (and back)")
		if m.point == "/usr" {
			err = unix.MountSetattr(-1, "/usr", unix.AT_RECURSIVE, &unix.MountAttr{Attr_clr: unix.MOUNT_ATTR_RDONLY})
			if err == nil {
				unix.MountSetattr(-1, "/usr", unix.AT_RECURSIVE, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY})
			}
			a.call("mount_setattr(/usr, clear RDONLY)", err, "cleared (and set back)")
		}
	}
	return a.result("no read-only mount found")
}

// checkMknod creates device nodes for a disk and for physical memory.
func checkMknod(cfg *config) wire.Result {
	a := newAttempts("mknod")
	dir := os.Getenv("HOME")
	if dir == "" || unix.Access(dir, unix.W_OK) != nil {
		dir = os.TempDir()
	}
	dir, err := os.MkdirTemp(dir, "paddock-escape-")
	if !a.control("temp dir", err) {
		return a.result("")
	}
	defer os.RemoveAll(dir)
	if !a.control("mkfifo (the directory takes nodes)", unix.Mkfifo(filepath.Join(dir, "fifo"), 0o600)) {
		return a.result("")
	}
	for _, n := range []struct {
		name         string
		mode         uint32
		major, minor uint32
	}{{"sda", unix.S_IFBLK, 8, 0}, {"vda", unix.S_IFBLK, 254, 0}, {"mem", unix.S_IFCHR, 1, 1}} {
		p := filepath.Join(dir, n.name)
		err := unix.Mknod(p, n.mode|0o600, int(unix.Mkdev(n.major, n.minor)))
		if err != nil {
			a.refused("mknod "+n.name, err)
			continue
		}
		evidence := "created"
		if f, err := os.Open(p); err == nil {
			f.Close()
			evidence += " and opened"
		} else {
			evidence += "; open " + errText(err)
		}
		a.worked("mknod "+n.name, evidence)
	}
	return a.result("")
}

// allowedDevices are the nodes every sandbox has.
var allowedDevices = map[string]bool{
	"/dev/null": true, "/dev/zero": true, "/dev/full": true, "/dev/random": true, "/dev/urandom": true,
	"/dev/tty": true, "/dev/ptmx": true, "/dev/pts/ptmx": true, "/dev/console": true,
}

// checkDevices opens every device node in /dev beyond the standard ones.
// A watchdog is never opened (an open arms it): its presence is the finding.
func checkDevices(cfg *config) wire.Result {
	a := newAttempts("devices")
	if f, err := os.Open("/dev/null"); a.control("open /dev/null", err) {
		f.Close()
	}
	n := 0
	filepath.WalkDir("/dev", func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Type()&(os.ModeDevice|os.ModeCharDevice) == 0 {
			return nil
		}
		if allowedDevices[p] || strings.HasPrefix(p, "/dev/pts/") {
			return nil
		}
		n++
		if strings.Contains(p, "watchdog") {
			a.worked(p, "a watchdog in the sandbox (not opened)")
			return nil
		}
		if use := sentryDevices[p]; cfg.sentry && use != nil {
			use(a, p)
			return nil
		}
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
		if err != nil {
			a.refused("open "+p, err)
			return nil
		}
		unix.Close(fd)
		a.worked("open "+p, "opened")
		return nil
	})
	a.tried = append(a.tried, fmt.Sprintf("%d device nodes beyond the standard ones", n))
	return a.result("")
}

// sentryDevices are the devices gVisor's sentry makes in every sandbox's
// /dev and implements itself: opening one reaches sentry code, not a host
// driver (a device node on a gofer mount, too, opens only what the sentry
// implements: runsc's default --character-device-policy=emulated-only).
// Under the sentry each is judged by what it grants, not by its open.
var sentryDevices = map[string]func(a *attempts, p string){
	"/dev/net/tun": useTun,
	"/dev/fuse":    useFuse,
}

// useTun opens a tun device and asks it for an interface, which takes
// CAP_NET_ADMIN.
func useTun(a *attempts, p string) {
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		a.refused("open "+p, err)
		return
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("pdescape0")
	if err != nil {
		a.failf("ifreq: %v", err)
		return
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	a.call("open "+p+" (the sentry's) and TUNSETIFF", unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr), "made a tun interface")
}

// useFuse opens the FUSE device and mounts a filesystem served through it,
// which takes CAP_SYS_ADMIN.
func useFuse(a *attempts, p string) {
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		a.refused("open "+p, err)
		return
	}
	defer unix.Close(fd)
	dir, err := os.MkdirTemp("", "paddock-escape-fuse-")
	if err != nil {
		a.failf("fuse mountpoint: %v", err)
		return
	}
	defer os.Remove(dir)
	data := fmt.Sprintf("fd=%d,rootmode=40000,user_id=%d,group_id=%d", fd, os.Getuid(), os.Getgid())
	err = unix.Mount("paddock-escape", dir, "fuse", unix.MS_NOSUID|unix.MS_NODEV, data)
	if err == nil {
		unix.Unmount(dir, unix.MNT_DETACH)
	}
	a.call("open "+p+" (the sentry's) and mount a FUSE filesystem", err, "mounted")
}

// checkModules loads and unloads kernel modules (with a module that is not
// one, and a name that does not exist).
func checkModules(cfg *config) wire.Result {
	a := newAttempts("modules")
	a.privileged("init_module(garbage)", unix.InitModule([]byte{0}, ""))
	if f, err := os.Open("/dev/null"); err == nil {
		a.privileged("finit_module(/dev/null)", unix.FinitModule(int(f.Fd()), "", 0))
		f.Close()
	}
	a.privileged("delete_module(paddock_escape_none)", unix.DeleteModule("paddock_escape_none", unix.O_NONBLOCK))
	return a.result("")
}

// checkKexec loads a new kernel, with a segment count the kernel rejects
// once it has checked permission.
func checkKexec(cfg *config) wire.Result {
	a := newAttempts("kexec")
	_, _, e := unix.Syscall6(unix.SYS_KEXEC_LOAD, 0, 17, 0, 0, 0, 0)
	a.privileged("kexec_load(17 segments)", errnoErr(e))
	_, _, e = unix.Syscall6(unix.SYS_KEXEC_FILE_LOAD, ^uintptr(0), ^uintptr(0), 0, 0, 0xffff, 0)
	a.privileged("kexec_file_load(bad flags)", errnoErr(e))
	return a.result("")
}

// checkReboot calls reboot with a bad second magic number: refused with
// EPERM without CAP_SYS_BOOT, EINVAL with it.
func checkReboot(cfg *config) wire.Result {
	a := newAttempts("reboot")
	_, _, e := unix.Syscall6(unix.SYS_REBOOT, unix.LINUX_REBOOT_MAGIC1, 0, 0, 0, 0, 0)
	a.privileged("reboot(bad magic)", errnoErr(e))
	return a.result("")
}

// checkClock sets the host's clock to the time it already has.
func checkClock(cfg *config) wire.Result {
	a := newAttempts("clock")
	var ts unix.Timespec
	if a.control("clock_gettime", unix.ClockGettime(unix.CLOCK_REALTIME, &ts)) {
		a.call("clock_settime(REALTIME, now)", unix.ClockSettime(unix.CLOCK_REALTIME, &ts), "set")
	}
	var tv unix.Timeval
	if a.control("gettimeofday", unix.Gettimeofday(&tv)) {
		a.call("settimeofday(now)", unix.Settimeofday(&tv), "set")
	}
	var tx unix.Timex
	switch _, err := unix.Adjtimex(&tx); {
	case err == nil:
		tx.Modes = unix.ADJ_FREQUENCY
		_, err := unix.Adjtimex(&tx)
		a.call("adjtimex(ADJ_FREQUENCY, unchanged)", err, "set")
	case isPermission(err):
		// gVisor's sentry refuses adjtimex altogether without CAP_SYS_TIME,
		// reads included.
		a.refused("adjtimex(read)", err)
	default:
		a.control("adjtimex(read)", err)
	}
	// An out-of-range tick: the kernel checks CAP_SYS_TIME first, so only
	// EPERM is a refusal, and nothing can change.
	bad := unix.Timex{Modes: unix.ADJ_TICK, Tick: 1}
	_, err := unix.Adjtimex(&bad)
	a.privileged("adjtimex(ADJ_TICK, out of range)", err)
	return a.result("")
}

// checkAdminSyscalls: swap, process accounting and pivot_root, each with a
// path that does not exist, so only the permission check can say EPERM.
func checkAdminSyscalls(cfg *config) wire.Result {
	a := newAttempts("admin-syscalls")
	none, _ := unix.BytePtrFromString("/paddock-escape-none/x")
	_, _, e := unix.Syscall(unix.SYS_SWAPON, uintptr(unsafe.Pointer(none)), 0, 0)
	a.privileged("swapon(none)", errnoErr(e))
	_, _, e = unix.Syscall(unix.SYS_SWAPOFF, uintptr(unsafe.Pointer(none)), 0, 0)
	a.privileged("swapoff(none)", errnoErr(e))
	a.privileged("acct(none)", unix.Acct("/paddock-escape-none/x"))
	a.privileged("pivot_root(none, none)", unix.PivotRoot("/paddock-escape-none/a", "/paddock-escape-none/b"))
	_, _, e = unix.Syscall(unix.SYS_VHANGUP, 0, 0, 0)
	a.privileged("vhangup", errnoErr(e))
	return a.result("")
}

// pause is how long network checks wait for an answer.
const pause = 2 * time.Second
