// Package daemon is paddock's one wiring: Start builds every subsystem of a
// `paddock serve` process from a Config (the runc driver, sandbox
// networking, the image store, volumes, sources, the store and
// authentication, the sandbox manager, the project control plane, the API,
// the Vercel layer and the proxies), Handler serves them all on one
// listener, and Close stops them in reverse order of start. It is the only
// package that picks concrete implementations, and it holds the adapters
// that only connect two packages (node to the server, node to the control
// plane, node's records to the store). cmd/paddock, the end-to-end tests
// and the benchmarks all start the stack through it.
package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/paddock-dev/paddock/internal/admission"
	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/control"
	"github.com/paddock-dev/paddock/internal/events"
	"github.com/paddock-dev/paddock/internal/httperr"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/lease"
	"github.com/paddock-dev/paddock/internal/metering"
	"github.com/paddock-dev/paddock/internal/metrics"
	"github.com/paddock-dev/paddock/internal/netguard"
	"github.com/paddock-dev/paddock/internal/netns"
	"github.com/paddock-dev/paddock/internal/node"
	"github.com/paddock-dev/paddock/internal/pool"
	"github.com/paddock-dev/paddock/internal/proxy"
	"github.com/paddock-dev/paddock/internal/proxy/app"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/runtime/agentbin"
	"github.com/paddock-dev/paddock/internal/runtime/gvisor"
	"github.com/paddock-dev/paddock/internal/runtime/runc"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/server"
	"github.com/paddock-dev/paddock/internal/server/compat/e2b"
	"github.com/paddock-dev/paddock/internal/server/compat/e2b/envd"
	"github.com/paddock-dev/paddock/internal/server/compat/vercel"
	"github.com/paddock-dev/paddock/internal/source"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/mongo"
	"github.com/paddock-dev/paddock/internal/store/sqlite"
	"github.com/paddock-dev/paddock/internal/volume"
	"github.com/paddock-dev/paddock/internal/volume/claim"
	"github.com/paddock-dev/paddock/internal/web"
)

// gcInterval is how often the image store is swept: snapshots expire by
// age, not by a request.
const gcInterval = time.Hour

// Daemon is one running paddock stack.
type Daemon struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex // guards closers and closed
	closers []closer   // pushed as each subsystem starts; Close pops them
	closed  bool

	driver  runtime.Driver
	network *netns.Manager // nil: loopback-only sandboxes
	images  *image.Store
	volumes volumeStore // nil: no volumes here
	store   store.Store
	auth    *auth.Authenticator
	node    *node.Manager
	pools   *pool.Manager
	admit   *admission.Controller
	signer  *proxy.Signer // nil without networking
	control *control.Service
	meter   *metering.Meter
	server  *server.Server
	vercel  *vercel.Handler
	handler http.Handler
	tls     *tls.Config // nil: plain HTTP
	devCA   string      // the development CA's certificate file, if any

	// drivers are the runtimes that run here beside driver (the default
	// one's), unavailable the ones that do not, with why (node.Config's
	// fields of the same names).
	drivers     []runtime.Driver
	unavailable map[string]string
	// kube is the kubernetes runtime's client, for the volumes' claims;
	// nil with another runtime.
	kube kubernetes.Interface

	// metrics is every Prometheus series of the process; bus and webhooks
	// carry lifecycle events (observe.go).
	metrics  *metrics.Registry
	bus      *events.Bus
	webhooks *events.Webhooks
	// background is the lease of the work that runs once among the
	// replicas sharing the store (leases.go).
	background *lease.Keeper
	// lookedAt is when takeover last looked for gone replicas' sandboxes;
	// only control's loop calls it (takeover.go). closing ends a takeover
	// under way when the daemon closes, before control waits for its loop.
	lookedAt time.Time
	closing  context.Context

	adminToken   string
	adminCreated bool

	// secretsKey encrypts project secrets and seals dashboard sessions.
	secretsKey []byte
}

// closer stops one subsystem.
type closer struct {
	name  string
	close func() error
}

// push registers what stops a subsystem that has just started.
func (d *Daemon) push(name string, close func() error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closers = append(d.closers, closer{name, close})
}

