package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/paddock-dev/paddock/internal/atomicfile"
	"github.com/paddock-dev/paddock/internal/daemon"
	"github.com/paddock-dev/paddock/internal/events"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/lease"
	"github.com/paddock-dev/paddock/internal/metering"
	"github.com/paddock-dev/paddock/internal/netns"
	"github.com/paddock-dev/paddock/internal/proxy/app"
	"github.com/paddock-dev/paddock/internal/runtime/runc"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/volume"
)

// shutdownGrace is how long open requests (log streams, uploads) get to
// finish after SIGINT/SIGTERM before their connections are cut.
const shutdownGrace = 5 * time.Second

// defaultDataDir is $PADDOCK_DATA_DIR, else /var/lib/paddock for root, else
// the XDG data dir. serve and the CLI share it, so the CLI finds the local
// server's client.json.
func defaultDataDir() string {
	if d := os.Getenv("PADDOCK_DATA_DIR"); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/var/lib/paddock"
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "paddock")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "share", "paddock")
	}
	return "paddock-data"
}

// clientConfig is DataDir/client.json: what the CLI on this machine needs
// to reach the local server with no setup.
type clientConfig struct {
	URL   string `json:"url"`
	Token string `json:"token"`
	// CA is the development CA's certificate file when the server serves
	// TLS with one (--tls-dev-ca); the CLI trusts it besides the system's.
	CA string `json:"ca,omitempty"`
}

// serveFlags are serve's command line: the daemon's settings plus what
// only the command knows (where to listen, the public URL's default).
type serveFlags struct {
	cfg       daemon.Config
	listen    string
	publicURL string
	// metricsListen serves /metrics unauthenticated on a listener of its
	// own ("" : only on the main one, to the host admin's token).
	metricsListen string
	maxVolumeSize string
	// sandboxDisk is the disk cap of a sandbox created without one ("0":
	// uncapped writable layers); maxSandboxDisk the largest one asked.
	sandboxDisk    string
	maxSandboxDisk string
	// Per-team caps on what a team keeps on the host (0: no cap).
	teamMaxImages, teamMaxSnapshots, teamMaxVolumes int
	teamMaxSnapshotBytes, teamMaxVolumeBytes        string
	// stagingBytes bounds the uploads staged at once in <data>/tmp/uploads.
	stagingBytes string
	auth         authFlags
}

// envMongoURI is --mongodb-uri's environment form: a URI with a password
// in a process's arguments is readable by every user of the host (and in a
// Pod's spec); in its environment, from a Secret, it is not.
const envMongoURI = "PADDOCK_MONGODB_URI"

// envAdvertiseURL is --advertise-url's default: the chart sets it from the
// Pod's IP.
const envAdvertiseURL = "PADDOCK_ADVERTISE_URL"

// envSandboxNamespace is --k8s-namespace's default: the chart sets it.
const envSandboxNamespace = "PADDOCK_SANDBOX_NAMESPACE"

// envPodNamespace is --k8s-dns-namespace's default: the chart sets it
// to paddock's own namespace.
const envPodNamespace = "POD_NAMESPACE"

// envSnapshotRegistry is --snapshot-registry's default.
const envSnapshotRegistry = "PADDOCK_SNAPSHOT_REGISTRY"

