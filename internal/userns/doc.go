// Package userns gives sandboxes host ids of their own: it makes user
// namespaces with a sandbox's mapping before the sandbox exists, idmapped
// clones of mounts (mount_setattr MOUNT_ATTR_IDMAP) through them, and runs
// filesystem work as a sandbox's root; Probe checks that this kernel and a
// given filesystem support all of it, for the runc driver's start and for
// `paddock doctor`.
//
// A sandbox's range is Size consecutive host ids from a base: ids 0..Size-1
// inside are host ids base..base+Size-1 outside, so root in a sandbox is an
// unprivileged host uid, and per-uid kernel limits (inotify instances and
// watches, pipe buffers, message queues) are counted per sandbox.
package userns

// Size is how many ids each range holds: 0..65535 inside, the ids every
// distribution's tools and images assume.
const Size = 65536
