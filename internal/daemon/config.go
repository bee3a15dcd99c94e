package daemon

import (
	"errors"
	"fmt"
	"github.com/paddock-dev/paddock/internal/admission"
	"log/slog"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/control"
	"github.com/paddock-dev/paddock/internal/events"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/metering"
	"github.com/paddock-dev/paddock/internal/netns"
	"github.com/paddock-dev/paddock/internal/node"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/volume"
	"github.com/paddock-dev/paddock/internal/web"
)

// DefaultNodeName names this host's sandbox records when Config.NodeName
// is empty.
const DefaultNodeName = "local"

// Config is what `paddock serve` is told: one field per setting, the zero
// value of each meaning its default. The listener is not here: the caller
// listens, and passes the public base URL its port gives (PublicURL).
type Config struct {
	// DataDir holds everything paddock keeps on this host. Required.
	DataDir string
	// NodeName names this host's sandbox records in the store, unique among
	// the hosts that share one (DefaultNodeName if empty).
	NodeName string
	// MongoURI, when set, keeps everything in MongoDB (mongodb://...) in
	// database MongoDatabase ("paddock" if empty) instead of SQLite at
	// DataDir/paddock.db: the store replicas share.
	MongoURI      string
	MongoDatabase string
	// AdvertiseURL is where the other replicas sharing the store reach
	// this one (http://<pod IP>:<port>): it goes in the store's replica
	// directory at start, and the others forward requests for this
	// replica's sandboxes there. Empty: they cannot, and answer 503
	// sandbox_replica_unavailable for them.
	AdvertiseURL string

	// DefaultTimeout is a sandbox's timeout when its create request gives
	// none; MaxTimeout the longest it may live, extensions included;
	// MaxSandboxes how many run at once. 0: node's defaults.
	DefaultTimeout time.Duration
	MaxTimeout     time.Duration
	MaxSandboxes   int

	// NoNetwork gives sandboxes loopback only: no veth, no egress, no port
	// proxy, no signed URLs.
	NoNetwork bool
	// NetworkPool is the IPv4 prefix sandboxes get their /30 from
	// (netns.DefaultPool if zero).
	NetworkPool netip.Prefix
	// NAT masquerades allowed sandbox egress out of this host.
	NAT bool
	// Domain is the parent domain of the port hosts (<port>-<id>.<domain>)
	// and app hosts (app-<id>.<domain>); "" serves the path forms only.
	Domain string
	// PublicURL is the port proxy's public base URL, from which sandbox
	// routes and signed URLs are built ("http://localhost:7420"); "" shows
	// no routes.
	PublicURL string

	// SandboxDiskMB caps the writable layer of a sandbox whose create
	// gives no cap, in MiB; 0 leaves such layers uncapped on the data
	// dir's filesystem (serve's default is 10 GiB: uncapped is unsafe with
	// many tenants). MaxSandboxDiskMB is the largest cap a create may ask
	// (node's default, 100 GiB, if 0).
	SandboxDiskMB    int64
	MaxSandboxDiskMB int64
	// StoppedRetention is how long a stopped sandbox keeps its writable
	// layer for snapshots before it is removed (the record stays); 0 keeps
	// it until the sandbox is deleted.
	StoppedRetention time.Duration

	// Per-team caps on what a team keeps on the host: image refs,
	// snapshots and the bytes of their own layers, volumes and the sum of
	// their sizes. 0: the stores' defaults (image.DefaultTeamMax*,
	// volume.DefaultTeamMax*); negative: no cap.
	TeamMaxImages        int
	TeamMaxSnapshots     int
	TeamMaxSnapshotBytes int64
	TeamMaxVolumes       int
	TeamMaxVolumeBytes   int64

	// Admission (internal/admission): TeamPreset names the limits of a
	// team no admin gave any ("hobby", "pro"; "" none: only the host's
	// capacity); QueueMax bounds a team's waiting requests (100 if 0);
	// QueueMaxWait is the longest a request waits (60s if 0).
	TeamPreset   string
	QueueMax     int
	QueueMaxWait time.Duration

	// HistoryRetention is how long command history is kept: entries that
	// started longer ago are pruned hourly (DefaultHistoryRetention if 0;
	// kept forever if negative). Each sandbox also keeps only its newest
	// 1000 commands, whatever their age.
	HistoryRetention time.Duration

	// UsageInterval is how often running sandboxes' usage is sampled and
	// budgets checked (metering.DefaultInterval if 0); UsageRetention how
	// long samples are kept before they are rolled up per team, project
	// and hour (metering.DefaultRawRetention if 0, at least 3 h).
	UsageInterval  time.Duration
	UsageRetention time.Duration
	// Prices turn usage into cost (zero prices: free).
	Prices metering.Prices

	// UploadStagingBytes bounds the disk all image imports in flight stage
	// together under <data>/tmp/uploads (server.DefaultStagingBytes if 0).
	UploadStagingBytes int64

	// MaxVolumeSize is the largest cap a volume may be created with, in
	// bytes (volume.DefaultMaxSize if 0).
	MaxVolumeSize int64
	// AppMaxBody bounds a request body the app proxy forwards to a
	// project's app (app.DefaultMaxBody if 0).
	AppMaxBody int64
	// HealthTimeout bounds the wait for a project's app to become healthy,
	// unless the project sets its own (control's default if 0).
	HealthTimeout time.Duration

	// OIDC, when set, accepts OIDC ID tokens (JWTs) from its issuer too;
	// its ClientID, when set, adds the dashboard's "Sign in with" button,
	// signing in as that client.
	OIDC *auth.OIDCConfig
	// OIDCClientSecret is the dashboard client's secret (empty: a public
	// client, PKCE alone); OIDCRedirectURL its redirect URI, by default
	// <PublicURL>/ui/oidc/callback.
	OIDCClientSecret, OIDCRedirectURL string
	// ResetAdminToken revokes the host admin token and makes a new one
	// (see Daemon.AdminToken).
	ResetAdminToken bool
	// SourceAllowPrivate lets git and tarball sources come from loopback
	// and private addresses (a LAN git server, tests).
	SourceAllowPrivate bool
	// ImageKeychain lets every team's image pulls without credentials use
	// the server's docker logins; without it only the host admin's do.
	ImageKeychain bool
	// RegistryAllowPrivate lets image pulls reach registries (and their
	// redirects and token servers) on loopback and private addresses.
	RegistryAllowPrivate bool
	// EgressAllowCIDRs are private ranges (RFC 1918, 100.64/10, ...) that
	// sandboxes (as their policy says), sources and image pulls may reach;
	// every other private range is refused to all of them.
	EgressAllowCIDRs []netip.Prefix
	// BlockCIDRs are never reachable: not by sandboxes whatever their
	// policy, not by sources nor image pulls.
	BlockCIDRs []netip.Prefix
	// TLSCertFile and TLSKeyFile (both or neither) are the PEM certificate
	// chain and key the listener serves TLS with; for port hosts it must
	// cover *.<Domain> (a wildcard). Read once at start: a renewed
	// certificate takes a restart.
	TLSCertFile string
	TLSKeyFile  string
	// TLSDevCA serves TLS with certificates of a development CA paddock
	// makes under DataDir/tls (its key 0600, kept across restarts), for
	// Domain, *.<Domain>, localhost, loopback and PublicURL's host.
	// Clients trust DataDir/tls/dev-ca.pem (NODE_EXTRA_CA_CERTS,
	// SSL_CERT_FILE). Not with TLSCertFile.
	TLSDevCA bool

	// Runtime is the runtime of a sandbox whose create (or project) names
	// none: RuntimeRunc ("" too) or RuntimeGVisor, which needs runsc
	// (gvisor.Find). Both run when they can; GET /api/v1/runtimes says
	// which do. RuntimeKubernetes runs every sandbox as a Pod instead
	// (Kubernetes below), and nothing on this host: no local driver, no
	// host networking (a Pod has the cluster's), volumes as the cluster's
	// PersistentVolumeClaims.
	Runtime string
	// Kubernetes configures RuntimeKubernetes.
	Kubernetes KubernetesConfig
	// SnapshotRegistry is the repository (host[:port]/path) snapshots of
	// sandboxes that run registry images (RuntimeKubernetes) are pushed
	// to as images, with this server's registry logins (the docker
	// config), so that sandboxes made from them run as Pods; "" refuses
	// such snapshots. runc and gVisor snapshots of sandboxes of registry
	// images are pushed there too, for the other replicas sharing the
	// store to pull; without it they stay on their replica's host.
	SnapshotRegistry string

	// NoUserNS runs sandboxes without user namespaces: weaker, root in a
	// sandbox is root on the host (for kernels without idmapped mounts).
	NoUserNS bool
	// UserNSBase is the first host uid/gid of the sandboxes' id ranges
	// (65536 ids each); 0 means runc.DefaultIDBase.
	UserNSBase uint32

	// Pools are warm pools set at every start (serve's --pool), over those
	// of the same name the API set (kept in <data>/pools.json).
	// PoolConcurrency bounds the pool refills in flight
	// (pool.DefaultConcurrency if 0).
	Pools           []sandbox.PoolSpec
	PoolConcurrency int
	// WebhookAllowPrivate lets webhook deliveries reach loopback and
	// private addresses (a receiver on the LAN, tests); EgressAllowCIDRs
	// open single ranges. Link-local, metadata and BlockCIDRs never.
	WebhookAllowPrivate bool
	// WebhookMaxAttempts and WebhookBackoff bound a delivery's retries
	// (events.DefaultMaxAttempts, events.DefaultBackoff doubling if 0).
	WebhookMaxAttempts int
	WebhookBackoff     time.Duration
	// WebhookMaxBacklog bounds each webhook's pending deliveries; past it
	// new events' deliveries are recorded as dropped
	// (events.DefaultMaxBacklog if 0).
	WebhookMaxBacklog int
	// EventRetention is how long lifecycle events, and the delivery
	// records of their webhooks, are kept (events.DefaultRetentionAge if
	// 0; negative: forever). EventMaxCount bounds how many events are kept
	// (events.DefaultMaxEvents if 0; negative: no bound). Both are applied
	// hourly.
	EventRetention time.Duration
	EventMaxCount  int64

	// Replicas sharing one store (internal/lease): each holds a liveness
	// lease named after NodeName, and one at a time the background lease
	// of the work that runs once. A lease lives LeaseTTL past its last
	// renewal (lease.DefaultTTL, 15s, if 0) and is renewed every
	// LeaseRenew (5s, or a third of LeaseTTL, if 0; below LeaseTTL/2).
	// OrphanGrace is how long the ready activations of a replica gone
	// from the store wait for it before the background lease's holder
	// ends them (control's default, 2m, if 0); those it left coming up
	// fail at once (replica_lost).
	LeaseTTL    time.Duration
	LeaseRenew  time.Duration
	OrphanGrace time.Duration
}