// Start builds and starts the stack. On error, what had started is closed
// again and no Daemon is returned. ctx bounds the start only: the daemon
// runs until Close.
func Start(ctx context.Context, cfg Config, opts ...Option) (_ *Daemon, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	if cfg.NodeName == "" {
		cfg.NodeName = DefaultNodeName
	}
	d := &Daemon{cfg: cfg, log: o.log, metrics: metrics.New()}
	defer func() {
		if err != nil {
			err = errors.Join(err, d.Close())
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	// Again on every start: MkdirAll leaves an existing dir as it was, and
	// systemd's StateDirectory= makes it 0755, which would let any local
	// user walk to layers (set-id binaries of a tenant's image) and keys.
	if err := os.Chmod(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("make data dir private: %w", err)
	}
	steps := []struct {
		what  string
		start func(context.Context, *options) error
	}{
		{"load the TLS certificate", d.startTLS},
		{"start the sandbox driver", d.startDriver},
		{"start sandbox networking (or run with --no-network)", d.startNetwork},
		{"open the store", d.startStore},
		{"open the image store", d.startImages},
		{"take this replica's leases", d.startLeases},
		{"start admission", d.startAdmission},
		{"start lifecycle events and webhooks", d.startEvents},
		{"start the sandbox manager", d.startNode},
		{"start the warm pools", d.startPools},
		{"start projects", d.startControl},
		{"start metering", d.startMeter},
		{"start the API", d.startFront},
	}
	for _, s := range steps {
		if err := s.start(ctx, &o); err != nil {
			return nil, fmt.Errorf("%s: %w", s.what, err)
		}
	}
	return d, nil
}

func (d *Daemon) startDriver(ctx context.Context, o *options) error {
	if o.driver != nil {
		d.driver, d.drivers = o.driver, o.moreDrivers
		return nil
	}
	if d.cfg.Runtime == RuntimeKubernetes {
		drv, err := d.startKubernetes()
		if err != nil {
			return err
		}
		d.driver = drv
		return nil
	}
	agentPath := o.agentPath
	if agentPath == "" {
		p, err := agentbin.Path(ctx, filepath.Join(d.cfg.DataDir, "bin"))
		if err != nil {
			return fmt.Errorf("locate the sandbox agent: %w", err)
		}
		agentPath = p
	}
	initPath := o.initPath
	if initPath == "" && o.agentPath == "" {
		p, err := agentbin.InitPath(ctx, filepath.Join(d.cfg.DataDir, "bin"))
		if err != nil {
			d.log.Warn("paddock-init not found: sandboxes start from paddock's own binary, which costs each start about 14 ms of CPU more", "err", err)
		}
		initPath = p
	}
	drv, err := runc.New(runc.Config{DataDir: d.cfg.DataDir, AgentPath: agentPath, InitPath: initPath, Logger: d.log,
		NoUserNS: d.cfg.NoUserNS, IDBase: d.cfg.UserNSBase,
		// Disks of the default size are made ahead of time.
		PoolDiskMB: d.cfg.SandboxDiskMB})
	if err != nil {
		return err
	}
	d.push("runc driver", drv.Close) // sandboxes keep running; the next start adopts them
	gv, why := d.startGVisor(agentPath)
	switch d.cfg.Runtime {
	case RuntimeGVisor:
		if gv == nil {
			return fmt.Errorf("the default runtime gvisor is unavailable: %s", why)
		}
		d.driver, d.drivers = gv, []runtime.Driver{drv}
	default:
		d.driver = drv
		if gv != nil {
			d.drivers = []runtime.Driver{gv}
		}
	}
	if gv == nil {
		d.unavailable = map[string]string{RuntimeGVisor: why}
	}
	if caps := d.driver.Capabilities(); d.cfg.SandboxDiskMB > 0 && !caps.DiskCap {
		d.log.Error("sandbox disk caps are unavailable on this host: every sandbox create is refused until paddock doctor's disk check passes, or until paddock runs with --sandbox-disk 0 (writable layers uncapped)",
			"sandboxDiskMB", d.cfg.SandboxDiskMB, "runtime", caps.Name)
	}
	return nil
}

// startGVisor starts the gVisor driver, or says why it cannot run here
// (runsc not found, not root, not Linux) and how to fix it: then sandboxes
// run on runc only, and a create asking for gvisor is refused with that.
func (d *Daemon) startGVisor(agentPath string) (*gvisor.Driver, string) {
	gv, err := gvisor.New(gvisor.Config{DataDir: d.cfg.DataDir, AgentPath: agentPath, Logger: d.log})
	if err != nil {
		why := err.Error() + " (paddock doctor checks it)"
		d.log.Info("gvisor runtime unavailable", "why", why)
		return nil, why
	}
	d.push("gvisor driver", gv.Close) // sandboxes keep running; the next start adopts them
	return gv, ""
}

func (d *Daemon) startNetwork(_ context.Context, o *options) error {
	// Pods have the cluster's network, and no sandbox runs here.
	if d.cfg.NoNetwork || d.cfg.Runtime == RuntimeKubernetes {
		return nil
	}
	nm, err := netns.New(netns.Config{DataDir: d.cfg.DataDir, Pool: d.cfg.pool(), NAT: d.cfg.NAT,
		AllowPrivate: d.cfg.EgressAllowCIDRs, BlockCIDRs: d.cfg.BlockCIDRs, Upstream: o.dnsUpstream, Logger: d.log})
	if err != nil {
		return err
	}
	d.push("sandbox networking", nm.Close) // stops the resolvers; networks stay for the next start
	d.network = nm
	return nil
}

// startImages opens this host's image store, after the store: its refs
// are shared with the other replicas through the store's image directory,
// and at Close the store outlives the pulls that record into it.
func (d *Daemon) startImages(ctx context.Context, _ *options) error {
	images, err := image.OpenStore(filepath.Join(d.cfg.DataDir, "images"), image.StoreOptions{Logger: d.log,
		TeamMaxImages: d.cfg.TeamMaxImages, TeamMaxSnapshots: d.cfg.TeamMaxSnapshots, TeamMaxSnapshotBytes: d.cfg.TeamMaxSnapshotBytes,
		SnapshotRegistry: d.cfg.SnapshotRegistry,
		Guard:            netguard.Guard{AllowPrivate: d.cfg.RegistryAllowPrivate, Allow: d.cfg.EgressAllowCIDRs, Deny: d.cfg.deny()}})
	if err != nil {
		return err
	}
	d.push("image store", images.Close) // cancels and waits for pulls
	d.images = images
	return images.ShareRefs(ctx, imageDirectory{s: d.store, replica: d.cfg.NodeName})
}

// startStore opens the store (MongoDB at Config.MongoURI, else SQLite at
// <data>/paddock.db, unless one was given): teams, users, tokens, the sandboxes' records and history, the
// projects' control plane; then authentication over it.
func (d *Daemon) startStore(ctx context.Context, o *options) error {
	st := o.store
	if st == nil && d.cfg.MongoURI != "" {
		dbName := d.cfg.MongoDatabase
		if dbName == "" {
			dbName = "paddock"
		}
		db, err := mongo.Open(ctx, d.cfg.MongoURI, dbName)
		if err != nil {
			return err
		}
		d.push("store", db.Close)
		st = db
	}
	if st == nil {
		db, err := sqlite.Open(filepath.Join(d.cfg.DataDir, storeFile))
		if err != nil {
			return err
		}
		d.push("store", db.Close)
		st = db
	}
	d.store = st
	a, secret, created, err := startAuth(ctx, st, d.cfg.DataDir, d.cfg.OIDC, d.cfg.ResetAdminToken, d.log)
	if err != nil {
		return err
	}
	d.auth, d.adminToken, d.adminCreated = a, secret, created
	return nil
}

// startAdmission starts the admission of creates (internal/admission) on
// the store, before the sandbox manager whose records tell it which
// sandboxes ended; its host limit asks the manager once that runs.
func (d *Daemon) startAdmission(ctx context.Context, o *options) error {
	acfg := admission.Config{Store: d.store, Replica: d.cfg.NodeName, Logger: d.log,
		Defaults: admission.TeamLimits{Preset: d.cfg.TeamPreset}, MaxQueue: d.cfg.QueueMax, MaxWait: d.cfg.QueueMaxWait,
		Host: func() (int, int) {
			if d.node == nil {
				return 0, 1 << 30
			}
			return d.node.Capacity()
		},
		ObserveWait: d.metrics.ObserveQueueWait}
	if acfg.Replica == "" {
		acfg.Replica = DefaultNodeName
	}
	if o.admissionConfig != nil {
		o.admissionConfig(&acfg)
	}
	a, err := admission.New(acfg)
	if err != nil {
		return err
	}
	if err := a.Start(ctx); err != nil {
		return err
	}
	d.push("admission", a.Close) // fails who still waits; after the sandbox manager and control stopped
	d.admit = a
	d.metrics.RegisterQueue(a)
	return nil
}

// startNode starts the sandbox manager with what it drives: volumes and
// sources (which need no closing of their own beyond the fetcher's idle
// connections), then the periodic image GC that asks it which layers its
// sandboxes use.
func (d *Daemon) startNode(ctx context.Context, o *options) error {
	if err := d.openVolumes(o); err != nil {
		return err
	}
	srcs, err := d.openSources()
	if err != nil {
		return err
	}
	d.push("source fetcher", srcs.Close)
	if err := d.newMeter(); err != nil {
		return err
	}
	ncfg := node.Config{
		Records:        &nodeRecords{s: d.store, node: d.cfg.NodeName, ended: d.admit.Released},
		Peers:          &peers{s: d.store, self: d.cfg.NodeName, now: time.Now},
		History:        newNodeHistory(d.store, d.meter),
		Images:         d.images,
		DataDir:        d.cfg.DataDir,
		Driver:         d.driver,
		Drivers:        d.drivers,
		Unavailable:    d.unavailable,
		DefaultTimeout: d.cfg.DefaultTimeout,
		MaxTimeout:     d.cfg.MaxTimeout,
		MaxSandboxes:   d.cfg.MaxSandboxes,
		// DiskMB 0 leaves the layers of sandboxes created without a cap
		// uncapped.
		DefaultResources: sandbox.Resources{DiskMB: d.cfg.SandboxDiskMB},
		MaxResources:     sandbox.Resources{DiskMB: d.cfg.MaxSandboxDiskMB},
		StoppedRetention: d.cfg.StoppedRetention,
		SnapshotRegistry: d.cfg.SnapshotRegistry,
		Logger:           d.log,
		Sources:          srcs,
		Observer:         nodeObserver{metrics: d.metrics, bus: d.bus},
	}
	if d.network != nil { // a nil *netns.Manager must not become a non-nil interface
		ncfg.Network = d.network
	}
	if d.volumes != nil {
		ncfg.Volumes = d.volumes
	}
	if o.nodeConfig != nil {
		o.nodeConfig(&ncfg)
	}
	mgr, err := node.New(ncfg)
	if err != nil {
		return err
	}
	d.push("sandbox manager", mgr.Close) // sandboxes keep running; the next start re-adopts them
	d.node = mgr
	if err := mgr.Start(ctx); err != nil {
		return err
	}
	// Layers left by images removed before a crash; the sandboxes' own are kept.
	if err := d.images.GC(ctx, mgr.LayerInUse); err != nil {
		d.log.Warn("image gc", "err", err)
	}
	d.startGC()
	d.metrics.RegisterSandboxes(metricsSandboxes{d.node})
	return nil
}

// volumeStore is what the node and the server need of named volumes: the
// host's (*volume.Manager) or, with the kubernetes runtime, the cluster's
// PersistentVolumeClaims (*claim.Manager).
type volumeStore interface {
	node.Volumes
	server.Volumes
}

var (
	_ volumeStore = (*volume.Manager)(nil)
	_ volumeStore = (*claim.Manager)(nil)
)

// openVolumes opens <data>/volumes, or warns and goes on without volumes
// when the host lacks what they need (root, mkfs.ext4, loop devices); node
// and server then refuse volumes as unsupported.
func (d *Daemon) openVolumes(o *options) error {
	if d.cfg.Runtime == RuntimeKubernetes {
		return d.openClaims()
	}
	if why := volume.Available(); why != "" {
		d.log.Warn("volumes disabled", "why", why)
		return nil
	}
	vcfg := volume.Config{Dir: filepath.Join(d.cfg.DataDir, "volumes"), MaxSize: d.cfg.MaxVolumeSize, Logger: d.log,
		TeamMaxVolumes: d.cfg.TeamMaxVolumes, TeamMaxBytes: d.cfg.TeamMaxVolumeBytes,
		// Volumes made before names were per team and with no team were
		// every team's to mount; they become the host admin's.
		LegacyTeam: auth.BootstrapTeamID}
	if vcfg.MaxSize == 0 {
		vcfg.MaxSize = volume.DefaultMaxSize
	}
	vcfg.DefaultSize = min(volume.DefaultSize, vcfg.MaxSize)
	if o.volumeConfig != nil {
		o.volumeConfig(&vcfg)
	}
	m, err := volume.Open(vcfg)
	if err != nil {
		return fmt.Errorf("open volumes: %w", err)
	}
	d.volumes = m
	return nil
}

// openSources makes the fetcher of git and tarball sources. Its temp dir is
// paddock's own (not /tmp, often a small tmpfs); what a crash left there is
// removed. Sources never reach the sandbox pool.
func (d *Daemon) openSources() (*source.Fetcher, error) {
	tmp := filepath.Join(d.cfg.DataDir, "tmp", "sources")
	if err := os.RemoveAll(tmp); err != nil {
		return nil, fmt.Errorf("clean the sources' temp dir: %w", err)
	}
	// Sources never reach the sandbox pool nor the blocked ranges.
	scfg := source.Config{TempDir: tmp, AllowPrivate: d.cfg.SourceAllowPrivate, Allow: d.cfg.EgressAllowCIDRs,
		Deny: d.cfg.deny(), Logger: d.log}
	f, err := source.New(scfg)
	if err != nil {
		return nil, fmt.Errorf("start the source fetcher: %w", err)
	}
	return f, nil
}

// startGC sweeps the image store (this host's) every gcInterval until
// Close, and, by the background lease's holder, prunes old command history
// and expires the snapshots gone replicas left in the snapshot directory
// (the store's): those once at start too.
func (d *Daemon) startGC() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { // owned: the closer below cancels and waits
		defer close(done)
		d.pruneHistory(ctx)
		d.expireAbandonedSnapshots(ctx)
		t := time.NewTicker(gcInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := d.images.GC(ctx, d.node.LayerInUse); err != nil {
					d.log.Warn("image gc", "err", err)
				}
				d.pruneHistory(ctx)
				d.expireAbandonedSnapshots(ctx)
			}
		}
	}()
	d.push("image gc", func() error { cancel(); <-done; return nil })
}

