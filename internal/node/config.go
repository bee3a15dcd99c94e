package node

import (
	"context"
	"log/slog"
	goruntime "runtime"
	"slices"
	"time"

	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/netns"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Defaults for Config fields left zero.
const (
	defaultTimeout      = 5 * time.Minute
	defaultMaxTimeout   = 5 * time.Hour
	defaultMaxSandboxes = 64
	defaultMaxPorts     = 8
	// defaultLivenessInterval: one driver List per runtime this often (for
	// Kubernetes two API lists), so a dead sandbox is stopped within it.
	defaultLivenessInterval = 5 * time.Second
	defaultMaxDiskMB        = 100 << 10 // 100 GiB: images are sparse, a cap costs nothing until written

	defaultListLimit = 50
	maxListLimit     = 500

	// driverTimeout bounds one driver call made on a sandbox's behalf. It is
	// generous because building a sandbox can mean unpacking a root
	// filesystem, and the call must not be cut short by the request that
	// asked for it (see context.WithoutCancel in the callers).
	driverTimeout = 60 * time.Second
	// pingTimeout bounds the agent ping that decides re-adoption on restart.
	pingTimeout = 5 * time.Second
	// recordsTimeout bounds one Records.Save or Remove; recordsLoadTimeout
	// the LoadAll at start.
	recordsTimeout     = 30 * time.Second
	recordsLoadTimeout = 2 * time.Minute
)

// Config configures a Manager.
type Config struct {
	DataDir          string            // node state in DataDir/node/
	Driver           runtime.Driver    // runs the sandboxes of the default runtime (its Capabilities().Name)
	Now              func() time.Time  // injectable clock; default time.Now
	DefaultTimeout   time.Duration     // default 5m
	MaxTimeout       time.Duration     // hard max for a sandbox's total lifetime incl. extensions; default 5h
	DefaultResources sandbox.Resources // default {VCPUs:1, MemoryMB:1024, PIDs:512, DiskMB: 0 (no cap)}
	MaxResources     sandbox.Resources // default {VCPUs: host cores, MemoryMB: 16384, PIDs: 32768, DiskMB: 102400}
	MaxSandboxes     int               // running+pending at once on this host; default 64
	MaxPorts         int               // declared ports per sandbox; default 8
	// LivenessInterval is how often the node asks its drivers which
	// sandboxes still run, and stops those that no longer do (liveness.go);
	// default 5s.
	LivenessInterval time.Duration
	Logger           *slog.Logger // default slog.Default()

	// Drivers are the other runtimes this host offers, each by its
	// Capabilities().Name; a create names one with CreateRequest.Runtime.
	Drivers []runtime.Driver
	// Unavailable are runtimes this host knows but cannot run, each with
	// why and how to fix it (gVisor without runsc): a create asking for
	// one is refused with that reason, and Runtimes lists them.
	Unavailable map[string]string
	// StoppedRetention is how long a stopped or failed sandbox keeps its
	// writable layer on the host (for snapshots) before the node removes
	// it; the record stays, marked (Sandbox.LayerRemovedAt). 0 keeps
	// layers until the sandbox is deleted.
	StoppedRetention time.Duration
	// Network gives each sandbox a network of its own on this host; nil
	// keeps sandboxes loopback-only (and refuses ports and network
	// policies), except those of a driver that brings its own network (a
	// runtime.Addresser: see network.go).
	Network Network
	// Images resolves every image but "host"; nil allows only "host".
	Images Images
	// SnapshotRegistry is the repository (host[:port]/path) a snapshot of
	// a sandbox of a runtime.RegistryImager (Kubernetes) is pushed to as
	// an image, so that sandboxes made from it run there; "" refuses such
	// snapshots. Other runtimes' snapshots of sandboxes of registry images
	// are pushed there too when it is set (sharingPush), for the other
	// replicas; else they stay on this host.
	SnapshotRegistry string
	// Volumes mounts named volumes into sandboxes; nil refuses create
	// requests with volumes (ErrUnsupported "volumes_unsupported").
	Volumes Volumes
	// Sources fetches git and tarball sources (see source.go); nil refuses
	// create requests with a source (ErrUnsupported "sources_unsupported").
	Sources Sources
	// Records keeps the sandbox records across restarts; nil keeps them as
	// JSON files in DataDir/node/sandboxes (see internal/daemon
	// for the control plane's database). A non-nil Records takes over the
	// JSON files New finds there (see import.go).
	Records Records
	// History records each command as Exec starts it, and each sandbox's
	// command exits and usage when it stops (see history.go); nil records
	// nothing.
	History History
	// Observer hears lifecycle events and create timings (see
	// observe.go); nil hears nothing.
	Observer Observer
	// Peers knows the sandboxes of the other replicas that share Records
	// (see peers.go); nil: this node is alone, and an id it does not have
	// is not found.
	Peers Peers
}

// Images is what the node needs from the image store; *image.Store
// satisfies it. Pulling and importing are not the node's business: an image
// must be in the store, or in the directory the replicas share, before a
// sandbox is created from it.
type Images interface {
	// Get, Resolve and Touch look ref up as team sees it: the team's own
	// refs, then the published ones. Get reads this host's store only;
	// Resolve, a create's, reads the directory the replicas share and
	// pulls by digest an image another replica pulled (image.Store.Resolve).
	Get(team, ref string) (*image.Image, error)
	Resolve(ctx context.Context, team, ref string) (*image.Image, error)
	Touch(team, ref string) error
}

var _ Images = (*image.Store)(nil)

// Network is what the node needs from the host's sandbox networking;
// *netns.Manager satisfies it. Setup runs before the driver creates the
// sandbox (which joins the namespace), Teardown after the driver stopped it.
type Network interface {
	Setup(ctx context.Context, id string, policy netns.Policy) (*netns.Network, error)
	Update(ctx context.Context, id string, policy netns.Policy) error
	Teardown(ctx context.Context, id string) error
	Stats(id string) (rxBytes, txBytes uint64, err error)
	List() []netns.Network
}

var _ Network = (*netns.Manager)(nil)

// DefaultNetworkPolicy is the egress policy of a sandbox created without
// one: allow-all, as Vercel's sandboxes do. Without forwarding and NAT on
// the host (which paddock never sets up) nothing leaves the machine anyway;
// the built-in blocks (host, other sandboxes, metadata) apply in every mode.
var DefaultNetworkPolicy = sandbox.NetworkPolicy{Mode: netns.ModeAllowAll}

// setDefaults fills zero fields. Defaulted resources are clamped to the
// configured maximum so that a small MaxResources alone is a valid config.
func (c *Config) setDefaults() {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.DefaultTimeout == 0 {
		c.DefaultTimeout = defaultTimeout
	}
	if c.LivenessInterval <= 0 {
		c.LivenessInterval = defaultLivenessInterval
	}
	if c.MaxTimeout == 0 {
		c.MaxTimeout = max(defaultMaxTimeout, c.DefaultTimeout)
	}
	if c.MaxResources.VCPUs == 0 {
		c.MaxResources.VCPUs = float64(goruntime.NumCPU())
	}
	if c.MaxResources.MemoryMB == 0 {
		c.MaxResources.MemoryMB = 16384
	}
	if c.MaxResources.PIDs == 0 {
		c.MaxResources.PIDs = 32768
	}
	if c.MaxResources.DiskMB == 0 {
		c.MaxResources.DiskMB = max(defaultMaxDiskMB, c.DefaultResources.DiskMB)
	}
	if c.DefaultResources.VCPUs == 0 {
		c.DefaultResources.VCPUs = min(1, c.MaxResources.VCPUs)
	}
	if c.DefaultResources.MemoryMB == 0 {
		c.DefaultResources.MemoryMB = min(1024, c.MaxResources.MemoryMB)
	}
	if c.DefaultResources.PIDs == 0 {
		c.DefaultResources.PIDs = min(512, c.MaxResources.PIDs)
	}
	if c.MaxSandboxes == 0 {
		c.MaxSandboxes = defaultMaxSandboxes
	}
	if c.MaxPorts == 0 {
		c.MaxPorts = defaultMaxPorts
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate checks a config after defaults are applied.
func (c *Config) Validate() error {
	switch {
	case c.DataDir == "":
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "node: DataDir is required")
	case c.Driver == nil:
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "node: Driver is required")
	case c.DefaultTimeout <= 0 || c.MaxTimeout <= 0:
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "node: timeouts must be positive")
	case c.DefaultTimeout > c.MaxTimeout:
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "node: DefaultTimeout %s exceeds MaxTimeout %s", c.DefaultTimeout, c.MaxTimeout)
	case c.MaxSandboxes <= 0:
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "node: MaxSandboxes must be positive, got %d", c.MaxSandboxes)
	case c.StoppedRetention < 0:
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "node: StoppedRetention must not be negative, got %s", c.StoppedRetention)
	case c.MaxPorts <= 0:
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "node: MaxPorts must be positive, got %d", c.MaxPorts)
	}
	if err := c.DefaultResources.Validate(c.MaxResources); err != nil {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_config", "node: DefaultResources: %v", err)
	}
	return nil
}

