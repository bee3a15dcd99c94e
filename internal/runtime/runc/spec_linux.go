package runc

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// cpuPeriod is the CFS period; the quota is VCPUs times it.
const cpuPeriod = 100_000 // µs

// Defaults for zero resources, so a bare Spec still gets limits.
var defaultResources = sandbox.Resources{VCPUs: 1, MemoryMB: 512, PIDs: 1024}

// agentPATH is the agent's whole environment.
const agentPATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// logTmpfsBytes sizes the tmpfs holding the command logs (agent.StateDir):
// an eighth of the sandbox's memory, which its pages are charged to,
// between 16 and 256 MiB. The agent drops the oldest output past it.
func logTmpfsBytes(res sandbox.Resources) int64 {
	return min(max(res.MemoryMB<<20/8, 16<<20), 256<<20)
}

// agentLogArgs tells the agent the size of its log tmpfs.
func agentLogArgs(res sandbox.Resources) []string {
	return []string{"--log-total-bytes=" + strconv.FormatInt(logTmpfsBytes(res), 10)}
}

// withDefaults fills zero resources with defaults.
func withDefaults(r sandbox.Resources) sandbox.Resources {
	if r.VCPUs <= 0 {
		r.VCPUs = defaultResources.VCPUs
	}
	if r.MemoryMB <= 0 {
		r.MemoryMB = defaultResources.MemoryMB
	}
	if r.PIDs <= 0 {
		r.PIDs = defaultResources.PIDs
	}
	return r
}

// ociSpec is the one place a sandbox becomes an OCI runtime spec; the
// libcontainer config is derived from it by runc's own converter, so a
// future runsc driver can reuse the same spec.
//
// nsPath, when set, is a network namespace prepared by the node that the
// sandbox joins instead of a new loopback-only one; etcDir then holds
// host-owned resolv.conf and hosts files bound read-only over /etc's.
func ociSpec(id, hostname, rootfs, agentPath string, img *runtime.Rootfs, res sandbox.Resources, memsw, lowerOOM bool, nsPath, etcDir string) *specs.Spec {
	memBytes := res.MemoryMB << 20
	tmpSize := min(memBytes, 1<<30)
	var oomAdj *int
	if lowerOOM {
		// The kernel's OOM killer should pick a command before the agent.
		v := -998
		oomAdj = &v
	}
	caps := append([]string(nil), sandbox.Capabilities...)

	mounts := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		// Read-only and namespaced: the agent reads its own memory counters
		// (OOM kills) but sees no other cgroup.
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
		{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777", "size=" + strconv.FormatInt(tmpSize, 10)}},
		// The command logs: in the sandbox's memory (charged to its
		// cgroup) with a cap, never on the host's disk.
		{Destination: agent.StateDir, Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "noexec", "mode=0700",
			"size=" + strconv.FormatInt(logTmpfsBytes(res), 10), "nr_inodes=" + strconv.Itoa(2*agent.DefaultMaxLogFiles)}},
	}
	for _, b := range img.ReadOnlyBinds {
		// rro makes every submount read-only too (mount_setattr), not only the top.
		mounts = append(mounts, specs.Mount{Destination: b.Target, Type: "bind", Source: b.Source,
			Options: []string{"rbind", "ro", "rro", "nosuid", "nodev", "rprivate"}})
	}
	mounts = append(mounts, specs.Mount{Destination: agent.BinaryPath, Type: "bind", Source: agentPath,
		Options: []string{"bind", "ro", "nosuid", "nodev", "private"}})

	netNS := specs.LinuxNamespace{Type: specs.NetworkNamespace}
	if nsPath != "" {
		netNS.Path = nsPath
		for _, name := range []string{resolvConfName, hostsName} {
			mounts = append(mounts, specs.Mount{Destination: "/etc/" + name, Type: "bind", Source: filepath.Join(etcDir, name),
				Options: []string{"bind", "ro", "nosuid", "nodev", "noexec", "private"}})
		}
	}

	swap := (*int64)(nil)
	if memsw {
		swap = &memBytes // memory+swap == memory: no swap
	}
	quota := int64(res.VCPUs * cpuPeriod)
	period := uint64(cpuPeriod)

	return &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: rootfs},
		Process: &specs.Process{
			User:            specs.User{UID: 0, GID: 0},
			Args:            []string{agent.BinaryPath},
			Env:             []string{agentPATH},
			Cwd:             "/",
			NoNewPrivileges: true,
			OOMScoreAdj:     oomAdj,
			Capabilities: &specs.LinuxCapabilities{
				Bounding:  caps,
				Effective: caps,
				Permitted: caps,
			},
			Rlimits: []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 65536, Soft: 65536}},
		},
		Hostname: hostname,
		Mounts:   mounts,
		Linux: &specs.Linux{
			CgroupsPath:       "/paddock/" + id,
			RootfsPropagation: "rprivate",
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
				Memory:  &specs.LinuxMemory{Limit: &memBytes, Swap: swap},
				CPU:     &specs.LinuxCPU{Quota: &quota, Period: &period},
				Pids:    &specs.LinuxPids{Limit: &res.PIDs},
			},
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, netNS, {Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.MountNamespace}, {Type: specs.CgroupNamespace},
			},
			// Docker's lists.
			MaskedPaths: []string{
				"/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
				"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
				"/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
			},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
}

