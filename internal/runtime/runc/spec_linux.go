package runc

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/runtime/ocispec"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// The sandbox's OCI spec and its defaults live in package ocispec, shared
// with the gVisor driver.
const agentPATH = ocispec.AgentPATH

func withDefaults(r sandbox.Resources) sandbox.Resources { return ocispec.WithDefaults(r) }

func agentLogArgs(res sandbox.Resources) []string { return ocispec.AgentLogArgs(res) }

func ociSpec(id, hostname, rootfs, agentPath string, img *runtime.Rootfs, res sandbox.Resources, memsw, lowerOOM bool, nsPath, etcDir string) *specs.Spec {
	return ocispec.Sandbox(id, hostname, rootfs, agentPath, img, res, memsw, lowerOOM, nsPath, etcDir)
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