// hostImage is the image built from the host's own /usr.
const hostImage = sandbox.HostImage

// normalize validates req against cfg and returns it with defaults applied.
// networked says whether req's runtime gives its sandboxes a network
// (Manager.requestNetworked): without one, ports and network policies are
// refused. The image itself is resolved by Manager.resolveImage.
func normalize(cfg *Config, req sandbox.CreateRequest, networked bool) (sandbox.CreateRequest, error) {
	if req.Snapshot != "" && req.Image != "" {
		return req, sandbox.Errorf(sandbox.ErrInvalid, "image_and_snapshot", "give an image or a snapshot, not both")
	}
	if req.Image == "" {
		req.Image = hostImage
	}

	if req.Resources.VCPUs == 0 {
		req.Resources.VCPUs = cfg.DefaultResources.VCPUs
	}
	if req.Resources.MemoryMB == 0 {
		req.Resources.MemoryMB = cfg.DefaultResources.MemoryMB
	}
	if req.Resources.PIDs == 0 {
		req.Resources.PIDs = cfg.DefaultResources.PIDs
	}
	if req.Resources.DiskMB == 0 {
		req.Resources.DiskMB = cfg.DefaultResources.DiskMB
	}
	if err := req.Resources.Validate(cfg.MaxResources); err != nil {
		return req, err
	}
	if err := sandbox.ValidateLabels(req.Labels); err != nil {
		return req, err
	}

	switch {
	case req.Timeout == 0:
		req.Timeout = cfg.DefaultTimeout
	case req.Timeout < 0 || req.Timeout > cfg.MaxTimeout:
		return req, sandbox.Errorf(sandbox.ErrInvalid, "invalid_timeout", "timeout must be in (0, %s], got %s", cfg.MaxTimeout, req.Timeout)
	}

	if err := sandbox.ValidateEnv(req.Env); err != nil {
		return req, err
	}
	vols, err := normalizeVolumes(cfg, req.Volumes)
	if err != nil {
		return req, err
	}
	req.Volumes = vols
	if req.Source, err = normalizeSource(cfg, req.Source); err != nil {
		return req, err
	}

	if !networked {
		if len(req.Ports) > 0 || req.NetworkPolicy != nil {
			return req, errNoNetwork
		}
		return req, nil
	}
	ports, err := mergePorts(cfg, nil, req.Ports)
	if err != nil {
		return req, err
	}
	req.Ports = ports
	pol := DefaultNetworkPolicy
	if req.NetworkPolicy != nil {
		pol = clonePolicy(*req.NetworkPolicy)
	}
	if err := netns.Policy(pol).Validate(); err != nil {
		return req, err
	}
	req.NetworkPolicy = &pol
	return req, nil
}