// pruneHistory deletes commands started longer ago than the history
// retention (none when it is negative). The store's history is every
// replica's: only the background lease's holder prunes it.
func (d *Daemon) pruneHistory(ctx context.Context) {
	keep := d.cfg.historyRetention()
	if keep < 0 || !d.leader() {
		return
	}
	n, err := d.store.PruneCommands(ctx, time.Now().Add(-keep))
	if err != nil {
		d.log.Warn("prune command history", "err", err)
		return
	}
	if n > 0 {
		d.log.Info("pruned command history", "commands", n, "olderThan", keep)
	}
}

// startPools starts the warm pools over the sandbox manager: they adopt
// the idle sandboxes of the last run (node has re-adopted them) and start
// refilling. Their closer runs before node's: refills end first.
func (d *Daemon) startPools(ctx context.Context, _ *options) error {
	pm, err := pool.New(pool.Config{Sandboxes: d.node, File: filepath.Join(d.cfg.DataDir, poolsFile), Pools: d.cfg.Pools,
		Concurrency: d.cfg.PoolConcurrency, Logger: d.log})
	if err != nil {
		return err
	}
	d.push("warm pools", pm.Close) // idle sandboxes keep running; the next start adopts them
	d.pools = pm
	d.metrics.RegisterPools(pm)
	return pm.Start(ctx)
}

