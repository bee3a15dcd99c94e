package doctor

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/diskimg"
	"github.com/paddock-dev/paddock/internal/runtime/gvisor"
)

func checks(opts Options) []Check {
	return []Check{
		{"root", checkRoot},
		{"kernel", checkKernel},
		{"namespaces", checkNamespaces},
		{"cgroups", checkCgroups},
		{"overlayfs", checkOverlay},
		{"user namespaces", func(ctx context.Context) Result { return checkUserNS(ctx, opts) }},
		{"seccomp", checkSeccomp},
		{"openat2", checkOpenat2},
		{"agent toolchain", checkToolchain},
		{"disk caps, volumes", checkDiskImages},
		{"runc (benchmark)", checkRuncCLI},
		{"runsc (gvisor)", checkRunsc},
	}
}

func checkRoot(context.Context) Result {
	if os.Geteuid() != 0 {
		return Result{Level: Fail, Detail: fmt.Sprintf("running as uid %d", os.Geteuid()),
			Fix: "run paddock as root (sudo); it creates namespaces, cgroups and mounts"}
	}
	return Result{Detail: "running as root"}
}

func checkKernel(context.Context) Result {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return Result{Level: Fail, Detail: err.Error(), Fix: "paddock needs Linux"}
	}
	rel := unix.ByteSliceToString(u.Release[:])
	var major, minor int
	fmt.Sscanf(rel, "%d.%d", &major, &minor)
	if major < 5 || (major == 5 && minor < 11) {
		return Result{Level: Fail, Detail: "kernel " + rel,
			Fix: "use kernel 5.11 or newer (openat2, overlayfs in namespaces, cgroup v2 features)"}
	}
	return Result{Detail: "kernel " + rel}
}

func checkNamespaces(context.Context) Result {
	var missing []string
	for _, ns := range []string{"pid", "mnt", "ipc", "uts", "net", "cgroup"} {
		if _, err := os.Stat("/proc/self/ns/" + ns); err != nil {
			missing = append(missing, ns)
		}
	}
	if len(missing) > 0 {
		return Result{Level: Fail, Detail: "missing namespaces: " + strings.Join(missing, ", "),
			Fix: "enable CONFIG_PID_NS, CONFIG_NET_NS, CONFIG_IPC_NS, CONFIG_UTS_NS, CONFIG_CGROUPS in the kernel"}
	}
	return Result{Detail: "pid, mnt, ipc, uts, net, cgroup"}
}

// CgroupMode tells how cgroups are mounted: "v2", "v1", "hybrid" or "".
func CgroupMode() string {
	var st unix.Statfs_t
	if unix.Statfs("/sys/fs/cgroup", &st) != nil {
		return ""
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		return "v2"
	}
	if unix.Statfs("/sys/fs/cgroup/unified", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return "hybrid"
	}
	return "v1"
}

func checkCgroups(context.Context) Result {
	mode := CgroupMode()
	need := []string{"memory", "cpu", "pids"}
	var missing []string
	switch mode {
	case "":
		return Result{Level: Fail, Detail: "no cgroup filesystem at /sys/fs/cgroup",
			Fix: "mount cgroups (systemd does this; or mount -t cgroup2 none /sys/fs/cgroup)"}
	case "v2":
		data, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
		if err != nil {
			return Result{Level: Fail, Detail: err.Error(), Fix: "mount cgroup2 at /sys/fs/cgroup"}
		}
		have := strings.Fields(string(data))
		for _, c := range need {
			if !slices.Contains(have, c) {
				missing = append(missing, c)
			}
		}
	default:
		for _, c := range need {
			if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", c)); err != nil {
				missing = append(missing, c)
			}
		}
	}
	if len(missing) > 0 {
		return Result{Level: Fail, Detail: fmt.Sprintf("cgroup %s without controllers %s", mode, strings.Join(missing, ", ")),
			Fix: "enable the memory, cpu and pids controllers (kernel cmdline cgroup_enable=memory; on v2 add them to cgroup.subtree_control)"}
	}
	return Result{Detail: "cgroup " + mode + " with memory, cpu, pids"}
}

func checkOverlay(context.Context) Result {
	if !filesystemListed("overlay") {
		return Result{Level: Fail, Detail: "overlay not in /proc/filesystems", Fix: "modprobe overlay (CONFIG_OVERLAY_FS)"}
	}
	if os.Geteuid() != 0 {
		return Result{Level: Warn, Detail: "listed; a test mount needs root"}
	}
	dir, err := os.MkdirTemp("", "paddock-doctor-")
	if err != nil {
		return Result{Level: Warn, Detail: err.Error()}
	}
	defer os.RemoveAll(dir)
	for _, d := range []string{"lower", "upper", "work", "merged"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			return Result{Level: Warn, Detail: err.Error()}
		}
	}
	opts := fmt.Sprintf("lowerdir=%s/lower,upperdir=%s/upper,workdir=%s/work", dir, dir, dir)
	if err := unix.Mount("overlay", filepath.Join(dir, "merged"), "overlay", 0, opts); err != nil {
		return Result{Level: Fail, Detail: "test mount failed: " + err.Error(),
			Fix: "the data dir must be on a filesystem overlayfs accepts as upper (ext4, xfs; not overlay or NFS)"}
	}
	_ = unix.Unmount(filepath.Join(dir, "merged"), unix.MNT_DETACH)
	return Result{Detail: "test mount works"}
}

