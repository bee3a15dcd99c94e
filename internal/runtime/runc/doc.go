// Package runc is paddock's default sandbox driver: it runs each sandbox as a
// container through runc's libcontainer, in-process (no runc binary), with
// pid, mount, ipc, uts, net and cgroup namespaces, cgroup limits, a read-only
// base image under a per-sandbox overlayfs upper layer, exactly the agent's
// capability set and no_new_privs. The container's init is paddock-agent,
// which installs its own seccomp filter.
//
// Each sandbox also gets a user namespace with a range of host ids of its
// own (Config.IDBase, one range of 65536 ids per sandbox): root inside is
// an unprivileged host uid, and per-uid kernel limits are the sandbox's
// own. Files stay container-relative on disk: the overlay's layers (image
// layers, snapshots, the upper dir) and every bind mount (volumes, the
// host image's /usr, the agent) are idmapped mounts through the sandbox's
// mapping, so one layer or volume serves sandboxes of any range unchanged
// (roots_linux.go, overlay_linux.go, internal/userns). Config.NoUserNS
// turns this off, which is weaker: root in a sandbox is then host root.
//
// A sandbox with a disk cap keeps its writable layer in an ext4 image of
// that size (package layer, shared with the gVisor driver); without one the
// layer is a directory on the data dir's filesystem.
//
// The driver is a runtime.Snapshotter: it copies a sandbox's upper dir, with
// the sandbox frozen, into a new layer without following anything in it
// (snapshot_linux.go; the copy is layer.Copy).
//
// Programs that link this package must call Init first thing in main (and
// test binaries in TestMain): libcontainer re-executes the calling binary
// with the argument "init" to set up each container. With Config.InitPath
// the driver starts containers from paddock-init instead (package spawn),
// and libcontainer re-executes that small binary: about 14 ms of CPU less
// per sandbox start than re-executing paddock.
package runc

import (
	"log/slog"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/userns"
)

// Config configures the driver.
type Config struct {
	// DataDir holds images, per-sandbox dirs (DataDir/runc/<id>) and the
	// libcontainer state (DataDir/runc/.state). Keep it short: unix socket
	// paths are limited, though the driver copes with long ones.
	DataDir string
	// AgentPath is the static paddock-agent binary (see agentbin.Path).
	AgentPath string
	// InitPath is the paddock-init binary (see agentbin.InitPath) that
	// starts containers; empty: this process starts them, re-executing
	// its own binary as each container's init (slower, see Init).
	InitPath string
	// Logger receives driver logs; nil means slog.Default().
	Logger *slog.Logger

	// RootfsDir is where sandboxes' root filesystems are mounted, as
	// RootfsDir/<id>/rootfs; default DefaultRootfsDir. It and its parents
	// must be searchable by other users (the driver makes it 0711): a
	// sandbox's init reaches its root as the sandbox's own root user,
	// which the data dir (0700) keeps out. Processes with different data
	// dirs on one host share it, and with it the record of id ranges in
	// use, so they never hand out one range twice.
	RootfsDir string
	// NoUserNS runs sandboxes in the host's user namespace: root in a
	// sandbox is root on the host, and sandboxes share per-uid limits.
	// Weaker; only for kernels without what user namespaces need (New
	// refuses to start without it there; `paddock doctor` says why).
	NoUserNS bool
	// IDBase is the first host uid and gid of sandbox ranges: range n is
	// IDBase+n*65536 .. IDBase+n*65536+65535. Default DefaultIDBase.
	IDBase uint32
	// IDRanges is how many ranges there are: the most sandboxes that can
	// exist at once on the host. Default DefaultIDRanges.
	IDRanges int
	// DiskReserve is the free space, in bytes, the data dir's filesystem
	// keeps beyond a new sandbox's disk cap: a create that would leave
	// less is refused (ErrUnavailable "host_disk_full"). 0: the larger of
	// 1 GiB and 5% of the filesystem; negative: no reserve.
	DiskReserve int64
	// PoolDiskMB, when set, has the driver keep a few disks of this size
	// made ahead of time (usually the server's default cap), so a create
	// with it takes a ready disk instead of waiting for one. 0: none.
	PoolDiskMB int64
}

// Defaults of Config (the id ranges: see userns.DefaultBase).
const (
	DefaultRootfsDir = "/run/paddock/rootfs"
	DefaultIDBase    = userns.DefaultBase
	DefaultIDRanges  = userns.DefaultRanges
)

func (c *Config) setDefaults() {
	if c.RootfsDir == "" {
		c.RootfsDir = DefaultRootfsDir
	}
	if c.IDBase == 0 {
		c.IDBase = DefaultIDBase
	}
	if c.IDRanges == 0 {
		c.IDRanges = DefaultIDRanges
	}
}

// Validate reports a missing or malformed setting.
func (c Config) Validate() error {
	switch {
	case c.DataDir == "":
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "runc driver: DataDir is required")
	case c.AgentPath == "":
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "runc driver: AgentPath is required")
	case c.PoolDiskMB < 0:
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "runc driver: PoolDiskMB must not be negative")
	case c.NoUserNS:
		return nil
	case c.IDBase != 0 && c.IDBase < 65536:
		// Range 0 would hold host root and the system's own users.
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "runc driver: IDBase %d is below 65536", c.IDBase)
	case c.IDRanges < 0 || uint64(c.IDBase)+uint64(c.IDRanges)*65536 > 1<<32-1:
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "runc driver: %d id ranges from %d pass the last uid", c.IDRanges, c.IDBase)
	}
	return nil
}

// errUnsupported is returned by every entry point off Linux.
var errUnsupported = sandbox.Errorf(sandbox.ErrUnsupported, "unsupported_os", "the runc driver is unsupported on this OS: it needs Linux")