// Validate reports a setting that cannot work.
func (c Config) Validate() error {
	switch {
	case c.DataDir == "":
		return errors.New("daemon config: DataDir is required")
	case c.DefaultTimeout < 0 || c.MaxTimeout < 0 || c.MaxSandboxes < 0 || c.HealthTimeout < 0:
		return errors.New("daemon config: timeouts and MaxSandboxes must not be negative")
	case c.QueueMax < 0 || c.QueueMaxWait < 0:
		return errors.New("daemon config: QueueMax and QueueMaxWait must not be negative")
	case c.StoppedRetention < 0:
		return errors.New("daemon config: StoppedRetention must not be negative")
	case c.MaxSandboxDiskMB != 0 && c.MaxSandboxDiskMB < sandbox.MinDiskMB:
		return fmt.Errorf("daemon config: MaxSandboxDiskMB must be at least %d", sandbox.MinDiskMB)
	case c.SandboxDiskMB != 0 && (c.SandboxDiskMB < sandbox.MinDiskMB || c.MaxSandboxDiskMB != 0 && c.SandboxDiskMB > c.MaxSandboxDiskMB):
		return fmt.Errorf("daemon config: SandboxDiskMB must be 0 or in [%d, MaxSandboxDiskMB]", sandbox.MinDiskMB)
	case c.UsageInterval < 0 || c.UsageRetention < 0:
		return errors.New("daemon config: UsageInterval and UsageRetention must not be negative")
	case c.MaxVolumeSize < 0 || c.AppMaxBody < 0 || c.UploadStagingBytes < 0:
		return errors.New("daemon config: MaxVolumeSize, AppMaxBody and UploadStagingBytes must not be negative")
	case c.UserNSBase != 0 && c.UserNSBase < 65536:
		return fmt.Errorf("daemon config: UserNSBase %d is below 65536, where host accounts live", c.UserNSBase)
	case c.Runtime != "" && c.Runtime != RuntimeRunc && c.Runtime != RuntimeGVisor && c.Runtime != RuntimeKubernetes:
		return fmt.Errorf("daemon config: Runtime %q is none of %s, %s, %s", c.Runtime, RuntimeRunc, RuntimeGVisor, RuntimeKubernetes)
	case c.Runtime == RuntimeKubernetes && (c.Kubernetes.Namespace == "" || c.Kubernetes.AgentImage == ""):
		return errors.New("daemon config: the kubernetes runtime needs Kubernetes.Namespace and Kubernetes.AgentImage")
	case c.Kubernetes.RequestFraction < 0 || c.Kubernetes.RequestFraction > 1:
		return fmt.Errorf("daemon config: Kubernetes.RequestFraction %g is not in (0, 1]", c.Kubernetes.RequestFraction)
	case !slices.Contains([]string{"", "Always", "IfNotPresent", "Never"}, c.Kubernetes.PullPolicy):
		return fmt.Errorf("daemon config: Kubernetes.PullPolicy %q is none of Always, IfNotPresent, Never", c.Kubernetes.PullPolicy)
	case (c.Kubernetes.DNSListen != "") != c.Kubernetes.DNSAddress.IsValid():
		return errors.New("daemon config: Kubernetes.DNSListen and Kubernetes.DNSAddress go together")
	case len(c.Kubernetes.DNSPodLabels) > 0 && c.Kubernetes.DNSNamespace == "":
		return errors.New("daemon config: Kubernetes.DNSPodLabels need Kubernetes.DNSNamespace")
	case c.AdvertiseURL != "" && !validAdvertiseURL(c.AdvertiseURL):
		return fmt.Errorf("daemon config: AdvertiseURL %q is not an http(s)://host[:port] URL", c.AdvertiseURL)
	case c.SnapshotRegistry != "" && image.CheckRepository(c.SnapshotRegistry) != nil:
		return fmt.Errorf("daemon config: SnapshotRegistry: %w", image.CheckRepository(c.SnapshotRegistry))
	case c.NoNetwork && c.NAT:
		return errors.New("daemon config: NAT needs sandbox networking (NoNetwork is set)")
	case (c.TLSCertFile == "") != (c.TLSKeyFile == ""):
		return errors.New("daemon config: TLSCertFile and TLSKeyFile go together")
	case c.TLSDevCA && c.TLSCertFile != "":
		return errors.New("daemon config: TLSDevCA and TLSCertFile exclude each other")
	case !c.NoNetwork && c.NetworkPool.IsValid() && !c.NetworkPool.Addr().Is4():
		return fmt.Errorf("daemon config: NetworkPool %s is not an IPv4 prefix", c.NetworkPool)
	}
	if c.LeaseTTL < 0 || c.LeaseRenew < 0 || c.OrphanGrace < 0 {
		return errors.New("daemon config: LeaseTTL, LeaseRenew and OrphanGrace must not be negative")
	}
	if ttl, renew := c.leaseTimes(); 2*renew >= ttl {
		return fmt.Errorf("daemon config: LeaseRenew (%s) must be below half of LeaseTTL (%s)", renew, ttl)
	}
	if c.PoolConcurrency < 0 {
		return errors.New("daemon config: PoolConcurrency must not be negative")
	}
	if c.WebhookMaxBacklog < 0 {
		return errors.New("daemon config: WebhookMaxBacklog must not be negative")
	}
	for _, p := range c.Pools {
		if err := p.Validate(); err != nil {
			return fmt.Errorf("daemon config: pool %q: %w", p.Name, err)
		}
	}
	if err := (admission.TeamLimits{Preset: c.TeamPreset}).Validate(); err != nil {
		return fmt.Errorf("daemon config: TeamPreset: %w", err)
	}
	if err := c.Prices.Validate(); err != nil {
		return fmt.Errorf("daemon config: %w", err)
	}
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("daemon config: PublicURL %q is not an http(s) URL", c.PublicURL)
		}
	}
	if (c.OIDCClientSecret != "" || c.OIDCRedirectURL != "") && (c.OIDC == nil || c.OIDC.ClientID == "") {
		return errors.New("daemon config: an OIDC client secret or redirect URL needs the dashboard's OIDC client id")
	}
	return nil
}