// libcontainerConfig converts the spec with runc's converter.
func libcontainerConfig(spec *specs.Spec) (*configs.Config, error) {
	cfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{
		CgroupName:   "", // taken from spec.Linux.CgroupsPath
		NoNewKeyring: false,
		Spec:         spec,
	})
	if err != nil {
		return nil, fmt.Errorf("convert spec: %w", err)
	}
	// 0: sandboxes outlive a paddock restart and are re-adopted.
	cfg.ParentDeathSignal = 0
	return cfg, nil
}

// hasMemsw reports whether cgroup v1 swap accounting exists here (v2
// always converts the swap limit itself).
func hasMemsw(v2 bool) bool {
	if v2 {
		return true
	}
	_, err := os.Stat("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
	return err == nil
}

// capSysResource is CAP_SYS_RESOURCE's bit in /proc/self/status.
const capSysResource = 24

// canLowerOOMScore reports whether this process may set a negative
// oom_score_adj (CAP_SYS_RESOURCE). Some hosts (containers, microVM
// sandboxes) withhold it; the agent then inherits paddock's score instead of
// every Create failing.
func canLowerOOMScore() bool {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<capSysResource) != 0
		}
	}
	return false
}

// withUserNS makes the sandbox join the user namespace at nsPath (made
// with its range's mapping, see userns.NS), so that its root is an
// unprivileged host uid and its ids are its own. Every bind mount of host
// files (the host image's /usr, the agent, resolv.conf, volumes) becomes
// idmapped through that namespace, so on-disk ids stay the
// container-relative ones and files show their real owners inside; plain
// lists the bind sources that must stay as they are (mounts the driver
// made already mapped, and sysfs, which cannot be idmapped).
//
// sysfs, when set, is a sysfs instance the driver mounted on the host from
// inside the sandbox's network namespace, bound at /sys instead of a new
// mount: a namespace joined by path belongs to the host's user namespace,
// and the kernel lets only its owner mount sysfs for it.
func withUserNS(oci *specs.Spec, nsPath, sysfs string, plain map[string]bool) {
	oci.Linux.Namespaces = append(oci.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace, Path: nsPath})
	for i, mnt := range oci.Mounts {
		switch {
		case mnt.Type == "sysfs" && sysfs != "":
			oci.Mounts[i] = specs.Mount{Destination: mnt.Destination, Type: "bind", Source: sysfs,
				Options: []string{"bind", "ro", "nosuid", "nodev", "noexec", "private"}}
		case mnt.Type == "bind" && !plain[mnt.Source]:
			// libcontainer maps these through the namespace joined.
			oci.Mounts[i].Options = append(slices.Clone(mnt.Options), "idmap")
		}
	}
}
