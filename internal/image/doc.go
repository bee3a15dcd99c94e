// Package image builds and stores the root filesystems that sandboxes start
// from. Every image is a read-only lower directory (plus, for the host image,
// read-only bind mounts of host directories) that a driver mounts beneath a
// per-sandbox overlayfs upper layer. Lower directories are content-addressed,
// so rebuilding an image never changes one a running sandbox uses.
//
// Only the "host" image exists for now: the host's /usr (and any non-merged
// /bin, /lib...) read-only, with a synthesized /etc that carries none of the
// host's secrets.
package image

// HostImage is the name of the image built from the host's own /usr.
const HostImage = "host"

// Bind is a read-only bind mount of a host path into the sandbox.
type Bind struct {
	Source string // absolute host path
	Target string // absolute path inside the sandbox
}

// Rootfs is what a driver needs to assemble a sandbox's root filesystem.
type Rootfs struct {
	// Lower is the read-only overlay lower directory.
	Lower string
	// ReadOnlyBinds are mounted read-only (recursively) over the overlay.
	ReadOnlyBinds []Bind
}