// oidcLogin is the dashboard's OIDC sign-in, nil without a client id.
func (c Config) oidcLogin() *web.OIDCLogin {
	if c.OIDC == nil || c.OIDC.ClientID == "" {
		return nil
	}
	redirect := c.OIDCRedirectURL
	if redirect == "" {
		redirect = strings.TrimSuffix(c.PublicURL, "/") + web.OIDCCallbackPath
	}
	return &web.OIDCLogin{Issuer: c.OIDC.Issuer, ClientID: c.OIDC.ClientID, ClientSecret: c.OIDCClientSecret,
		RedirectURL: redirect, HTTPClient: c.OIDC.HTTPClient}
}

// The runtimes a daemon runs sandboxes on (Config.Runtime).
const (
	RuntimeRunc       = "runc"
	RuntimeGVisor     = "gvisor"
	RuntimeKubernetes = "kubernetes"
)

// KubernetesConfig is where and how the kubernetes runtime runs sandboxes
// as Pods (internal/runtime/kubernetes).
type KubernetesConfig struct {
	// Kubeconfig is the kubeconfig file reaching the cluster; "" is the
	// Pod's own service account (paddock runs in the cluster).
	Kubeconfig string
	// Namespace holds the sandboxes' Pods, Secrets and NetworkPolicies.
	// Required.
	Namespace string
	// AgentImage holds the static agent at /paddock-agent (paddock's own
	// image does). Required.
	AgentImage string
	// HostImage is what the image "host" means on the cluster: a
	// registry image; "" refuses it.
	HostImage string
	// HostImageBinds are directories of the node bound read-only over
	// HostImage, as the runc driver binds the host's /usr: only for a
	// cluster whose node is this machine (the tests' one-node cluster),
	// so no flag sets them.
	HostImageBinds []runtime.Bind
	// RuntimeClass of the Pods ("": the cluster's default).
	RuntimeClass string
	// RequestFraction makes the Pods' requests this fraction of their
	// limits (0: 1, Guaranteed Pods).
	RequestFraction float64
	// PullPolicy of the sandboxes' images ("": IfNotPresent).
	PullPolicy string
	// ImagePullSecrets name the sandbox namespace's Secrets every Pod
	// lists to pull private images and pushed snapshots.
	ImagePullSecrets []string
	// HostUsers runs the Pods in their node's user namespace, for nodes
	// that cannot give each one its own (runc < 1.2); default false:
	// every Pod has a user namespace.
	HostUsers bool
	// StorageClass of the volumes' PersistentVolumeClaims ("": the
	// cluster's default class).
	StorageClass string
	// DNSListen, when set, is where this replica's resolver for the Pods
	// listens, UDP and TCP (host:port): the Pods' only nameserver, which
	// lets their policies allow egress by domain (see the kubernetes
	// driver's DNSConfig). "": no resolver, such policies are refused and
	// Pods use the cluster's DNS.
	DNSListen string
	// DNSAddress is the nameserver the Pods are given (port 53): where
	// they reach DNSListen, e.g. the ClusterIP of a Service in front of
	// the replicas. Required with DNSListen.
	DNSAddress netip.Addr
	// DNSUpstream are the servers the resolver asks; default the
	// nameservers of /etc/resolv.conf (in a Pod, the cluster's DNS).
	DNSUpstream []netip.AddrPort
	// DNSNamespace and DNSPodLabels select the replicas' Pods behind
	// DNSAddress (a Service's translation comes before the network
	// plugin's judgement), which each sandbox's NetworkPolicy then allows
	// on DNSListen's port. Unset: only DNSAddress itself.
	DNSNamespace string
	DNSPodLabels map[string]string
}