var errNoNetwork = sandbox.Errorf(sandbox.ErrUnsupported, "network_disabled",
	"this host runs sandboxes without networking: ports and network policies are unavailable")

// mergePorts validates add and returns have followed by it, sorted by port.
func mergePorts(cfg *Config, have, add []sandbox.Port) ([]sandbox.Port, error) {
	out := slices.Clone(have)
	for _, p := range add {
		if p.Port < 1 || p.Port > 65535 {
			return nil, sandbox.Errorf(sandbox.ErrInvalid, "invalid_port", "port must be in [1, 65535], got %d", p.Port)
		}
		if slices.ContainsFunc(out, func(q sandbox.Port) bool { return q.Port == p.Port }) {
			return nil, sandbox.Errorf(sandbox.ErrInvalid, "duplicate_port", "port %d is already declared", p.Port)
		}
		out = append(out, p)
	}
	if len(out) > cfg.MaxPorts {
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "too_many_ports", "at most %d ports per sandbox, got %d", cfg.MaxPorts, len(out))
	}
	slices.SortFunc(out, func(a, b sandbox.Port) int { return a.Port - b.Port })
	return out, nil
}

// clonePolicy copies p so that records never share slices with callers.
func clonePolicy(p sandbox.NetworkPolicy) sandbox.NetworkPolicy {
	p.AllowDomains = slices.Clone(p.AllowDomains)
	p.AllowCIDRs = slices.Clone(p.AllowCIDRs)
	p.DenyCIDRs = slices.Clone(p.DenyCIDRs)
	return p
}
