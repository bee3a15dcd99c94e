package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/escape/wire"
)

// check is one named attack.
type check struct {
	name string
	fn   func(*config) wire.Result
	// sigsysBlocks: death by SIGSYS is the seccomp filter refusing it.
	sigsysBlocks bool
}

// checks run in this order; umount-masks is last because if it worked it
// would change what the others see.
var checks = []check{
	// Host files and kernel state through /proc and /sys.
	{name: "host-file", fn: checkHostFile},
	{name: "proc1-root", fn: checkProc1Root},
	{name: "open-by-handle", fn: checkOpenByHandle},
	{name: "kcore", fn: checkKcore},
	{name: "kallsyms", fn: checkKallsyms},
	{name: "kmsg", fn: checkKmsg},
	{name: "sysrq-trigger", fn: checkSysrq},
	{name: "core-pattern", fn: checkCorePattern},
	{name: "proc-sys-write", fn: checkProcSys},
	{name: "sys-write", fn: checkSys},
	{name: "cgroup", fn: checkCgroup},
	// The agent, PID 1.
	{name: "proc1-mem", fn: checkProc1Mem},
	{name: "proc1-environ", fn: checkProc1Environ},
	{name: "proc1-fd", fn: checkProc1FD},
	{name: "proc1-exe-write", fn: checkProc1Exe},
	{name: "pidfd-getfd", fn: checkPidfdGetfd},
	{name: "ptrace-pid1", fn: checkPtrace},
	{name: "agent-socket", fn: checkAgentSocket},
	// Privileges.
	{name: "caps", fn: checkCaps},
	{name: "setuid-exec", fn: checkSetuid},
	{name: "setfcap", fn: checkSetfcap},
	{name: "userns-new", fn: checkUserns},
	{name: "userns-maps", fn: checkUsernsMaps},
	{name: "unshare", fn: checkUnshare},
	{name: "setns", fn: checkSetns},
	{name: "chroot", fn: checkChroot},
	{name: "mount-proc", fn: mountCheck("proc", "proc", 0, "")},
	{name: "mount-sysfs", fn: mountCheck("sysfs", "sysfs", 0, "")},
	{name: "mount-tmpfs", fn: mountCheck("tmpfs", "tmpfs", 0, "size=1m")},
	{name: "mount-cgroup", fn: checkMountCgroup},
	{name: "mount-bind", fn: mountCheck("/", "", unix.MS_BIND|unix.MS_REC, "")},
	{name: "mount-api", fn: checkMountAPI},
	{name: "remount-rw", fn: checkRemount},
	{name: "mknod", fn: checkMknod},
	{name: "devices", fn: checkDevices},
	{name: "modules", fn: checkModules},
	{name: "kexec", fn: checkKexec},
	{name: "reboot", fn: checkReboot},
	{name: "clock", fn: checkClock},
	{name: "admin-syscalls", fn: checkAdminSyscalls},
	{name: "ioport", fn: checkIOPort},
	{name: "seccomp-x32", fn: checkX32, sigsysBlocks: true},
	// Kernel attack surface the sandbox must not reach.
	{name: "bpf", fn: checkBPF},
	{name: "perf-event", fn: checkPerf},
	{name: "keyctl", fn: checkKeyctl},
	{name: "io-uring", fn: checkIOUring},
	{name: "userfaultfd", fn: checkUserfaultfd},
	{name: "fanotify", fn: checkFanotify},
	// Network.
	{name: "raw-socket", fn: checkRawSocket},
	{name: "packet-socket", fn: checkPacketSocket},
	{name: "netlink-admin", fn: checkNetlinkAdmin},
	{name: "vsock", fn: checkVsock},
	{name: "tcp-connect", fn: checkConnect},
	{name: "dns-query", fn: checkDNS},
	// Other tenants and the host's processes.
	{name: "host-pid", fn: checkHostPID},
	{name: "peruid-inotify", fn: checkPerUIDInotify},
	{name: "umount-masks", fn: checkUmountMasks},
}