func parseServeFlags(args []string, stderr io.Writer) (serveFlags, error) {
	var f serveFlags
	c := &f.cfg
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.listen, "listen", "127.0.0.1:7420", "address of the HTTP API")
	fs.StringVar(&c.DataDir, "data-dir", defaultDataDir(), "state directory (sandboxes, tokens, agent binary)")
	fs.DurationVar(&c.DefaultTimeout, "default-timeout", 5*time.Minute, "sandbox timeout when a create request gives none")
	fs.DurationVar(&c.MaxTimeout, "max-timeout", 5*time.Hour, "longest a sandbox may live, extensions included")
	fs.IntVar(&c.MaxSandboxes, "max-sandboxes", 64, "sandboxes running at once on this host (more creates wait in the queue)")
	fs.StringVar(&c.TeamPreset, "team-preset", "", "admission limits of a team without its own: hobby (10 sandboxes), pro (2,000), or none")
	fs.IntVar(&c.QueueMax, "queue-max", 100, "requests of a team that may wait for a slot; more get 429")
	fs.DurationVar(&c.QueueMaxWait, "queue-max-wait", time.Minute, "longest a request waits for a slot before 429")
	fs.BoolVar(&c.NoNetwork, "no-network", false, "loopback-only sandboxes: no veth, no egress, no port proxy")
	fs.TextVar(&c.NetworkPool, "network-pool", netns.DefaultPool, "IPv4 prefix sandboxes get their /30 from")
	fs.BoolVar(&c.NAT, "nat", false, "masquerade allowed sandbox egress out of this host (sets net.ipv4.ip_forward=1, nftables table ip paddock-nat)")
	fs.StringVar(&c.Domain, "domain", "localhost", "parent domain of port hosts: <port>-<id>.<domain>")
	fs.StringVar(&f.publicURL, "public-url", "", "public base URL of the port proxy (default http://<domain>:<listen port>)")
	fs.StringVar(&f.maxVolumeSize, "max-volume-size", "100G", "largest cap a volume may be created with")
	fs.StringVar(&f.sandboxDisk, "sandbox-disk", "10G", "disk cap of a sandbox's writable layer when its create gives none; 0 keeps layers uncapped on the data dir's filesystem (unsafe with many tenants)")
	fs.StringVar(&f.maxSandboxDisk, "max-sandbox-disk", "100G", "largest disk cap a sandbox may be created with")
	fs.IntVar(&f.teamMaxImages, "team-max-images", image.DefaultTeamMaxImages, "image refs a team may keep (0: no cap)")
	fs.IntVar(&f.teamMaxSnapshots, "team-max-snapshots", image.DefaultTeamMaxSnapshots, "snapshots a team may keep (0: no cap)")
	fs.StringVar(&f.teamMaxSnapshotBytes, "team-max-snapshot-bytes", "50G", "total size of a team's snapshots (0: no cap)")
	fs.IntVar(&f.teamMaxVolumes, "team-max-volumes", volume.DefaultTeamMaxVolumes, "volumes a team may keep (0: no cap)")
	fs.StringVar(&f.teamMaxVolumeBytes, "team-max-volume-bytes", "200G", "total of a team's volume sizes (0: no cap)")
	fs.StringVar(&f.stagingBytes, "upload-staging-bytes", "4G", "disk all image imports in flight may stage together under <data-dir>/tmp/uploads")
	historyRetention := fs.Duration("history-retention", daemon.DefaultHistoryRetention, "how long command history is kept (0: forever); each sandbox keeps its newest 1000 commands either way")
	fs.DurationVar(&c.UsageInterval, "usage-interval", metering.DefaultInterval, "how often running sandboxes' usage is sampled and budgets checked")
	fs.DurationVar(&c.UsageRetention, "usage-retention", metering.DefaultRawRetention, "how long usage samples are kept before they are rolled up per team, project and hour (at least 3h)")
	fs.StringVar(&c.Prices.Currency, "price-currency", "USD", "currency of the prices (a label)")
	fs.Float64Var(&c.Prices.CPUSecond, "price-cpu-second", 0, "price of one second of active CPU")
	fs.Float64Var(&c.Prices.MemoryGBHour, "price-memory-gb-hour", 0, "price of one GiB of provisioned memory for an hour")
	fs.Float64Var(&c.Prices.NetworkEgressGB, "price-egress-gb", 0, "price of one GB (10^9 bytes) sent by sandboxes")
	fs.Float64Var(&c.Prices.StorageGBMonth, "price-storage-gb-month", 0, "price of one GB of snapshots and volumes kept for a month (730 h)")
	fs.Float64Var(&c.Prices.Creation, "price-creation", 0, "price of one sandbox started")
	fs.DurationVar(&c.StoppedRetention, "stopped-retention", 24*time.Hour, "how long a stopped sandbox keeps its writable layer for snapshots before it is removed (the record stays); 0 keeps it until the sandbox is deleted")
	fs.Int64Var(&c.AppMaxBody, "app-max-body", app.DefaultMaxBody, "largest request body, in bytes, the app proxy forwards to a project's app")
	fs.DurationVar(&c.HealthTimeout, "health-timeout", 2*time.Minute, "how long a project's app may take to become healthy, unless the project sets its own")
	f.auth.register(fs)
	fs.BoolVar(&c.SourceAllowPrivate, "source-allow-private", false, "let git and tarball sources come from loopback and private addresses")
	fs.BoolVar(&c.ImageKeychain, "image-keychain", false, "let every team's image pulls without credentials use this server's docker logins (default: the host admin's only)")
	fs.BoolVar(&c.RegistryAllowPrivate, "registry-allow-private", false, "let image pulls reach registries on loopback and private addresses")
	fs.BoolVar(&c.WebhookAllowPrivate, "webhook-allow-private", false, "let webhook deliveries reach loopback and private addresses")
	fs.IntVar(&c.WebhookMaxBacklog, "webhook-max-backlog", events.DefaultMaxBacklog, "pending deliveries a webhook may hold; past it new events' deliveries are recorded as dropped, not sent")
	eventRetention := fs.Duration("event-retention", events.DefaultRetentionAge, "how long lifecycle events and their webhook delivery records are kept (0: forever)")
	eventMax := fs.Int64("event-max-count", events.DefaultMaxEvents, "how many lifecycle events are kept, the newest (0: no cap)")
	fs.StringVar(&f.metricsListen, "metrics-listen", "", "also serve /metrics WITHOUT authentication on this address (keep it on loopback or a private network; the main listener serves it to the host admin's token)")
	fs.Var((*prefixesFlag)(&c.EgressAllowCIDRs), "egress-allow-cidr", "a private range (RFC 1918, 100.64/10, ...) sandboxes, sources and image pulls may reach (repeatable)")
	fs.Var((*poolsFlag)(&c.Pools), "pool", "a warm pool set at start: name=N,min=N[,max=N][,image=REF|,snapshot=S][,runtime=R][,vcpus=N][,memory=MB][,disk=MB] (repeatable; see paddock pool)")
	fs.IntVar(&c.PoolConcurrency, "pool-concurrency", 2, "warm-pool sandboxes created at once in the background")
	fs.Var((*prefixesFlag)(&c.BlockCIDRs), "block-cidr", "a range no sandbox, source or image pull may reach, whatever its policy (repeatable)")
	fs.StringVar(&c.Runtime, "runtime", daemon.RuntimeRunc, "runtime of a sandbox whose create or project names none: runc, or gvisor (needs runsc; see paddock doctor and paddock runtimes); kubernetes runs every sandbox as a Pod instead (--k8s-*), none on this host")
	k := &c.Kubernetes
	fs.StringVar(&k.Kubeconfig, "kubeconfig", "", "with --runtime kubernetes: the kubeconfig reaching the cluster (default: the Pod's service account, paddock running in the cluster)")
	fs.StringVar(&k.Namespace, "k8s-namespace", os.Getenv(envSandboxNamespace), "with --runtime kubernetes: the namespace of the sandboxes' Pods (default $"+envSandboxNamespace+")")
	fs.StringVar(&k.AgentImage, "k8s-agent-image", "", "with --runtime kubernetes: the image holding the sandbox agent at /paddock-agent (paddock's own image does), run as each Pod's init container")
	fs.StringVar(&k.HostImage, "k8s-host-image", "", "with --runtime kubernetes: the registry image the image \"host\" stands for (default: none, \"host\" is refused)")
	fs.StringVar(&k.RuntimeClass, "k8s-runtime-class", "", "with --runtime kubernetes: the sandbox Pods' RuntimeClass (gvisor, kata...; default: the cluster's)")
	fs.Float64Var(&k.RequestFraction, "k8s-request-fraction", 1, "with --runtime kubernetes: the Pods' resource requests as a fraction of their limits, in (0, 1] (1: Guaranteed Pods)")
	fs.StringVar(&k.PullPolicy, "k8s-pull-policy", "IfNotPresent", "with --runtime kubernetes: the sandbox images' pull policy: Always, IfNotPresent or Never")
	fs.Var(stringsFlag{&k.ImagePullSecrets}, "k8s-image-pull-secret", "with --runtime kubernetes: a dockerconfigjson Secret of the sandbox namespace that every sandbox Pod lists, for nodes to pull private images and the snapshots pushed to --snapshot-registry (repeatable)")
	fs.StringVar(&c.SnapshotRegistry, "snapshot-registry", os.Getenv(envSnapshotRegistry), "the repository (host[:port]/path) snapshots are pushed to as images, with this server's docker logins: with --runtime kubernetes so that sandboxes made from them run as Pods (the cluster's nodes must be able to pull from it; none: such snapshots are refused), with runc or gvisor (snapshots of sandboxes of registry images) so that the other replicas sharing the store pull them; default $"+envSnapshotRegistry)
	fs.StringVar(&k.StorageClass, "k8s-storage-class", "", "with --runtime kubernetes: the StorageClass of the volumes' PersistentVolumeClaims (default: the cluster's default class)")
	fs.BoolVar(&k.HostUsers, "k8s-host-users", false, "with --runtime kubernetes: run the Pods in their node's user namespace (hostUsers: true), for nodes that cannot give each Pod its own (runc < 1.2): weaker, sandboxes then share per-uid kernel limits")
	fs.StringVar(&k.DNSListen, "k8s-dns-listen", "", "with --runtime kubernetes: serve the Pods' resolver on this host:port (UDP and TCP), their only nameserver, so that policies may allow egress by domain (with --k8s-dns-address; default: none, such policies are refused)")
	fs.TextVar(&k.DNSAddress, "k8s-dns-address", netip.Addr{}, "with --k8s-dns-listen: the nameserver the Pods are given (port 53), where they reach the resolver: the ClusterIP of a Service in front of paddock's Pods")
	fs.Var((*addrPortsFlag)(&k.DNSUpstream), "k8s-dns-upstream", "with --k8s-dns-listen: a DNS server (ip or ip:port) the resolver asks (repeatable; default: the nameservers of /etc/resolv.conf, in a Pod the cluster's DNS)")
	fs.StringVar(&k.DNSNamespace, "k8s-dns-namespace", os.Getenv(envPodNamespace), "with --k8s-dns-pod-label: the namespace of paddock's Pods (default $"+envPodNamespace+")")
	dnsPodLabels := envFlag{}
	fs.Var(dnsPodLabels, "k8s-dns-pod-label", "with --k8s-dns-listen: a label K=V of paddock's Pods, behind --k8s-dns-address's Service, which each sandbox's NetworkPolicy lets it ask on --k8s-dns-listen's port (repeatable)")
	fs.BoolVar(&c.NoUserNS, "no-userns", false, "run sandboxes without user namespaces: weaker, root in a sandbox is root on the host (for kernels without idmapped mounts; see paddock doctor)")
	userNSBase := fs.Uint("userns-base", uint(runc.DefaultIDBase), "first host uid/gid of the sandboxes' id ranges (65536 ids each, one range per sandbox)")
	fs.StringVar(&c.TLSCertFile, "tls-cert", "", "serve HTTPS with this PEM certificate chain (a wildcard *.<domain> covers port hosts); with --tls-key")
	fs.StringVar(&c.TLSKeyFile, "tls-key", "", "the PEM private key of --tls-cert")
	fs.BoolVar(&c.TLSDevCA, "tls-dev-ca", false, "serve HTTPS with certificates of a development CA made in <data-dir>/tls (trust <data-dir>/tls/dev-ca.pem through NODE_EXTRA_CA_CERTS or SSL_CERT_FILE)")
	fs.StringVar(&c.NodeName, "node-name", daemon.DefaultNodeName, "name of this host's sandbox records in the store (unique among hosts sharing one)")
	fs.StringVar(&c.MongoURI, "mongodb-uri", "", "keep everything in this MongoDB (mongodb://...) instead of SQLite in the data dir: the store replicas share (give each its own --node-name); default $"+envMongoURI+", which keeps a URI's password off the command line")
	fs.StringVar(&c.MongoDatabase, "mongodb-database", "paddock", "the database of --mongodb-uri")
	fs.StringVar(&c.AdvertiseURL, "advertise-url", os.Getenv(envAdvertiseURL), "with replicas sharing a store: the http://host:port where the others reach this one, to serve the sandboxes it runs (default $"+envAdvertiseURL+")")
	fs.DurationVar(&c.LeaseTTL, "lease-ttl", lease.DefaultTTL, "how long a replica's leases outlive their last renewal: a replica killed is replaced this long after")
	fs.DurationVar(&c.LeaseRenew, "lease-renew", 0, "how often a replica renews its leases, below half of --lease-ttl (0: a third of it, at most 5s)")
	fs.DurationVar(&c.OrphanGrace, "orphan-grace", 2*time.Minute, "how long the ready activations of a replica gone from the store wait for it to come back before another replica ends them")
	if err := fs.Parse(args); err != nil {
		return f, usagef("serve: %v", err)
	}
	if fs.NArg() > 0 {
		return f, usagef("serve: unexpected arguments %q", fs.Args())
	}
	if c.MongoURI == "" {
		c.MongoURI = os.Getenv(envMongoURI)
	}
	if len(dnsPodLabels) > 0 {
		k.DNSPodLabels = dnsPodLabels
	}
	if *userNSBase < 65536 || *userNSBase > 1<<32-1 {
		return f, usagef("serve: --userns-base must be in [65536, 4294967295]")
	}
	c.UserNSBase = uint32(*userNSBase)
	switch {
	case f.listen == "":
		return f, usagef("serve: --listen is empty")
	case c.DataDir == "":
		return f, usagef("serve: --data-dir is empty")
	case c.NodeName == "":
		return f, usagef("serve: --node-name is empty")
	case c.HealthTimeout <= 0:
		return f, usagef("serve: --health-timeout must be positive")
	}
	size, err := parseSize(f.maxVolumeSize)
	if err != nil {
		return f, usagef("serve: --max-volume-size: %v", err)
	}
	c.MaxVolumeSize = size
	if c.SandboxDiskMB, err = parseMB(f.sandboxDisk); err != nil {
		return f, usagef("serve: --sandbox-disk: %v", err)
	}
	if c.MaxSandboxDiskMB, err = parseMB(f.maxSandboxDisk); err != nil {
		return f, usagef("serve: --max-sandbox-disk: %v", err)
	}
	if c.MaxSandboxDiskMB == 0 {
		return f, usagef("serve: --max-sandbox-disk must be at least %dM", sandbox.MinDiskMB)
	}
	if f.teamMaxImages < 0 || f.teamMaxSnapshots < 0 || f.teamMaxVolumes < 0 {
		return f, usagef("serve: --team-max-* must not be negative (0: no cap)")
	}
	snapBytes, err := parseSize(f.teamMaxSnapshotBytes)
	if err != nil {
		return f, usagef("serve: --team-max-snapshot-bytes: %v", err)
	}
	volBytes, err := parseSize(f.teamMaxVolumeBytes)
	if err != nil {
		return f, usagef("serve: --team-max-volume-bytes: %v", err)
	}
	c.TeamMaxImages, c.TeamMaxSnapshots, c.TeamMaxSnapshotBytes = noCap(f.teamMaxImages), noCap(f.teamMaxSnapshots), noCap(snapBytes)
	c.TeamMaxVolumes, c.TeamMaxVolumeBytes = noCap(f.teamMaxVolumes), noCap(volBytes)
	if c.UploadStagingBytes, err = parseSize(f.stagingBytes); err != nil || c.UploadStagingBytes == 0 {
		return f, usagef("serve: --upload-staging-bytes: want a size such as 4G, got %q", f.stagingBytes)
	}
	if *historyRetention < 0 {
		return f, usagef("serve: --history-retention must not be negative (0: forever)")
	}
	c.HistoryRetention = noCap(*historyRetention)
	if *eventRetention < 0 || *eventMax < 0 || c.WebhookMaxBacklog <= 0 {
		return f, usagef("serve: --event-retention and --event-max-count must not be negative (0: no bound), --webhook-max-backlog must be positive")
	}
	c.EventRetention, c.EventMaxCount = noCap(*eventRetention), noCap(*eventMax)
	c.OIDC, c.ResetAdminToken = f.auth.oidc(), f.auth.resetAdminToken
	if c.OIDCClientSecret, err = f.auth.oidcClientSecret(); err != nil {
		return f, usagef("serve: %v", err)
	}
	c.OIDCRedirectURL = f.auth.oidcRedirectURL
	c.PublicURL = f.publicURL // checked here; serve fills in the default once it listens
	if err := c.Validate(); err != nil {
		return f, usagef("serve: %v", err)
	}
	return f, nil
}