// DefaultHistoryRetention is Config.HistoryRetention's default.
const DefaultHistoryRetention = 30 * 24 * time.Hour

// historyRetention is HistoryRetention or its default.
func (c Config) historyRetention() time.Duration {
	if c.HistoryRetention == 0 {
		return DefaultHistoryRetention
	}
	return c.HistoryRetention
}

// secureCookies reports whether the proxies' token cookies are Secure:
// behind a TLS-terminating front proxy requests arrive as plain HTTP, so
// the public URL's scheme decides.
func (c Config) secureCookies() bool { return strings.HasPrefix(c.PublicURL, "https://") }

// deny is what host-side fetches (sources, image pulls) may never reach:
// the operator's blocked ranges and, with host networking, the sandbox
// pool (which the kubernetes runtime does not use).
func (c Config) deny() []netip.Prefix {
	deny := slices.Clone(c.BlockCIDRs)
	if !c.NoNetwork && c.Runtime != RuntimeKubernetes {
		deny = append(deny, c.pool())
	}
	return deny
}

// pool is NetworkPool or its default.
func (c Config) pool() netip.Prefix {
	if c.NetworkPool.IsValid() {
		return c.NetworkPool
	}
	return netns.DefaultPool
}

// An Option changes how Start builds the daemon, for tests and benchmarks.
// Objects an option hands in stay the caller's: Close does not close them.
type Option func(*options)