// readHead opens path and reads at most n bytes.
func readHead(path string, n int) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, n)
	k, err := f.Read(buf)
	if k > 0 {
		return buf[:k], nil
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return buf[:0], nil
}

// pids lists the processes visible in /proc.
func pids() []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, e.Name())
		}
	}
	return out
}

// checkHostFile reads the runner's host files by every route /proc offers
// to another root: direct, every visible process's root and cwd, and ".."
// past the top.
func checkHostFile(cfg *config) wire.Result {
	a := newAttempts("host-file")
	for _, p := range cfg.hostFiles {
		routes := []string{p, "/proc/self/root" + p, "/../../.." + p}
		for _, pid := range pids() {
			routes = append(routes, "/proc/"+pid+"/root"+p, "/proc/"+pid+"/cwd/../../../../../../../.."+p)
		}
		for _, r := range routes {
			data, err := readHead(r, 64)
			if err == nil {
				a.worked("read "+r, preview(data))
			} else if !isNotExist(err) && !isPermission(err) {
				a.refused(r, err)
			}
		}
		a.tried = append(a.tried, fmt.Sprintf("%s by %d routes: absent or refused", p, len(routes)))
	}
	return a.result("no -host-file given")
}

func isPermission(err error) bool { return errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) }

// checkProc1Root: PID 1's root and cwd must be the sandbox's root.
func checkProc1Root(cfg *config) wire.Result {
	a := newAttempts("proc1-root")
	var root unix.Stat_t
	if !a.control("stat /", unix.Stat("/", &root)) {
		return a.result("")
	}
	for _, p := range []string{"/proc/1/root", "/proc/1/cwd"} {
		var st unix.Stat_t
		err := unix.Stat(p, &st)
		switch {
		case err != nil:
			a.refused("stat "+p, err)
		case st.Dev != root.Dev || (p == "/proc/1/root" && st.Ino != root.Ino):
			a.worked(p, fmt.Sprintf("another filesystem (dev %d ino %d, / is dev %d ino %d)", st.Dev, st.Ino, root.Dev, root.Ino))
		default:
			a.tried = append(a.tried, p+": the sandbox's own root")
		}
	}
	return a.result("")
}

// checkOpenByHandle is the "shocker" attack: a file handle names an inode
// on a filesystem the host shares (the read-only base), and
// open_by_handle_at opens it without any path, e.g. the filesystem's root.
func checkOpenByHandle(cfg *config) wire.Result {
	a := newAttempts("open-by-handle")
	for _, dir := range []string{"/usr", "/", "/etc"} {
		mfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		h, _, herr := unix.NameToHandleAt(unix.AT_FDCWD, dir, 0)
		handles := map[string]unix.FileHandle{}
		if herr == nil {
			handles["handle of "+dir] = h
		} else {
			a.tried = append(a.tried, "name_to_handle_at "+dir+": "+errText(herr))
		}
		// ext4/xfs root inode (2, generation 0) as FILEID_INO32_GEN.
		handles["inode 2 of "+dir+"'s filesystem"] = unix.NewFileHandle(1, []byte{2, 0, 0, 0, 0, 0, 0, 0})
		for what, fh := range handles {
			fd, err := unix.OpenByHandleAt(mfd, fh, unix.O_RDONLY|unix.O_CLOEXEC)
			if err == nil {
				link, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
				unix.Close(fd)
				a.worked("open_by_handle_at("+what+")", "opened "+link)
				continue
			}
			a.privileged("open_by_handle_at("+what+")", err)
		}
		unix.Close(mfd)
	}
	return a.result("no directory to take a handle of")
}