// noCap maps a flag's 0 ("no cap") to the negative daemon.Config takes
// for it (its 0 is "the default").
func noCap[T int | int64 | time.Duration](v T) T {
	if v == 0 {
		return -1
	}
	return v
}

// prefixesFlag is a repeatable CIDR flag; a bare address is its /32 or /128.
type prefixesFlag []netip.Prefix

func (f *prefixesFlag) String() string {
	out := make([]string, len(*f))
	for i, p := range *f {
		out[i] = p.String()
	}
	return strings.Join(out, ",")
}

func (f *prefixesFlag) Set(s string) error {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		a, aerr := netip.ParseAddr(s)
		if aerr != nil {
			return err
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	*f = append(*f, p.Masked())
	return nil
}

// addrPortsFlag is a repeatable DNS server flag; a bare address is its
// port 53.
type addrPortsFlag []netip.AddrPort

func (f *addrPortsFlag) String() string {
	out := make([]string, len(*f))
	for i, a := range *f {
		out[i] = a.String()
	}
	return strings.Join(out, ",")
}

func (f *addrPortsFlag) Set(s string) error {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		a, aerr := netip.ParseAddr(s)
		if aerr != nil {
			return err
		}
		ap = netip.AddrPortFrom(a, 53)
	}
	*f = append(*f, ap)
	return nil
}

