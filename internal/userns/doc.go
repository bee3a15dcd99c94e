// Package userns gives sandboxes host ids of their own: it makes a
// sandbox's user namespace before the sandbox exists (the sandbox then
// joins it), idmapped clones of mounts (mount_setattr MOUNT_ATTR_IDMAP)
// through it, overlays over such clones, and runs filesystem work as a
// sandbox's root; Probe checks that this kernel and a given filesystem
// support all of it, for the runc driver's start and `paddock doctor`.
//
// Why idmapped mounts rather than chowning files into each sandbox's range
// when preparing it: image layers and snapshots are shared read-only by
// every sandbox of the image, so they cannot carry one sandbox's ids, and
// a chown of a whole tree per sandbox would cost seconds. Through an
// idmapped mount every file keeps the ids the sandbox sees on disk, and
// one layer or volume serves sandboxes of any range unchanged.
//
// The sandbox joins the namespace made here instead of one its runtime
// would make, because of who owns it: the kernel charges per-user limits
// (inotify instances and watches, message queues, user namespaces) to the
// user inside and again to the namespace's owner outside, so namespaces
// made by root would all draw on root's single count. New makes each one
// owned by its range's first host id.
//
// A sandbox's range is Size consecutive host ids from a base: ids 0..Size-1
// inside are host ids base..base+Size-1 outside, so root in a sandbox is an
// unprivileged host uid, and per-uid kernel limits (inotify instances and
// watches, pipe buffers, message queues) are counted per sandbox.
package userns

// Size is how many ids each range holds: 0..65535 inside, the ids every
// distribution's tools and images assume.
const Size = 65536

// Defaults of the ranges sandboxes get: DefaultRanges ranges from host id
// DefaultBase, above the ones systemd gives to containers
// (0x80000-0x6FFFFFFF, see systemd's UIDS-GIDS.md) and below 2^31, which
// some tools still read as a signed number.
const (
	DefaultBase   = 0x70000000 // 1879048192
	DefaultRanges = 4000
)