// checkKcore reads kernel and physical memory.
func checkKcore(cfg *config) wire.Result {
	a := newAttempts("kcore")
	for _, p := range []string{"/proc/kcore", "/dev/mem", "/dev/kmem", "/dev/port"} {
		data, err := readHead(p, 4)
		switch {
		case isNotExist(err):
			continue
		case err != nil:
			a.refused(p, err)
		case p == "/proc/kcore" && !bytes.Equal(data, []byte("\x7fELF")):
			a.tried = append(a.tried, fmt.Sprintf("%s: masked (read %q)", p, data))
		default:
			a.worked("read "+p, preview(data))
		}
	}
	return a.result("no kcore, mem, kmem or port in the sandbox")
}

// checkKallsyms: kernel symbol addresses defeat KASLR.
func checkKallsyms(cfg *config) wire.Result {
	a := newAttempts("kallsyms")
	data, err := os.ReadFile("/proc/kallsyms")
	if isNotExist(err) {
		return a.result("no /proc/kallsyms")
	}
	if err != nil {
		a.refused("read /proc/kallsyms", err)
		return a.result("")
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		addr, _, _ := strings.Cut(line, " ")
		if v, err := strconv.ParseUint(addr, 16, 64); err == nil && v != 0 {
			a.worked("/proc/kallsyms", "a real address: "+line)
			return a.result("")
		}
	}
	a.tried = append(a.tried, "/proc/kallsyms: every address is 0")
	return a.result("")
}

// checkKmsg reads the host kernel's log (other tenants' OOM kills, host
// paths) and writes to it.
func checkKmsg(cfg *config) wire.Result {
	a := newAttempts("kmsg")
	const sizeBuffer, readAll = 10, 3
	n, err := unix.Klogctl(sizeBuffer, nil)
	a.call("syslog(SIZE_BUFFER)", err, fmt.Sprintf("%d bytes", n))
	buf := make([]byte, 256)
	n, err = unix.Klogctl(readAll, buf)
	a.call("syslog(READ_ALL)", err, preview(buf[:max(n, 0)]))
	for _, p := range []string{"/dev/kmsg", "/proc/kmsg"} {
		data, err := readHead(p, 64)
		switch {
		case isNotExist(err):
		case err != nil:
			a.refused("read "+p, err)
		default:
			a.worked("read "+p, preview(data))
		}
	}
	if f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0); err == nil {
		f.Close()
		a.worked("open /dev/kmsg for writing", "opened")
	}
	return a.result("")
}

