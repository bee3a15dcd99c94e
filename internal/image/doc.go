// Package image builds and stores the root filesystems that sandboxes start
// from. Every image is one or more read-only lower directories (plus, for the
// host image, read-only bind mounts of host directories) that a driver mounts
// beneath a per-sandbox overlayfs upper layer. Lower directories are
// content-addressed, so rebuilding or re-pulling an image never changes one a
// running sandbox uses.
//
// Two kinds of image exist:
//
//   - The "host" image (Host): the host's /usr (and any non-merged /bin,
//     /lib...) read-only, with a synthesized /etc that carries none of the
//     host's secrets.
//   - OCI and Docker images kept by a Store under <data>/images/: pulled from
//     a registry or imported from a docker-archive tar or an OCI layout. Each
//     layer is unpacked once into layers/<diff ID hex>/ with whiteouts and
//     opaque directories converted to overlayfs's own form, so the layer
//     directories stack directly as overlay lowerdirs. Layers are hostile
//     input: see unpack_linux.go for what is rejected and what is neutralised.
//
// The Store also keeps snapshots (snapshot.go): a sandbox's writable layer,
// copied by its driver into a layer of the store, over the sandbox's own
// layers.
package image

// HostImage is the name of the image built from the host's own /usr.
const HostImage = "host"

// Bind is a read-only bind mount of a host path into the sandbox.
type Bind struct {
	Source string // absolute host path
	Target string // absolute path inside the sandbox
}

// Rootfs is what a driver needs to assemble a sandbox's root filesystem.
//
// A driver uses Lowers when it is set (a Store image) and Lower otherwise
// (the host image); exactly one of the two is set.
type Rootfs struct {
	// Lower is the read-only overlay lower directory of the host image.
	Lower string
	// Lowers are the layer directories of a Store image in overlayfs
	// lowerdir order: topmost layer first, base layer last.
	Lowers []string
	// OnHost means Lowers stack on the driver's own host image (a snapshot
	// of a host-image sandbox): the driver appends it below them.
	OnHost bool
	// ReadOnlyBinds are mounted read-only (recursively) over the overlay.
	ReadOnlyBinds []Bind
}