type options struct {
	log             *slog.Logger
	driver          runtime.Driver
	moreDrivers     []runtime.Driver
	agentPath       string
	initPath        string
	store           store.Store
	dnsUpstream     []netip.AddrPort
	maxUploadBytes  int64
	nodeConfig      func(*node.Config)
	controlConfig   func(*control.Config)
	volumeConfig    func(*volume.Config)
	admissionConfig func(*admission.Config)
}

// WithLogger sends the daemon's logs to log (default: discarded).
func WithLogger(log *slog.Logger) Option { return func(o *options) { o.log = log } }

// WithDriver runs sandboxes on d, the default runtime, and more (other
// runtimes, each by its Capabilities().Name) instead of the drivers of the
// daemon's own (runc, gVisor); the caller closes them.
func WithDriver(d runtime.Driver, more ...runtime.Driver) Option {
	return func(o *options) { o.driver, o.moreDrivers = d, more }
}

// WithAgentPath gives the runc driver this agent binary instead of finding
// or building one (agentbin.Path under DataDir/bin).
func WithAgentPath(path string) Option { return func(o *options) { o.agentPath = path } }

// WithInitPath gives the runc driver this paddock-init binary. Without it
// the daemon finds or builds one (agentbin.InitPath under DataDir/bin),
// unless WithAgentPath is given: then sandboxes start from this process's
// own binary, as tests that bring their own agent expect.
func WithInitPath(path string) Option { return func(o *options) { o.initPath = path } }

