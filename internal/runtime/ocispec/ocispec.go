// Package ocispec builds the OCI runtime spec of a sandbox, shared by the
// drivers that run one (runc through libcontainer, gVisor through runsc), so
// both isolate the same bundle: mounts, limits, capabilities, namespaces.
package ocispec

import (
	"path/filepath"
	"slices"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Names of the host-owned files a sandbox with a network gets bound over
// its /etc's, in the sandbox's host dir.
const (
	ResolvConfName = "resolv.conf"
	HostsName      = "hosts"
)

// CPUPeriod is the CFS period; the quota is VCPUs times it.
const CPUPeriod = 100_000 // µs

// Defaults for zero resources, so a bare Spec still gets limits.
var DefaultResources = sandbox.Resources{VCPUs: 1, MemoryMB: 512, PIDs: 1024}

// AgentPATH is the agent's whole environment.
const AgentPATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// LogTmpfsBytes sizes the tmpfs holding the command logs (agent.StateDir):
// an eighth of the sandbox's memory, which its pages are charged to,
// between 16 and 256 MiB. The agent drops the oldest output past it.
func LogTmpfsBytes(res sandbox.Resources) int64 {
	return min(max(res.MemoryMB<<20/8, 16<<20), 256<<20)
}

// AgentLogArgs tells the agent the size of its log tmpfs.
func AgentLogArgs(res sandbox.Resources) []string {
	return []string{"--log-total-bytes=" + strconv.FormatInt(LogTmpfsBytes(res), 10)}
}

// WithDefaults fills zero resources with defaults.
func WithDefaults(r sandbox.Resources) sandbox.Resources {
	if r.VCPUs <= 0 {
		r.VCPUs = DefaultResources.VCPUs
	}
	if r.MemoryMB <= 0 {
		r.MemoryMB = DefaultResources.MemoryMB
	}
	if r.PIDs <= 0 {
		r.PIDs = DefaultResources.PIDs
	}
	return r
}

// Sandbox is the one place a sandbox becomes an OCI runtime spec: the runc
// driver derives its libcontainer config from it with runc's converter,
// and the gVisor driver hands it to runsc as a bundle's config.json.
//
// nsPath, when set, is a network namespace prepared by the node that the
// sandbox joins instead of a new loopback-only one; etcDir then holds
// host-owned resolv.conf and hosts files bound read-only over /etc's.
func Sandbox(id, hostname, rootfs, agentPath string, img *runtime.Rootfs, res sandbox.Resources, memsw, lowerOOM bool, nsPath, etcDir string) *specs.Spec {
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
			"size=" + strconv.FormatInt(LogTmpfsBytes(res), 10), "nr_inodes=" + strconv.Itoa(2*agent.DefaultMaxLogFiles)}},
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
		for _, name := range []string{ResolvConfName, HostsName} {
			mounts = append(mounts, specs.Mount{Destination: "/etc/" + name, Type: "bind", Source: filepath.Join(etcDir, name),
				Options: []string{"bind", "ro", "nosuid", "nodev", "noexec", "private"}})
		}
	}

	swap := (*int64)(nil)
	if memsw {
		swap = &memBytes // memory+swap == memory: no swap
	}
	quota := int64(res.VCPUs * CPUPeriod)
	period := uint64(CPUPeriod)

	return &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: rootfs},
		Process: &specs.Process{
			User:            specs.User{UID: 0, GID: 0},
			Args:            []string{agent.BinaryPath},
			Env:             []string{AgentPATH},
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

// CheckID refuses an id that cannot name a sandbox: every driver checks it
// before it builds any path from it.
func CheckID(id string) error {
	if !sandbox.ValidID(id) {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_id", "invalid sandbox id %q", id)
	}
	return nil
}

// Rootfs is the root filesystem a driver builds spec's sandbox from, host
// being the driver's own host image: the image's layers; a snapshot of a
// host-image sandbox (OnHost), its layers over host's; host itself for the
// host image. The node resolves every other image to a Rootfs.
func Rootfs(spec runtime.Spec, host *runtime.Rootfs) (*runtime.Rootfs, error) {
	switch {
	case spec.Rootfs != nil:
		if len(spec.Rootfs.Lowers) == 0 {
			return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_image", "image %q has no layers", spec.Image)
		}
		if spec.Rootfs.OnHost {
			return &runtime.Rootfs{
				Lowers:        append(slices.Clone(spec.Rootfs.Lowers), host.Lower),
				ReadOnlyBinds: host.ReadOnlyBinds,
			}, nil
		}
		return spec.Rootfs, nil
	case spec.Image != "" && spec.Image != sandbox.HostImage:
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "unknown_image", "image %q: no root filesystem given", spec.Image)
	}
	return host, nil
}
