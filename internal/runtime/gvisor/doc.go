// Package gvisor is the sandbox driver that runs each sandbox under gVisor's
// runsc: a user-space kernel (the sentry) sits between the sandbox's code
// and the host's, so a kernel bug reachable from a sandbox is a bug in the
// sentry, not a host escape. It takes the same OCI spec as the runc driver
// (package ocispec), the same root filesystem (the image's layers under a
// per-sandbox overlayfs upper dir, mounted on the host) and the same agent
// as PID 1, reached over a unix socket.
//
// runsc runs with --platform=systrap (ptrace as a fallback: Config.Platform),
// --overlay2=none (writes land in the sandbox's upper dir, so snapshots can
// read them later), --in-sandbox-cgroup=v2 and --oci-seccomp; the agent installs paddock's own
// seccomp filter inside, which the sentry enforces. The agent listens on a
// socket it creates in a host directory bound into the sandbox, which
// --host-uds=create allows; the host connects to that file.
//
// A sandbox without a network gets --network=none (loopback only, inside
// the sentry); one with a network prepared by the node runs with
// --network=sandbox in that namespace, where runsc copies its interfaces
// and routes into the sentry's network stack.
//
// Writable layer: the sandbox's root filesystem is an overlayfs mount on
// the host (the image's layers under a per-sandbox upper dir) that the
// gofer serves, and runsc's own overlay is off (--overlay2=none). runsc's
// overlay would keep the sandbox's writes in a tmpfs (or a file) inside
// the sentry, in its own format, readable from the host only through the
// sentry (runsc fscheckpoint); the upper dir is an overlayfs layer
// already, the same as the runc driver's, so package layer serves both
// drivers: a snapshot is layer.Copy of the upper dir (the sandbox paused
// with runsc pause meanwhile; the sentry writes file data through to the
// host, so nothing needs syncing first), a disk cap puts the upper dir on
// an ext4 disk of the cap's size (layer.Disks), and a copy-on-write
// volume is an overlay the driver mounts on the host and binds in. A disk
// cap is enforced by the host filesystem under the gofer, so a write past
// it fails with ENOSPC inside as under runc.
//
// Memory checkpoint and restore (runsc checkpoint / runsc restore, a pause
// that keeps processes) work on this runsc for a sandbox without host
// sockets, but not for paddock's: the sentry refuses to save a unix socket
// bound on the host ("Cannot save endpoint with bound host socket"), and
// the agent's listener is one (--host-uds=create). It needs the agent to
// close its host listener and connections before the save and listen
// again after the restore (runsc checkpoint --save-restore-exec-argv runs
// a program in the sandbox at both moments).
//
// Limits. runsc applies the spec's resources to the sandbox's host cgroup,
// which also holds the sentry, the gofer and systrap's stub processes;
// reaching a limit there ends the whole sandbox. So the host cgroup is the
// outer bound (the pids limit plus hostPIDsExtra, the memory limit plus
// hostMemoryExtra) and each limit a command meets is kept inside:
//   - pids: the sentry's own cgroup tree is v2 (--in-sandbox-cgroup=v2),
//     mounted read-only as the spec asks; the driver sets the container
//     cgroup's pids.max with runsc write-control before any command runs,
//     and a fork past it fails with EAGAIN. Stats reads that cgroup's
//     pids.current (runsc read-control), not runsc events' count, which
//     includes zombies: unlike Linux, the sentry uncharges a task when it
//     exits, not when it is reaped, so zombies are outside the limit (they
//     cost the sentry memory, no host thread). The agent's threads count
//     against that limit too, so it starts with spare ones
//     (--spare-threads): a bomb that fills the limit cannot leave its Go
//     runtime without a thread it needs, which ends the agent;
//   - memory: the sentry enforces no memory.max, so the agent does
//     (--memory-limit): past the limit it SIGKILLs the process with the
//     largest resident set and counts an OOM kill, which the command and
//     Stats report.
//
// What differs from runc. The sentry has no fsuid (setfsuid is ENOSYS),
// so the agent's file work as the user takes the user's effective ids on
// one thread (see agent.asUser), under both drivers. The sentry does not
// implement nodev (runsc drops the option): a device node in a volume
// opens the sentry's own device of that number, never the host's
// (--character-device-policy=emulated-only), and the gofer's host-side
// bind is nodev; the conformance suite's Volume case checks that (a host
// block device does not read through a node in a volume) rather than the
// option (Harness.EmulatedDevices). Its /proc, /sys, cgroupfs and /dev
// are the sentry's: the escape battery judges them by what they grant
// (escape's sentryDrivers) and passes.
//
// runsc is built from gvisor.dev/gvisor at a pinned version by
// hack/gvisor/build-runsc.sh (see Find).
package gvisor