// publicBase is the proxy's public base URL: --public-url, else the
// domain with the listener's port ("http://localhost:7420", https when
// serving TLS).
func publicBase(f serveFlags, addr net.Addr) string {
	if f.publicURL != "" {
		return f.publicURL
	}
	port := 0
	if ta, ok := addr.(*net.TCPAddr); ok {
		port = ta.Port
	}
	return scheme(f.cfg) + "://" + net.JoinHostPort(f.cfg.Domain, strconv.Itoa(port))
}

// scheme is the listener's: https when it serves TLS.
func scheme(c daemon.Config) string {
	if c.TLSCertFile != "" || c.TLSDevCA {
		return "https"
	}
	return "http"
}

// serve runs the daemon behind an HTTP server until ctx ends, then drains
// and closes it. It listens first: the routes' public URL needs the port.
func serve(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	f, err := parseServeFlags(args, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close() // a no-op once the server has closed it
	var mln net.Listener
	if f.metricsListen != "" {
		if mln, err = net.Listen("tcp", f.metricsListen); err != nil {
			return fmt.Errorf("listen for metrics: %w", err)
		}
		defer mln.Close()
	}
	cfg := f.cfg
	cfg.PublicURL = publicBase(f, ln.Addr())
	if err := cfg.Validate(); err != nil {
		return usagef("serve: %v", err)
	}
	d, err := daemon.Start(ctx, cfg, daemon.WithLogger(log))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, d.Close()) }()

	url := scheme(cfg) + "://" + ln.Addr().String()
	clientPath := filepath.Join(cfg.DataDir, "client.json")
	adminToken, created := d.AdminToken()
	if err := updateClientConfig(clientPath, url, adminToken, d.DevCAPath()); err != nil {
		return err
	}
	if created {
		fmt.Fprintf(stdout, quickstart, url, adminToken, clientPath)
		if cfg.DataDir != defaultDataDir() {
			fmt.Fprintf(stdout, "This data dir is not the default: for the CLI, export PADDOCK_DATA_DIR=%s\n\n", cfg.DataDir)
		}
	} else {
		fmt.Fprintf(stdout, "paddock is serving at %s\n", url)
	}
	if ca := d.DevCAPath(); ca != "" {
		fmt.Fprintf(stdout, "TLS certificates come from the development CA %s: trust it with NODE_EXTRA_CA_CERTS=%[1]s or SSL_CERT_FILE=%[1]s\n", ca)
	}
	log.Info("paddock serving", "url", url, "dataDir", cfg.DataDir, "devCA", d.DevCAPath(), "version", version())

	// h2c as well as HTTP/1: gRPC and other HTTP/2 clients reach sandbox
	// ports without TLS, which a front proxy terminates. With TLS, h2
	// through ALPN and HTTP/1.1.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	tlsConfig := d.TLSConfig()
	if tlsConfig != nil {
		protocols.SetHTTP2(true)
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	hs := &http.Server{
		Handler:           d.Handler(),
		Protocols:         &protocols,
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// Log streams and long polls end at once on shutdown, with a clear
	// message; other requests get the grace period.
	hs.RegisterOnShutdown(d.CloseStreams)
	errc := make(chan error, 1)
	go func() { // owned: we wait for errc below
		if tlsConfig != nil {
			errc <- hs.ServeTLS(ln, "", "") // the certificate is in TLSConfig
			return
		}
		errc <- hs.Serve(ln)
	}()
	if mln != nil {
		if ap, err := netip.ParseAddrPort(mln.Addr().String()); err == nil && !ap.Addr().IsLoopback() {
			log.Warn("metrics are served without authentication on a non-loopback address", "addr", mln.Addr().String())
		}
		mux := http.NewServeMux()
		mux.Handle("GET "+daemon.MetricsPath, d.MetricsHandler())
		ms := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
		mdone := make(chan struct{})
		go func() { defer close(mdone); _ = ms.Serve(mln) }() // owned: closed and waited below
		defer func() { ms.Close(); <-mdone }()
		log.Info("metrics serving", "url", "http://"+mln.Addr().String()+daemon.MetricsPath)
	}

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down: draining requests", "grace", shutdownGrace)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		// Streams still open after the grace period are cut: closing the
		// connections cancels their request contexts.
		log.Warn("cutting open streams", "err", err)
		hs.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

const quickstart = `
paddock is serving at %[1]s

Admin token (shown only this once; its hash is stored):

    %[2]s

The CLI on this machine reads it from %[3]s. Quickstart:

    paddock demo                                  # an agent server as a project: activate, talk to it through the proxy
    paddock sandbox create                        # a sandbox of your own (prints its id)
    paddock sandbox exec <id> -- uname -a         # run a command in it

Elsewhere: export PADDOCK_URL=%[1]s PADDOCK_TOKEN=<token>

`

// updateClientConfig writes url, the development CA's file (or none), and
// the token when it is new, to client.json. A later start cannot recover
// the token from its hash, so it keeps the one already in the file.
func updateClientConfig(path, url, token, ca string) error {
	var cc clientConfig
	if data, err := os.ReadFile(path); err == nil {
		_ = json.Unmarshal(data, &cc) // a damaged file is rewritten below
	}
	if token == "" && cc.Token == "" {
		// No token to write: the admin token exists but its secret is gone.
		return nil
	}
	if token != "" {
		cc.Token = token
	}
	if cc.URL == url && cc.CA == ca && token == "" {
		return nil
	}
	cc.URL, cc.CA = url, ca
	data, err := json.MarshalIndent(cc, "", "  ")
	if err != nil {
		return fmt.Errorf("encode client config: %w", err)
	}
	return atomicfile.WriteFile(path, append(data, '\n'), 0o600)
}