// poolsFile keeps the pools set through the API, under the data dir.
const poolsFile = "pools.json"

// startControl starts the project control plane and the app proxy in
// front of its apps; with networking (the host's, or a driver's own),
// first the signing key of port and app URLs.
func (d *Daemon) startControl(ctx context.Context, o *options) error {
	if d.network != nil || d.ownNetworks() {
		key, err := loadProxyKey(d.cfg.DataDir)
		if err != nil {
			return err
		}
		d.signer = &proxy.Signer{Key: key}
	}
	key, err := loadSecretsKey(d.cfg.DataDir)
	if err != nil {
		return err
	}
	d.secretsKey = key
	ccfg := control.Config{CheckRuntime: d.node.CheckRuntime, Store: d.store, Sandboxes: controlSandboxes{Manager: d.node, pools: d.pools, images: d.images}, Admission: d.admit,
		DataDir: d.cfg.DataDir, Logger: d.log, Key: key, HealthTimeout: d.cfg.HealthTimeout, Budget: d.budgetGate, Events: d.bus,
		Replica: d.cfg.NodeName, Sweep: d.sweep, OrphanGrace: d.cfg.OrphanGrace}
	if o.controlConfig != nil {
		o.controlConfig(&ccfg)
	}
	var stopTakeover context.CancelFunc
	d.closing, stopTakeover = context.WithCancel(context.Background())
	svc, err := control.New(ccfg)
	if err != nil {
		stopTakeover()
		return err
	}
	d.push("control plane", svc.Close)                                      // activations stop before the sandbox manager
	d.push("sandbox takeover", func() error { stopTakeover(); return nil }) // before control waits for its sweep
	d.control = svc
	return svc.Start(ctx)
}