// WithStore keeps everything in s instead of SQLite at DataDir/paddock.db;
// the caller closes s.
func WithStore(s store.Store) Option { return func(o *options) { o.store = s } }

// WithDNSUpstream sends sandboxes' DNS lookups to these servers instead of
// the host's resolvers (tests: a port nobody serves, so no lookup leaves
// the machine).
func WithDNSUpstream(servers ...netip.AddrPort) Option {
	return func(o *options) { o.dnsUpstream = servers }
}

// WithMaxUploadBytes bounds one upload (a file tar, an image archive) in
// the API and the Vercel layer (server.DefaultMaxUploadBytes if 0).
func WithMaxUploadBytes(n int64) Option { return func(o *options) { o.maxUploadBytes = n } }

// WithNodeConfig lets f change the sandbox manager's config last.
func WithNodeConfig(f func(*node.Config)) Option { return func(o *options) { o.nodeConfig = f } }

// WithControlConfig lets f change the project control plane's config last.
func WithControlConfig(f func(*control.Config)) Option {
	return func(o *options) { o.controlConfig = f }
}

// WithVolumeConfig lets f change the volume manager's config last.
func WithVolumeConfig(f func(*volume.Config)) Option { return func(o *options) { o.volumeConfig = f } }

// WithAdmissionConfig lets f change admission's config last (a test's
// clock, poll interval, retry hint).
func WithAdmissionConfig(f func(*admission.Config)) Option {
	return func(o *options) { o.admissionConfig = f }
}

// eventRetention is the event log's retention with the defaults applied
// (zero fields: kept forever).
func (c Config) eventRetention() events.Retention {
	r := events.Retention{MaxAge: c.EventRetention, MaxEvents: c.EventMaxCount}
	switch {
	case r.MaxAge == 0:
		r.MaxAge = events.DefaultRetentionAge
	case r.MaxAge < 0:
		r.MaxAge = 0
	}
	switch {
	case r.MaxEvents == 0:
		r.MaxEvents = events.DefaultMaxEvents
	case r.MaxEvents < 0:
		r.MaxEvents = 0
	}
	return r
}

// validAdvertiseURL reports whether u is a base URL requests can be
// forwarded to: http or https, a host, no path, query or credentials.
func validAdvertiseURL(u string) bool {
	p, err := url.Parse(u)
	return err == nil && (p.Scheme == "http" || p.Scheme == "https") && p.Host != "" && p.User == nil &&
		(p.Path == "" || p.Path == "/") && p.RawQuery == "" && p.Fragment == ""
}