// checkSysrq opens the magic SysRq trigger for writing. It never writes:
// an open that works is the evidence.
func checkSysrq(cfg *config) wire.Result {
	a := newAttempts("sysrq-trigger")
	const p = "/proc/sysrq-trigger"
	if _, err := os.Stat(p); isNotExist(err) {
		return a.result("no " + p)
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err == nil {
		f.Close()
		a.worked("open "+p+" for writing", "opened (nothing written)")
	} else {
		a.refused("open "+p+" for writing", err)
	}
	sentryOwned(cfg, a, "procfs")
	return a.result("")
}

// sentryOwned, in a sandbox whose kernel is gVisor's sentry, takes what a
// check reached in /proc for the sentry's own state, not the host's: the
// sentry implements procfs itself, and no file in it is the host kernel's.
// It needs evidence that this /proc is not the host's: its /proc/version
// differs from the host's. Without both, what was reached stays an escape.
func sentryOwned(cfg *config, a *attempts, what string) {
	if !cfg.sentry || len(a.escapes) == 0 {
		return
	}
	v, err := os.ReadFile("/proc/version")
	own := strings.TrimSpace(string(v))
	if err != nil || cfg.hostKernel == "" || own == cfg.hostKernel {
		a.escapes = append(a.escapes, fmt.Sprintf("cannot tell this /proc from the host's (/proc/version %q, %s)", own, errText(err)))
		return
	}
	for _, e := range a.escapes {
		a.tried = append(a.tried, e+" (the sentry's own "+what+")")
	}
	a.escapes = nil
	a.tried = append(a.tried, fmt.Sprintf("/proc/version %q is the sentry's, not the host's", own))
}

// writeBack writes a file's current content back to it: harmless if it
// works, and proof that the sandbox can set it.
func writeBack(a *attempts, path string, value []byte) {
	if value == nil {
		cur, err := os.ReadFile(path)
		if isNotExist(err) {
			return
		}
		if err != nil {
			a.refused("read "+path, err)
			return
		}
		value = cur
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		a.refused("open "+path+" for writing", err)
		return
	}
	defer f.Close()
	_, werr := f.Write(value)
	a.worked("open "+path+" for writing", fmt.Sprintf("opened; writing its own value back: %s", errText(werr)))
}

// checkCorePattern: a "|program" core_pattern runs on the host as root.
func checkCorePattern(cfg *config) wire.Result {
	a := newAttempts("core-pattern")
	writeBack(a, "/proc/sys/kernel/core_pattern", nil)
	return a.result("no /proc/sys/kernel/core_pattern")
}

// checkProcSys writes host-wide sysctls (each its own value back).
func checkProcSys(cfg *config) wire.Result {
	a := newAttempts("proc-sys-write")
	for _, p := range []string{
		"kernel/modprobe", "kernel/hotplug", "kernel/panic", "kernel/sysrq", "kernel/pid_max",
		"kernel/randomize_va_space", "kernel/yama/ptrace_scope", "kernel/perf_event_paranoid",
		"kernel/unprivileged_bpf_disabled", "kernel/kptr_restrict", "kernel/dmesg_restrict",
		"vm/overcommit_memory", "vm/unprivileged_userfaultfd", "fs/inotify/max_user_instances",
		"fs/inotify/max_user_watches", "fs/protected_symlinks", "user/max_user_namespaces",
		"net/ipv4/ip_forward", "net/core/bpf_jit_enable",
	} {
		writeBack(a, "/proc/sys/"+p, nil)
	}
	sentryOwned(cfg, a, "sysctls")
	return a.result("no sysctls found")
}

// checkSys writes host-wide sysfs attributes (each its own value back).
func checkSys(cfg *config) wire.Result {
	a := newAttempts("sys-write")
	writeBack(a, "/sys/kernel/uevent_helper", nil)
	writeBack(a, "/sys/kernel/profiling", nil)
	writeBack(a, "/sys/kernel/mm/ksm/run", nil)
	// "always [madvise] never": the selection is written back bare.
	if data, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled"); err == nil {
		if m := regexp.MustCompile(`\[(\w+)\]`).FindSubmatch(data); m != nil {
			writeBack(a, "/sys/kernel/mm/transparent_hugepage/enabled", m[1])
		}
	}
	if blocks, _ := os.ReadDir("/sys/block"); len(blocks) > 0 {
		writeBack(a, "/sys/block/"+blocks[0].Name()+"/queue/read_ahead_kb", nil)
	}
	return a.result("no sysfs attributes found")
}