// startFront builds the HTTP side: the app proxy, the API, the Vercel
// layer on the same services and tokens, and with networking the port
// proxy; Handler serves them on one listener.
func (d *Daemon) startFront(ctx context.Context, o *options) error {
	authn := d.auth
	apps, err := app.New(app.Config{
		Resolve: func(ctx context.Context, p auth.Principal, projectID string) (app.Target, error) {
			t, err := d.control.AppTarget(ctx, p, projectID)
			return app.Target(t), err
		},
		Authenticate: func(r *http.Request) (auth.Principal, error) {
			token, _ := auth.BearerToken(r.Header.Get("Authorization"))
			return authn.AuthenticateBearer(r.Context(), token)
		},
		Signer:        d.signer,
		Domain:        d.cfg.Domain,
		Touch:         d.control.Touch,
		MaxBodyBytes:  d.cfg.AppMaxBody,
		SecureCookies: d.cfg.secureCookies(),
		Logger:        d.log,
	})
	if err != nil {
		return fmt.Errorf("app proxy: %w", err)
	}
	d.push("app proxy", apps.Close)

	// New sandboxes and forks pass the budgets' gate first (a capped team
	// does not wait in the queue to be refused), then admission, then the
	// pools: a claim takes a team's slot as a cold create does.
	sandboxes := budgetedSandboxes{frontSandboxes: admittedSandboxes{frontSandboxes: warmSandboxes{Manager: d.node, pools: d.pools}, adm: d.admit}, gate: d.budgetGate}
	snapshots := serverSnapshots{store: d.images, node: d.node, adm: d.admit, gate: d.budgetGate}
	var portBase string
	if d.signer != nil {
		portBase = d.cfg.PublicURL
	}
	scfg := server.Config{
		Sandboxes: sandboxes, Auth: authn, Accounts: authn, Logger: d.log, MaxUploadBytes: o.maxUploadBytes,
		Runtimes: d.node,
		// Not /tmp: often a small tmpfs, and not emptied when paddock dies;
		// the server empties this one as it starts.
		StagingDir: filepath.Join(d.cfg.DataDir, "tmp", "uploads"), StagingBytes: d.cfg.UploadStagingBytes,
		Images: serverImages{Store: d.images, node: d.node}, ImageKeychain: d.cfg.ImageKeychain, Snapshots: snapshots,
		History: d.store, Metering: d.meter, Projects: d.control, Apps: d.metrics.InstrumentProxy("app", apps.PathHandler()), Signer: d.signer, PortBaseURL: portBase,
		Pools: d.pools, Admission: d.admit, Ready: d.ready, Events: d.bus, Webhooks: d.webhooks,
	}
	if d.volumes != nil {
		scfg.Volumes = d.volumes
	}
	srv, err := server.New(scfg)
	if err != nil {
		return err
	}
	d.push("API streams", func() error { srv.CloseStreams(); return nil })
	d.server = srv

	vstore, err := vercel.OpenStore(ctx, d.store, d.cfg.DataDir, d.log)
	if err != nil {
		return err
	}
	// Team-aware: teamId names a team the token may use; sandboxes made there are that team's.
	vapi, err := vercel.New(vercel.Config{Sandboxes: sandboxes, Snapshots: snapshots, Auth: authn, Teams: authn,
		Store: vstore, Signer: d.signer, PortBaseURL: portBase, Usage: d.meter, Logger: d.log, MaxUploadBytes: o.maxUploadBytes})
	if err != nil {
		return err
	}
	d.push("Vercel streams", func() error { vapi.CloseStreams(); return nil })
	d.vercel = vapi

	// The E2B data plane's tokens come from the signing key of port URLs
	// (made here too when networking is off): replicas that share it check
	// each other's tokens.
	tokenKey, err := loadProxyKey(d.cfg.DataDir)
	if err != nil {
		return err
	}
	envdTokens, err := envd.NewTokens(tokenKey)
	if err != nil {
		return err
	}
	eapi, err := e2b.New(e2b.Config{Sandboxes: sandboxes, Auth: authn, Records: d.store, Snapshots: snapshots,
		Tokens: envdTokens, Domain: e2bDomain(d.cfg), Logger: d.log})
	if err != nil {
		return err
	}
	e2bHost := ""
	if d.cfg.Domain != "" {
		e2bHost = "api." + d.cfg.Domain
	}

	// The dashboard reads through the API's own handler with the
	// session's token, so it sees what the API would answer that token.
	// Its requests are requests of their own: another replica's sandbox
	// is read there with the session's token, as any API client would.
	dashboard, err := web.New(web.Config{API: httperr.Forwarding(d.cfg.NodeName, d.log, srv.Handler()), Auth: authn, SecretsKey: d.secretsKey,
		SecureCookies: d.cfg.secureCookies(), OIDC: d.cfg.oidcLogin(), Logger: d.log})
	if err != nil {
		return fmt.Errorf("dashboard: %w", err)
	}

	// A prefix check rather than a ServeMux, which would redirect unclean
	// paths that the API answers itself.
	metricsHandler := d.adminOnly(d.metrics.Handler())
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, vercel.Prefix+"/"):
			vapi.ServeHTTP(w, r)
		case strings.HasPrefix(r.URL.Path, e2b.Prefix+"/") || e2bHost != "" && hostOnly(r.Host) == e2bHost:
			eapi.ServeHTTP(w, r)
		case r.URL.Path == MetricsPath:
			metricsHandler.ServeHTTP(w, r)
		case web.Handles(r.URL.Path):
			dashboard.ServeHTTP(w, r)
		default:
			srv.Handler().ServeHTTP(w, r)
		}
	})
	var px *proxy.Proxy
	if d.signer != nil {
		px, err = proxy.New(proxy.Config{Domain: d.cfg.Domain, Signer: d.signer, Resolver: portTargets{d.node}, Authorizer: srv,
			Activity: d.node.Touch, Logger: d.log, SecureCookies: d.cfg.secureCookies()})
		if err != nil {
			return fmt.Errorf("port proxy: %w", err)
		}
		d.push("port proxy", px.Close)
	}
	var front server.PortProxy
	if px != nil {
		front = instrumentedPorts{px, d.metrics.InstrumentProxy("port", px), d.metrics.InstrumentProxy("port", px.PathHandler())}
	}
	ecfg := envd.Config{Sandboxes: sandboxes, Tokens: envdTokens, Domain: d.cfg.Domain, Logger: d.log}
	if front != nil {
		ecfg.Ports, ecfg.Signer = front.PathHandler(), d.signer
	}
	eplane, err := envd.New(ecfg)
	if err != nil {
		return err
	}
	all := server.Front(api, front, instrumentedHost{apps, d.metrics.InstrumentProxy("app", apps)})
	// E2B's data plane goes first: its single host form may be paddock's
	// own address (E2B_SANDBOX_URL), told apart by the E2b-Sandbox-Id header.
	// Every surface may hand a request for another replica's sandbox to
	// that replica (peers.go): Forwarding tells them whether it still can.
	d.handler = httperr.Forwarding(d.cfg.NodeName, d.log, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if eplane.Claims(r) {
			eplane.ServeHTTP(w, r)
			return
		}
		all.ServeHTTP(w, r)
	}))
	return nil
}