func checkSeccomp(context.Context) Result {
	if _, err := unix.PrctlRetInt(unix.PR_GET_SECCOMP, 0, 0, 0, 0); err != nil {
		return Result{Level: Fail, Detail: "prctl(PR_GET_SECCOMP): " + err.Error(),
			Fix: "enable CONFIG_SECCOMP and CONFIG_SECCOMP_FILTER in the kernel"}
	}
	if !procStatusHas("Seccomp_filters") {
		return Result{Level: Warn, Detail: "seccomp present, filter count not reported"}
	}
	return Result{Detail: "seccomp filters supported (installed by the agent, pure Go)"}
}

func checkOpenat2(context.Context) Result {
	how := unix.OpenHow{Flags: unix.O_RDONLY | unix.O_CLOEXEC | unix.O_DIRECTORY, Resolve: unix.RESOLVE_BENEATH}
	fd, err := unix.Openat2(unix.AT_FDCWD, "/", &how)
	if err != nil && err != unix.EXDEV {
		return Result{Level: Warn, Detail: "openat2: " + err.Error(), Fix: "use kernel 5.6 or newer for traversal-safe file access"}
	}
	if err == nil {
		unix.Close(fd)
	}
	return Result{Detail: "available"}
}

func checkToolchain(context.Context) Result {
	if p := os.Getenv("PADDOCK_AGENT"); p != "" {
		return Result{Detail: "PADDOCK_AGENT=" + p}
	}
	if exe, err := os.Executable(); err == nil {
		if _, err := os.Stat(filepath.Join(filepath.Dir(exe), "paddock-agent")); err == nil {
			return Result{Detail: "paddock-agent next to the paddock binary"}
		}
	}
	if p, err := exec.LookPath("go"); err == nil {
		return Result{Detail: "the agent is built from source with " + p}
	}
	return Result{Level: Fail, Detail: "no paddock-agent binary and no Go toolchain to build one",
		Fix: "put paddock-agent beside paddock (CGO_ENABLED=0 go build ./cmd/paddock-agent) or set PADDOCK_AGENT"}
}

// checkDiskImages: a sandbox's capped writable layer and a named volume
// are each an ext4 image loop-mounted on the host, so their size cap is
// the filesystem's. Without mkfs.ext4 or loop devices paddock refuses
// sandboxes with a disk cap (the default) unless the operator runs it
// with --sandbox-disk 0, and the volumes API answers 501.
func checkDiskImages(context.Context) Result {
	why := diskimg.Available()
	if why == "" {
		return Result{Detail: "mkfs.ext4 and loop devices available: sandbox disk caps and volumes work"}
	}
	fix := "apt-get install e2fsprogs"
	if _, err := exec.LookPath(diskimg.Mkfs); err == nil {
		fix = "load the loop module (modprobe loop) or give the container /dev/loop-control"
	}
	return Result{Level: Warn, Detail: why + ": sandboxes with a disk cap are refused and volumes are unavailable",
		Fix: fix + "; or run paddock serve --sandbox-disk 0 to accept writable layers uncapped on the host's filesystem (unsafe with many tenants)"}
}

func checkRuncCLI(context.Context) Result {
	if p, err := exec.LookPath("runc"); err == nil {
		return Result{Detail: p + " (baseline for benchmarks only)"}
	}
	return Result{Level: Warn, Detail: "runc CLI not installed; only the benchmark baseline needs it", Fix: "apt-get install runc"}
}

// checkRunsc: the gVisor driver (in progress) runs sandboxes with runsc,
// which paddock does not ship; without it only that driver is missing.
func checkRunsc(ctx context.Context) Result {
	p, err := gvisor.Find()
	if err != nil {
		return Result{Level: Warn, Detail: "runsc not found: the gvisor driver is unavailable",
			Fix: gvisor.HowToGet}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, p, "--version").Output()
	if err != nil {
		return Result{Level: Warn, Detail: p + " does not run: " + err.Error(), Fix: gvisor.HowToGet}
	}
	version, _, _ := strings.Cut(string(out), "\n")
	// A go-installed runsc reports VERSION_MISSING: the cache's stamp
	// names the gvisor.dev/gvisor version it was built from.
	if stamp, err := os.ReadFile(filepath.Join(filepath.Dir(p), "stamp")); err == nil {
		version, _, _ = strings.Cut(string(stamp), " ")
	}
	return Result{Detail: p + " (" + strings.TrimSpace(version) + ")"}
}

func filesystemListed(name string) bool {
	f, err := os.Open("/proc/filesystems")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 0 && fields[len(fields)-1] == name {
			return true
		}
	}
	return false
}

func procStatusHas(key string) bool {
	data, err := os.ReadFile("/proc/self/status")
	return err == nil && strings.Contains(string(data), key+":")
}