// checkCgroup: every cgroup hierarchy the sandbox sees must be read-only to
// it: no new child cgroups, no moving processes, no raising its own limits,
// no release_agent (runs on the host as root) or notify_on_release, no
// device rules.
func checkCgroup(cfg *config) wire.Result {
	a := newAttempts("cgroup")
	mounts, err := mountinfo()
	if !a.control("read /proc/self/mountinfo", err) {
		return a.result("")
	}
	own, _ := os.ReadFile("/proc/self/cgroup")
	found := 0
	for _, m := range mounts {
		if m.fstype != "cgroup" && m.fstype != "cgroup2" {
			continue
		}
		found++
		dir := filepath.Join(m.point, "paddock-escape-probe")
		if err := os.Mkdir(dir, 0o755); err == nil {
			os.Remove(dir)
			a.worked("mkdir "+dir, "created (and removed) a child cgroup")
		} else {
			a.refused("mkdir "+dir, err)
		}
		for _, f := range []string{"cgroup.procs", "tasks", "release_agent", "notify_on_release",
			"memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.max", "pids.max",
			"cpu.cfs_quota_us", "cpu.max", "cgroup.subtree_control"} {
			p := filepath.Join(m.point, f)
			if f == "cgroup.procs" || f == "tasks" {
				writeBack(a, p, []byte(strconv.Itoa(os.Getpid())))
			} else {
				writeBack(a, p, nil)
			}
		}
		// Never written: an open is the evidence.
		if p := filepath.Join(m.point, "devices.allow"); exists(p) {
			if f, err := os.OpenFile(p, os.O_WRONLY, 0); err == nil {
				f.Close()
				a.worked("open "+p+" for writing", "opened (nothing written)")
			} else {
				a.refused("open "+p+" for writing", err)
			}
		}
	}
	if found == 0 {
		return a.result("no cgroup filesystem mounted")
	}
	a.tried = append(a.tried, fmt.Sprintf("%d hierarchies; /proc/self/cgroup %q", found, strings.TrimSpace(string(own))))
	return a.result("")
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// mount is a line of mountinfo: opts are the per-mount options ("ro,...").
type mount struct{ point, fstype, source, opts string }

func (m mount) readOnly() bool { return slices.Contains(strings.Split(m.opts, ","), "ro") }

func mountinfo() ([]mount, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []mount
	for line := range strings.SplitSeq(strings.TrimSpace(string(data)), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 6 || len(g) < 2 {
			continue
		}
		out = append(out, mount{point: f[4], opts: f[5], fstype: g[0], source: g[1]})
	}
	return out, nil
}

// checkProc1Mem opens the agent's memory for writing (a takeover of the
// process that answers the host). It never writes.
func checkProc1Mem(cfg *config) wire.Result {
	a := newAttempts("proc1-mem")
	if _, err := os.Stat("/proc/1/status"); !a.control("PID 1 visible", err) {
		return a.result("")
	}
	for _, mode := range []struct {
		name string
		flag int
	}{{"O_RDWR", os.O_RDWR}, {"O_RDONLY", os.O_RDONLY}} {
		f, err := os.OpenFile("/proc/1/mem", mode.flag, 0)
		if err != nil {
			a.refused("open /proc/1/mem "+mode.name, err)
			continue
		}
		evidence := "opened"
		if addr, ok := firstMapping(); ok {
			buf := make([]byte, 8)
			if n, err := f.ReadAt(buf, int64(addr)); err == nil {
				evidence += fmt.Sprintf("; read %x at %#x", buf[:n], addr)
			}
		}
		f.Close()
		a.worked("open /proc/1/mem "+mode.name, evidence)
	}
	return a.result("")
}

// firstMapping is the start of PID 1's first readable mapping.
func firstMapping() (uint64, bool) {
	data, err := os.ReadFile("/proc/1/maps")
	if err != nil {
		return 0, false
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && strings.HasPrefix(f[1], "r") {
			start, _, _ := strings.Cut(f[0], "-")
			v, err := strconv.ParseUint(start, 16, 64)
			return v, err == nil
		}
	}
	return 0, false
}

func checkProc1Environ(cfg *config) wire.Result {
	a := newAttempts("proc1-environ")
	data, err := os.ReadFile("/proc/1/environ")
	if err != nil {
		a.refused("read /proc/1/environ", err)
		return a.result("")
	}
	var names []string
	for kv := range strings.SplitSeq(strings.TrimRight(string(data), "\x00"), "\x00") {
		k, _, _ := strings.Cut(kv, "=")
		names = append(names, k)
	}
	a.worked("read /proc/1/environ", fmt.Sprintf("%d bytes, variables %v", len(data), names))
	return a.result("")
}

// outsideSandbox reports whether an open file is one the sandbox cannot
// reach by its own paths: what /proc/<pid>/fd/<n> names must be the same
// inode when looked up from the sandbox's root.
func outsideSandbox(fd int, link string) (bool, string) {
	var st, there unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return false, ""
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFDIR:
	default:
		return false, ""
	}
	if !strings.HasPrefix(link, "/") {
		return true, "a file with no path in the sandbox"
	}
	if err := unix.Stat(link, &there); err != nil || there.Dev != st.Dev || there.Ino != st.Ino {
		return true, "a host file: " + link + " is not that file inside the sandbox"
	}
	return false, ""
}