// e2bDomain is the domain E2B's SDKs are told their sandboxes live under:
// paddock's domain with the public URL's port, since they build
// <port>-<id>.<domain> from it.
func e2bDomain(c Config) string {
	if c.Domain == "" {
		return ""
	}
	u, err := url.Parse(c.PublicURL)
	if err != nil || u.Port() == "" {
		return c.Domain
	}
	return net.JoinHostPort(c.Domain, u.Port())
}

// hostOnly is a Host header without its port, lower-cased.
func hostOnly(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return strings.ToLower(host)
}

// Handler serves the whole front: the API (/api/v1) and its probes
// (/healthz, /readyz), the Vercel layer (/compat/vercel), the E2B layer
// (/compat/e2b and the host api.<domain>), its data plane (envd on
// 49983-<id>.<domain>, sandbox.<domain> and requests with E2B's sandbox
// headers), the port proxy
// (<port>-<id>.<domain> and /s/<id>/<port>/) and the app proxy
// (app-<id>.<domain>; its path form is an API route).
func (d *Daemon) Handler() http.Handler { return d.handler }

// CloseStreams ends open log streams and long polls of the API and the
// Vercel layer, so that a graceful shutdown need not wait for them:
// register it with http.Server.RegisterOnShutdown. Close calls it too.
func (d *Daemon) CloseStreams() {
	d.server.CloseStreams()
	d.vercel.CloseStreams()
}

