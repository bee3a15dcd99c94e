// Package runtime defines the Driver interface that every isolation backend
// (runc today; gVisor, Kubernetes later) implements, and the types it takes
// and returns. Exec, files and logs are not driver methods: every driver runs
// the same paddock-agent inside the sandbox and hands back an *agent.Client,
// so one protocol serves every isolation level. runtimetest holds the
// conformance suite each driver must pass.
package runtime

import (
	"context"
	"net/netip"
	"time"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Spec is everything a driver needs to create one sandbox.
type Spec struct {
	ID    string // sandbox.ValidID
	Image string // the image's name, for errors and logs
	// Rootfs is the image's root filesystem as the node resolved it; nil
	// means the host image the driver prepares itself.
	Rootfs    *Rootfs
	Resources sandbox.Resources
	Hostname  string // default: the ID
	// Network, when set, is a namespace prepared by the caller that the
	// sandbox joins instead of getting a new loopback-only one.
	Network *NetworkSpec
	// Mounts are host directories bound into the sandbox (volumes).
	Mounts []Mount
	// Egress is the sandbox's egress policy, for a driver that enforces
	// it itself (Kubernetes, where the Pod's network is the cluster's);
	// drivers given a Network ignore it, as the node enforces it there.
	// nil: deny-all.
	Egress *sandbox.NetworkPolicy
	// User is the image config's User, as the image gives it (hostile:
	// it comes from the image). The driver hands it to the agent, which
	// resolves it inside the sandbox (agent.ResolveUser) and reports the
	// result in its ping answer; Create fails with the agent's ErrInvalid
	// (agent.Info.UserErr) when the image lacks the user. "" is the
	// default user.
	User string
}

// Rootfs is what a driver needs to assemble a sandbox's root filesystem:
// read-only lower directories under a per-sandbox writable layer. The
// caller resolved the image (or snapshot) to directories on this host; a
// driver knows no image store and no registry.
//
// A driver uses Lowers when it is set (an image's or a snapshot's layers)
// and Lower otherwise (the host image); exactly one of the two is set.
type Rootfs struct {
	// Lower is the read-only overlay lower directory of the host image.
	Lower string
	// Lowers are layer directories in overlayfs lowerdir order: topmost
	// layer first, base layer last.
	Lowers []string
	// OnHost means Lowers stack on the driver's own host image (a snapshot
	// of a host-image sandbox): the driver appends it below them.
	OnHost bool
	// ReadOnlyBinds are mounted read-only (recursively) over the overlay.
	ReadOnlyBinds []Bind
	// Ref, when set, names the same image in a registry the driver's
	// nodes pull from, for a driver whose sandboxes do not run on this
	// host (Kubernetes), which uses it instead of the directories above.
	Ref string
}

// Bind is a read-only bind mount of a host path into the sandbox.
type Bind struct {
	Source string // absolute host path
	Target string // absolute path inside the sandbox
}

// Mount binds a host directory the caller prepared into a sandbox, nosuid
// and nodev. The driver refuses a Dest that is not absolute and clean, is
// "/", or meets a path the driver mounts itself (/proc, /sys, /dev, /tmp,
// the agent's), and creates the mountpoint without following a symlink.
type Mount struct {
	Source   string // host path, trusted
	Dest     string // path inside the sandbox
	ReadOnly bool
	// Upper and Work, when set, make the mount copy-on-write: the sandbox
	// sees an overlay of Source with its changes in Upper (Work is
	// overlayfs's scratch dir, beside Upper on the same filesystem). The
	// driver mounts it, since with a user namespace the overlay's layers
	// must be mapped through the sandbox's ids; it is gone after Stop.
	Upper, Work string
	// Claim, when set instead of Source, is a PersistentVolumeClaim in the
	// sandbox's namespace, for a driver whose sandboxes are Pods: the
	// kubelet mounts the claim, and a sandbox's agent gives its root to
	// the sandbox's user while it is empty. Drivers of host sandboxes
	// refuse it.
	Claim string
}

// NetworkSpec is a sandbox's network as the node prepared it.
type NetworkSpec struct {
	// NSPath is the network namespace to join (a pinned bind mount).
	NSPath string
	// DNS is the resolver /etc/resolv.conf names inside the sandbox.
	DNS netip.Addr
}

// Info is what a driver knows of one sandbox on this host, for reconcile.
type Info struct {
	ID      string
	Running bool // the sandbox's init (the agent) is alive
	// PID is the host pid of the agent, 0 if not running. A driver whose
	// sandboxes run off this host (Kubernetes) reports 1, the agent's pid
	// inside, for a running one.
	PID     int
	Created time.Time
	// Reason says why a sandbox that is not running ended, when the
	// driver knows ("Evicted: Pod ephemeral local storage usage exceeds
	// ..."); "" otherwise.
	Reason string
}

// Stats are a sandbox's resource figures, read from its cgroups.
type Stats struct {
	CPUUsage     time.Duration `json:"cpuUsage"`
	MemoryBytes  uint64        `json:"memoryBytes"`
	MemoryPeak   uint64        `json:"memoryPeakBytes"`
	MemoryLimit  uint64        `json:"memoryLimitBytes"`
	PIDs         uint64        `json:"pids"`
	OOMKills     uint64        `json:"oomKills"`
	CPUQuotaFrac float64       `json:"cpuQuota"` // vCPUs as configured
	// Network bytes, from the sandbox's side (tx is its egress): filled
	// by the node from the sandbox's veth when it set up the network, by
	// the driver when the network is the driver's own (an Addresser:
	// Kubernetes, whose agent reads the Pod's interface counters); zero
	// for loopback-only sandboxes.
	NetworkRxBytes uint64 `json:"networkRxBytes"`
	NetworkTxBytes uint64 `json:"networkTxBytes"`
	// Disk figures of a sandbox with a disk cap (Resources.DiskMB): its
	// writable layer's filesystem, metadata included; zero without one.
	DiskBytes       uint64 `json:"diskBytes"`
	DiskLimitBytes  uint64 `json:"diskLimitBytes"`
	DiskInodes      uint64 `json:"diskInodes"`
	DiskInodesLimit uint64 `json:"diskInodesLimit"`
}

// Capabilities say what a driver can do and how it isolates, so callers
// discover optional powers instead of guessing.
type Capabilities struct {
	Name          string `json:"name"`
	CgroupVersion int    `json:"cgroupVersion"`
	Seccomp       bool   `json:"seccomp"`
	// Snapshot: the driver implements Snapshotter.
	Snapshot bool `json:"snapshot"`
	// SnapshotRunningOnly: the driver snapshots only a running sandbox,
	// since a stopped one's writable layer went with it (Kubernetes: Stop
	// deletes the Pod). A caller must snapshot such a sandbox before it
	// stops it, not after.
	SnapshotRunningOnly bool `json:"snapshotRunningOnly,omitempty"`
	// UserNS: each sandbox has a user namespace mapping its ids to a
	// range of unprivileged host ids of its own (root inside is not root
	// on the host), and files keep container-relative ids on disk.
	UserNS bool `json:"userNS"`
	// DiskCap: the driver caps a sandbox's writable layer at
	// Resources.DiskMB; without it a sandbox with a cap is refused.
	DiskCap bool `json:"diskCap"`
	// DiskCapStops: the cap holds by stopping a sandbox that went past
	// it, not by failing its writes with ENOSPC (Kubernetes: the kubelet
	// evicts a Pod past its ephemeral-storage limit, within its
	// housekeeping period, so a burst of writes may overshoot until then).
	DiskCapStops bool `json:"diskCapStops,omitempty"`
}

// Snapshotter is the optional power to copy a sandbox's writable layer
// (running or stopped, not yet destroyed) into a new layer directory.
type Snapshotter interface {
	// Snapshot copies the changes the sandbox made to its root filesystem
	// into dst, an empty directory, in overlayfs's on-disk form (whiteouts
	// and opaque directories included), and returns the bytes copied. It
	// fails with sandbox.ErrTooLarge beyond maxBytes (0: no cap).
	//
	// base is the root filesystem the sandbox was created from, as far as
	// the caller still knows it: its Lowers (the layers the sandbox's
	// image or snapshot stacks, topmost first) and OnHost; nil or without
	// Lowers for the host image. A driver that reads the writable layer
	// itself (runc, gVisor) needs none of it; one that sees only the
	// sandbox's merged view (Kubernetes) tells deletions from it.
	Snapshot(ctx context.Context, id string, base *Rootfs, dst string, maxBytes int64) (size int64, err error)
}

// RegistryImager is the optional trait of a driver whose sandboxes run
// registry images their nodes pull (Kubernetes: Rootfs.Ref) rather than
// this host's layer directories. A snapshot of such a sandbox runs there
// only once pushed to a registry as an image, on top of the image the
// sandbox ran.
type RegistryImager interface {
	// HostImageRef is the registry image the image "host" stands for
	// ("" when the driver has none).
	HostImageRef() string
}

// Addresser is the optional power of a driver whose sandboxes get an
// address the node did not assign (Kubernetes: the Pod IP), where the
// node's port proxy reaches the sandbox's ports.
type Addresser interface {
	// Address fails with sandbox.ErrNotRunning if the sandbox is not
	// running and sandbox.ErrNotFound if the driver does not know it.
	Address(ctx context.Context, id string) (netip.Addr, error)
}

// EgressUpdater is the optional power of a driver that enforces its
// sandboxes' egress itself (one with a network of its own, an Addresser:
// Kubernetes) to replace a sandbox's egress policy in place, its
// processes running on.
type EgressUpdater interface {
	// UpdateEgress makes policy the sandbox's egress, refusing what
	// Create refuses in Spec.Egress (nil: deny-all). The policy is kept
	// where the driver keeps the sandbox (a restarted paddock, or another
	// replica, finds it there). It fails with sandbox.ErrNotFound if the
	// driver does not know the sandbox.
	UpdateEgress(ctx context.Context, id string, policy *sandbox.NetworkPolicy) error
}

// Adopter is the optional power of a driver whose sandboxes outlive the
// host of the paddock replica that made them (Kubernetes: Pods in a
// namespace every replica reaches), so that another replica can take over
// the sandboxes of one that is gone. Drivers whose sandboxes live on the
// replica's own host (runc, gVisor) do not have it: those went with it.
type Adopter interface {
	// Adopt makes id this driver's, as if it had created it: its List
	// reports it from now on (and the previous owner's no longer does),
	// Agent, Stop and Destroy reach it. It returns what List would say of
	// it. Idempotent; sandbox.ErrNotFound if nothing of id is left.
	Adopt(ctx context.Context, id string) (Info, error)
}

// Driver runs sandboxes on this host. Implementations are safe for
// concurrent use; every method is idempotent where the doc says so.
type Driver interface {
	Capabilities() Capabilities
	// Create builds and starts a sandbox and returns once its agent answers.
	// On error nothing of the sandbox is left behind.
	Create(ctx context.Context, spec Spec) (*agent.Client, error)
	// Agent returns a client for a running sandbox's agent, including one
	// created by an earlier paddock process (re-adoption after a restart).
	// It fails with sandbox.ErrNotRunning if the sandbox is not running and
	// sandbox.ErrNotFound if the driver does not know it.
	Agent(ctx context.Context, id string) (*agent.Client, error)
	Stats(ctx context.Context, id string) (Stats, error)
	// Stop kills every process of the sandbox and releases its cgroups and
	// mounts; its writable layer stays on disk until Destroy. Idempotent.
	Stop(ctx context.Context, id string) error
	// Destroy stops the sandbox if needed and removes everything of it.
	// Idempotent: destroying an unknown id is not an error.
	Destroy(ctx context.Context, id string) error
	// List returns every sandbox this driver has state for on this host,
	// including half-created ones, so reconcile can adopt or clean them.
	List(ctx context.Context) ([]Info, error)
	// Close releases driver resources; sandboxes keep running.
	Close() error
}

// Status is one runtime a host knows, as GET /api/v1/runtimes lists it:
// whether sandboxes can run on it here (and if not, why and how to fix
// it) and, when they can, its capabilities.
type Status struct {
	Name string `json:"name"`
	// Default runs sandboxes whose create names no runtime.
	Default   bool   `json:"default"`
	Available bool   `json:"available"`
	Reason    string `json:"reason,omitempty"`
	// Capabilities are zero when the runtime is unavailable.
	Capabilities Capabilities `json:"capabilities"`
}