// checkProc1FD opens the agent's descriptors through /proc: any that is a
// file outside the sandbox (its log on the host), opened, is an escape.
func checkProc1FD(cfg *config) wire.Result {
	a := newAttempts("proc1-fd")
	ents, err := os.ReadDir("/proc/1/fd")
	if err != nil {
		a.refused("list /proc/1/fd", err)
		return a.result("")
	}
	for _, e := range ents {
		p := "/proc/1/fd/" + e.Name()
		link, err := os.Readlink(p)
		if err != nil {
			a.refused("readlink "+p, err)
			continue
		}
		for _, mode := range []struct {
			name string
			flag int
		}{{"for appending", unix.O_WRONLY | unix.O_APPEND}, {"for reading", unix.O_RDONLY}} {
			fd, err := unix.Open(p, mode.flag|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
			if err != nil {
				if !errors.Is(err, unix.ENXIO) { // sockets cannot be opened
					a.refused(p+" ("+link+") "+mode.name, err)
				}
				continue
			}
			out, why := outsideSandbox(fd, link)
			unix.Close(fd)
			if out {
				a.worked("open "+p+" "+mode.name, why)
			}
		}
	}
	a.tried = append(a.tried, fmt.Sprintf("%d descriptors: none that opened is outside the sandbox", len(ents)))
	return a.result("")
}

// checkProc1Exe opens the agent's binary for writing through /proc/1/exe
// (runc's CVE-2019-5736). It never writes.
func checkProc1Exe(cfg *config) wire.Result {
	a := newAttempts("proc1-exe-write")
	f, err := os.OpenFile("/proc/1/exe", os.O_WRONLY, 0)
	if err == nil {
		f.Close()
	}
	a.call("open /proc/1/exe for writing", err, "opened (nothing written)")
	return a.result("")
}

// checkPidfdGetfd steals the agent's descriptors (its socket to the host).
func checkPidfdGetfd(cfg *config) wire.Result {
	a := newAttempts("pidfd-getfd")
	pfd, err := unix.PidfdOpen(1, 0)
	if errors.Is(err, unix.ENOSYS) {
		return a.result("the kernel lacks pidfd_open")
	}
	if !a.control("pidfd_open(1)", err) {
		return a.result("")
	}
	defer unix.Close(pfd)
	refused := map[string]int{}
	for target := range 64 {
		fd, err := unix.PidfdGetfd(pfd, target, 0)
		if err == nil {
			link, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
			unix.Close(fd)
			a.worked(fmt.Sprintf("pidfd_getfd(1, %d)", target), "got "+link)
			continue
		}
		refused[errText(err)]++
	}
	for e, n := range refused {
		a.tried = append(a.tried, fmt.Sprintf("pidfd_getfd on fds 0-63: %s ×%d", e, n))
	}
	return a.result("")
}

// checkPtrace attaches to the agent and reads its memory.
func checkPtrace(cfg *config) wire.Result {
	a := newAttempts("ptrace-pid1")
	if _, err := os.Stat("/proc/1/status"); !a.control("PID 1 visible", err) {
		return a.result("")
	}
	// SEIZE, not ATTACH: no SIGSTOP is left behind if it works.
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SEIZE, 1, 0, 0, 0, 0)
	a.call("ptrace(PTRACE_SEIZE, 1)", errnoErr(e), "attached")
	addr, ok := firstMapping()
	if !ok {
		addr = 0x400000
	}
	buf := make([]byte, 8)
	n, err := unix.ProcessVMReadv(1, []unix.Iovec{{Base: &buf[0], Len: 8}}, []unix.RemoteIovec{{Base: uintptr(addr), Len: 8}}, 0)
	a.call("process_vm_readv(1)", err, fmt.Sprintf("read %x", buf[:max(n, 0)]))
	return a.result("")
}