// Close stops every subsystem, in reverse order of start, and returns
// their errors joined. Sandboxes keep running: the next Start re-adopts
// them. Stop serving Handler first. Safe on a nil Daemon and when called
// again.
func (d *Daemon) Close() error {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	closers := d.closers
	d.closers, d.closed = nil, true
	d.mu.Unlock()
	var errs []error
	for i := len(closers) - 1; i >= 0; i-- {
		if err := closers[i].close(); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", closers[i].name, err))
		}
	}
	return errors.Join(errs...)
}

// ready is GET /readyz's check: the store answers, and the sandbox
// manager has re-adopted this host's sandboxes and is not shutting down.
func (d *Daemon) ready(ctx context.Context) error {
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return sandbox.Errorf(sandbox.ErrUnavailable, "shutting_down", "paddock is shutting down")
	}
	// Any answer but an error of its own proves the store reachable: the
	// bootstrap team exists from the first start on.
	if _, err := d.store.GetTeam(ctx, auth.BootstrapTeamID); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
		return fmt.Errorf("%w: %w", sandbox.Errorf(sandbox.ErrUnavailable, "store_unavailable", "the store does not answer"), err)
	}
	return d.node.Ready()
}

// AdminToken is the host admin token's secret when this start made it
// (the first start on a data dir, or Config.ResetAdminToken), with created
// true; otherwise "" and false, since only its hash is kept.
func (d *Daemon) AdminToken() (secret string, created bool) { return d.adminToken, d.adminCreated }

// The accessors below hand out the daemon's subsystems for tests,
// benchmarks and the CLI's own wiring needs (an operator's token, a
// stand-in image); requests go through Handler.

// Node is the sandbox manager.
func (d *Daemon) Node() *node.Manager { return d.node }

// Images is the image store.
func (d *Daemon) Images() *image.Store { return d.images }

// Store is the store everything is kept in.
func (d *Daemon) Store() store.Store { return d.store }

// Auth is the authenticator: teams and tokens.
func (d *Daemon) Auth() *auth.Authenticator { return d.auth }

// Signer signs port and app URLs; nil without networking.
func (d *Daemon) Signer() *proxy.Signer { return d.signer }

// Network is the sandbox network manager; nil without networking.
func (d *Daemon) Network() *netns.Manager { return d.network }

// Pools is the warm pools.
func (d *Daemon) Pools() *pool.Manager { return d.pools }

// Projects is the project control plane.
func (d *Daemon) Projects() *control.Service { return d.control }
