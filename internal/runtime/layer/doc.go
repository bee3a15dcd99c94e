// Package layer is a sandbox's writable layer on the host, shared by the
// drivers that assemble a root filesystem as an overlayfs mount on the host
// (runc, gVisor): its upper and work dirs, on a capped ext4 disk of its own
// when the sandbox has a disk cap (Disks), and the copy of its upper dir a
// snapshot makes (Copy). Drivers lay their host dirs out the same way, so
// each keeps only what differs: how a running sandbox is held still while
// its layer is copied. FromChanges writes that same layer form from the
// changes stream of a sandbox's agent, for a driver whose sandboxes' upper
// dirs are out of its reach (Kubernetes).
package layer