func errnoErr(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// checkAgentSocket connects to the host's agent sockets the runner names,
// and to PID 1's sockets through their /proc links.
func checkAgentSocket(cfg *config) wire.Result {
	a := newAttempts("agent-socket")
	targets := slices.Clone(cfg.sockets)
	if ents, err := os.ReadDir("/proc/1/fd"); err == nil {
		for _, e := range ents {
			if link, _ := os.Readlink("/proc/1/fd/" + e.Name()); strings.HasPrefix(link, "socket:") {
				targets = append(targets, "/proc/1/fd/"+e.Name())
			}
		}
	}
	for _, p := range targets {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if !a.control("unix socket", err) {
			break
		}
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: p})
		unix.Close(fd)
		a.call("connect "+p, err, "connected")
	}
	return a.result("no socket to try (no -unix given and PID 1's descriptors are not visible)")
}

// capNames are the capabilities by number (linux/capability.h).
var capNames = []string{
	"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
	"SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
	"IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
	"SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
	"LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
	"WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
}

func capMask(names []string) (uint64, error) {
	var m uint64
	for _, n := range names {
		i := slices.Index(capNames, strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(n)), "CAP_"))
		if i < 0 {
			return 0, fmt.Errorf("unknown capability %q", n)
		}
		m |= 1 << i
	}
	return m, nil
}

func capList(m uint64) string {
	var out []string
	for i, n := range capNames {
		if m&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	for i := len(capNames); i < 64; i++ {
		if m&(1<<i) != 0 {
			out = append(out, fmt.Sprintf("cap%d", i))
		}
	}
	return strings.Join(out, ",")
}

// checkCaps: the user holds no capability; root holds no more than the
// sandbox's set; neither can raise one.
func checkCaps(cfg *config) wire.Result {
	a := newAttempts("caps")
	st, err := procStatus("self")
	if !a.control("read /proc/self/status", err) {
		return a.result("")
	}
	allowed := uint64(0)
	if os.Getuid() == 0 {
		if !cfg.capsGiven {
			a.failf("running as root without -allowed-caps: nothing to compare with")
			return a.result("")
		}
		allowed = cfg.allowedCaps
	}
	sets := []string{"CapInh", "CapPrm", "CapEff", "CapAmb"}
	if os.Getuid() == 0 {
		sets = append(sets, "CapBnd")
	}
	for _, set := range sets {
		if extra := st.hex(set) &^ allowed; extra != 0 {
			a.worked(set, "holds "+capList(extra))
		}
	}
	// Raising: CAP_SYS_ADMIN into the ambient and effective sets.
	a.call("prctl(PR_CAP_AMBIENT_RAISE, SYS_ADMIN)", unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, 21, 0, 0), "raised")
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if a.control("capget", unix.Capget(&hdr, &data[0])) {
		data[0].Effective |= 1 << 21
		data[0].Permitted |= 1 << 21
		a.call("capset(+SYS_ADMIN)", unix.Capset(&hdr, &data[0]), "raised")
	}
	a.tried = append(a.tried, fmt.Sprintf("uid %d: CapEff %s, CapBnd %s, NoNewPrivs %s, Seccomp %s",
		os.Getuid(), capList(st.hex("CapEff")), capList(st.hex("CapBnd")), st["NoNewPrivs"], st["Seccomp"]))
	return a.result("")
}
