package main

import (
	"context"
	"crypto/rand"
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

	"github.com/paddock-dev/paddock/internal/control"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/netns"
	"github.com/paddock-dev/paddock/internal/node"
	"github.com/paddock-dev/paddock/internal/proxy"
	"github.com/paddock-dev/paddock/internal/runtime/agentbin"
	"github.com/paddock-dev/paddock/internal/runtime/runc"
	"github.com/paddock-dev/paddock/internal/server"
	"github.com/paddock-dev/paddock/internal/server/compat/vercel"
	"github.com/paddock-dev/paddock/internal/server/nodeadapter"
	"github.com/paddock-dev/paddock/internal/source"
	"github.com/paddock-dev/paddock/internal/store/noderecords"
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
}

type serveConfig struct {
	listen         string
	dataDir        string
	defaultTimeout time.Duration
	maxTimeout     time.Duration
	maxSandboxes   int
	noNetwork      bool
	networkPool    string
	nat            bool
	domain         string
	publicURL      string
	maxVolumeSize  string
	appMaxBody     int64
	healthTimeout  time.Duration
	auth           authFlags
	// sourceAllowPrivate lets git and tarball sources come from loopback
	// and private addresses (a LAN git server, tests).
	sourceAllowPrivate bool
	// nodeName names this host's sandbox records in the store.
	nodeName string
	// imageKeychain lets every team's image pulls use the server's docker
	// keychain; without it only the host admin's do.
	imageKeychain bool
}

func (c serveConfig) Validate() error {
	switch {
	case c.listen == "":
		return usagef("serve: --listen is empty")
	case c.dataDir == "":
		return usagef("serve: --data-dir is empty")
	case c.nodeName == "":
		return usagef("serve: --node-name is empty")
	case c.defaultTimeout < 0 || c.maxTimeout < 0 || c.maxSandboxes < 0:
		return usagef("serve: timeouts and --max-sandboxes must not be negative")
	case c.healthTimeout <= 0:
		return usagef("serve: --health-timeout must be positive")
	}
	if c.noNetwork && c.nat {
		return usagef("serve: --nat needs sandbox networking: drop --no-network")
	}
	if !c.noNetwork {
		if _, err := netip.ParsePrefix(c.networkPool); err != nil {
			return usagef("serve: --network-pool: %v", err)
		}
	}
	return nil
}

// proxyKeyName is the proxy's signing key under the data dir: 32 random
// bytes made on first start, so signed URLs survive a restart.
const proxyKeyName = "proxy.key"

// loadProxyKey reads the signing key, creating it on first start.
func loadProxyKey(dataDir string) ([]byte, error) {
	path := filepath.Join(dataDir, proxyKeyName)
	key, err := os.ReadFile(path)
	if err == nil {
		if len(key) < proxy.MinKeyLen {
			return nil, fmt.Errorf("proxy key %s: %d bytes, want at least %d", path, len(key), proxy.MinKeyLen)
		}
		return key, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read proxy key: %w", err)
	}
	key = make([]byte, proxy.MinKeyLen)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate proxy key: %w", err)
	}
	if err := writeFileAtomic(path, key, 0o600); err != nil {
		return nil, err
	}
	return key, nil
}

// publicBase is the proxy's public base URL: --public-url, else the
// domain with the listener's port ("http://localhost:7420").
func publicBase(cfg serveConfig, addr net.Addr) string {
	if cfg.publicURL != "" {
		return cfg.publicURL
	}
	port := 0
	if ta, ok := addr.(*net.TCPAddr); ok {
		port = ta.Port
	}
	return "http://" + net.JoinHostPort(cfg.domain, strconv.Itoa(port))
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cfg serveConfig
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.listen, "listen", "127.0.0.1:7420", "address of the HTTP API")
	fs.StringVar(&cfg.dataDir, "data-dir", defaultDataDir(), "state directory (sandboxes, tokens, agent binary)")
	fs.DurationVar(&cfg.defaultTimeout, "default-timeout", 5*time.Minute, "sandbox timeout when a create request gives none")
	fs.DurationVar(&cfg.maxTimeout, "max-timeout", 5*time.Hour, "longest a sandbox may live, extensions included")
	fs.IntVar(&cfg.maxSandboxes, "max-sandboxes", 64, "sandboxes running at once on this host")
	fs.BoolVar(&cfg.noNetwork, "no-network", false, "loopback-only sandboxes: no veth, no egress, no port proxy")
	fs.StringVar(&cfg.networkPool, "network-pool", netns.DefaultPool.String(), "IPv4 prefix sandboxes get their /30 from")
	fs.BoolVar(&cfg.nat, "nat", false, "masquerade allowed sandbox egress out of this host (sets net.ipv4.ip_forward=1, nftables table ip paddock-nat)")
	fs.StringVar(&cfg.domain, "domain", "localhost", "parent domain of port hosts: <port>-<id>.<domain>")
	fs.StringVar(&cfg.publicURL, "public-url", "", "public base URL of the port proxy (default http://<domain>:<listen port>)")
	fs.StringVar(&cfg.maxVolumeSize, "max-volume-size", "100G", "largest cap a volume may be created with")
	fs.Int64Var(&cfg.appMaxBody, "app-max-body", proxy.DefaultAppMaxBody, "largest request body, in bytes, the app proxy forwards to a project's app")
	fs.DurationVar(&cfg.healthTimeout, "health-timeout", 2*time.Minute, "how long a project's app may take to become healthy, unless the project sets its own")
	cfg.auth.register(fs)
	fs.BoolVar(&cfg.sourceAllowPrivate, "source-allow-private", false, "let git and tarball sources come from loopback and private addresses")
	fs.BoolVar(&cfg.imageKeychain, "image-keychain", false, "let every team's image pulls without credentials use this server's docker logins (default: the host admin's only)")
	fs.StringVar(&cfg.nodeName, "node-name", "local", "name of this host's sandbox records in the store (unique among hosts sharing one)")
	if err := fs.Parse(args); err != nil {
		return usagef("serve: %v", err)
	}
	if fs.NArg() > 0 {
		return usagef("serve: unexpected arguments %q", fs.Args())
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	if err := os.MkdirAll(cfg.dataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}

	agentPath, err := agentbin.Path(ctx, filepath.Join(cfg.dataDir, "bin"))
	if err != nil {
		return fmt.Errorf("locate the sandbox agent: %w", err)
	}
	drv, err := runc.New(runc.Config{DataDir: cfg.dataDir, AgentPath: agentPath, Logger: log})
	if err != nil {
		return fmt.Errorf("start the runc driver: %w", err)
	}
	defer drv.Close()

	var network node.Network // nil: loopback-only sandboxes
	if !cfg.noNetwork {
		nm, err := netns.New(netns.Config{
			DataDir: cfg.dataDir,
			Pool:    netip.MustParsePrefix(cfg.networkPool), // checked by Validate
			NAT:     cfg.nat,
			Logger:  log,
		})
		if err != nil {
			return fmt.Errorf("start sandbox networking (or run with --no-network): %w", err)
		}
		// Closing stops the resolvers; networks stay for the next start.
		defer nm.Close()
		network = nm
	}
	images, err := image.OpenStore(filepath.Join(cfg.dataDir, "images"), image.StoreOptions{Logger: log})
	if err != nil {
		return fmt.Errorf("open the image store: %w", err)
	}
	vols, err := openVolumes(cfg, log)
	if err != nil {
		return err
	}
	srcs, err := openSources(cfg, log)
	if err != nil {
		return err
	}
	defer srcs.Close()
	// The store (SQLite at <data>/paddock.db): teams, users, tokens, the
	// sandboxes' records and history, and the projects' control plane.
	// Opened before the manager, which keeps its records there; closed
	// after it (deferred first).
	db, authn, adminToken, created, err := openAuth(ctx, cfg.dataDir, cfg.auth, log)
	if err != nil {
		return err
	}
	defer db.Close()
	mgr, err := node.New(node.Config{
		Records:        noderecords.New(db, cfg.nodeName),
		History:        noderecords.NewHistory(db),
		Images:         images,
		DataDir:        cfg.dataDir,
		Driver:         drv,
		DefaultTimeout: cfg.defaultTimeout,
		MaxTimeout:     cfg.maxTimeout,
		MaxSandboxes:   cfg.maxSandboxes,
		Logger:         log,
		Network:        network,
		Volumes:        vols.node(),
		Sources:        srcs,
	})
	if err != nil {
		return fmt.Errorf("start the sandbox manager: %w", err)
	}
	// Closing the manager leaves sandboxes running; the next start re-adopts them.
	defer mgr.Close()
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("start the sandbox manager: %w", err)
	}

	// Layers left by images removed before a crash; the sandboxes' own are kept.
	if err := images.GC(ctx, mgr.LayerInUse); err != nil {
		log.Warn("image gc", "err", err)
	}
	// Snapshots expire by age, not by a request: sweep hourly.
	gcCtx, stopGC := context.WithCancel(ctx)
	gcDone := make(chan struct{})
	go func() {
		defer close(gcDone)
		t := time.NewTicker(time.Hour)
		defer t.Stop()
		for {
			select {
			case <-gcCtx.Done():
				return
			case <-t.C:
				if err := images.GC(gcCtx, mgr.LayerInUse); err != nil {
					log.Warn("image gc", "err", err)
				}
			}
		}
	}()
	defer func() { stopGC(); <-gcDone }()

	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	scfg := server.Config{Sandboxes: nodeadapter.New(mgr), Auth: authn, Accounts: authn, Logger: log,
		Images: nodeadapter.Images{Store: images, Node: mgr}, Snapshots: nodeadapter.Snapshots{Store: images, Node: mgr}}
	scfg.Volumes = vols.server()
	scfg.History = db
	scfg.ImageKeychain = cfg.imageKeychain
	var px *proxy.Proxy
	if network != nil {
		key, err := loadProxyKey(cfg.dataDir)
		if err != nil {
			ln.Close()
			return err
		}
		scfg.Signer = &proxy.Signer{Key: key}
		scfg.PortBaseURL = publicBase(cfg, ln.Addr())
	}
	// Projects: the control plane on the store and the app proxy in front
	// of their apps.
	projects, apps, err := startProjects(ctx, projectsConfig{store: db, sandboxes: control.NodeSandboxes{Manager: mgr, Images: images},
		dataDir: cfg.dataDir, domain: cfg.domain, signer: scfg.Signer, authn: authn, maxBody: cfg.appMaxBody, healthTimeout: cfg.healthTimeout, log: log,
		secureCookies: strings.HasPrefix(scfg.PortBaseURL, "https://")})
	if err != nil {
		ln.Close()
		return err
	}
	// Closed before the manager (deferred earlier): activations stop first.
	defer projects.Close()
	defer apps.Close()
	scfg.Projects, scfg.Apps = projects, apps.PathHandler()
	srv, err := server.New(scfg)
	if err != nil {
		ln.Close()
		return err
	}
	// The Vercel Sandbox API (/compat/vercel) on the same services, tokens and
	// store (importing <data>/compat-vercel/state.json once).
	vstore, err := vercel.OpenStore(ctx, db, cfg.dataDir, log)
	if err != nil {
		ln.Close()
		return err
	}
	// Team-aware: teamId names a team the token may use; sandboxes made there are that team's.
	vercelAPI, err := vercel.New(vercel.Config{Sandboxes: scfg.Sandboxes, Snapshots: scfg.Snapshots, Auth: authn, Teams: authn,
		Store: vstore, Signer: scfg.Signer, PortBaseURL: scfg.PortBaseURL, Logger: log})
	if err != nil {
		ln.Close()
		return err
	}
	// A prefix check rather than a ServeMux, which would redirect unclean
	// paths that the API answers itself.
	apiMux := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, vercel.Prefix+"/") {
			vercelAPI.ServeHTTP(w, r)
			return
		}
		srv.Handler().ServeHTTP(w, r)
	})
	if network != nil {
		px, err = proxy.New(proxy.Config{
			Domain:     cfg.domain,
			Signer:     scfg.Signer,
			Resolver:   mgr,
			Authorizer: srv,
			Activity:   mgr.Touch,
			Logger:     log,
			// Behind a TLS-terminating front proxy requests arrive as HTTP:
			// the public URL's scheme says whether cookies travel over TLS.
			SecureCookies: strings.HasPrefix(scfg.PortBaseURL, "https://"),
		})
		if err != nil {
			ln.Close()
			return fmt.Errorf("start the port proxy: %w", err)
		}
		defer px.Close()
	}
	url := "http://" + ln.Addr().String()
	clientPath := filepath.Join(cfg.dataDir, "client.json")
	if err := updateClientConfig(clientPath, url, adminToken); err != nil {
		ln.Close()
		return err
	}
	if !created {
		fmt.Fprintf(stdout, "paddock is serving at %s\n", url)
	}
	if created {
		fmt.Fprintf(stdout, quickstart, url, adminToken, clientPath)
		if cfg.dataDir != defaultDataDir() {
			fmt.Fprintf(stdout, "This data dir is not the default: for the CLI, export PADDOCK_DATA_DIR=%s\n\n", cfg.dataDir)
		}
	}
	log.Info("paddock serving", "url", url, "dataDir", cfg.dataDir, "version", version())

	// h2c as well as HTTP/1: gRPC and other HTTP/2 clients reach sandbox
	// ports without TLS, which a front proxy terminates.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	hs := &http.Server{
		Handler:           server.Front(apiMux, px, apps),
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// Log streams and long polls end at once on shutdown, with a clear
	// message; other requests get the grace period.
	hs.RegisterOnShutdown(srv.CloseStreams)
	hs.RegisterOnShutdown(vercelAPI.CloseStreams)
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }() // owned: we wait for errc below

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

// updateClientConfig writes url, and the token when it is new, to
// client.json. A later start cannot recover the token from its hash, so it
// keeps the one already in the file.
func updateClientConfig(path, url, token string) error {
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
	if cc.URL == url && token == "" {
		return nil
	}
	cc.URL = url
	data, err := json.MarshalIndent(cc, "", "  ")
	if err != nil {
		return fmt.Errorf("encode client config: %w", err)
	}
	return writeFileAtomic(path, append(data, '\n'), 0o600)
}

// writeFileAtomic writes via a temp file and a rename so readers never see
// half a file.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(f.Name()) // no-op after the rename
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// openSources makes the fetcher of git and tarball sources. Its temp dir
// is paddock's own (not /tmp, often a small tmpfs); what a crash left
// there is removed. Sources never reach the sandbox pool.
func openSources(cfg serveConfig, log *slog.Logger) (*source.Fetcher, error) {
	tmp := filepath.Join(cfg.dataDir, "tmp", "sources")
	if err := os.RemoveAll(tmp); err != nil {
		return nil, fmt.Errorf("clean the sources' temp dir: %w", err)
	}
	scfg := source.Config{TempDir: tmp, AllowPrivate: cfg.sourceAllowPrivate, Logger: log}
	if !cfg.noNetwork {
		scfg.Deny = []netip.Prefix{netip.MustParsePrefix(cfg.networkPool)} // checked by Validate
	}
	f, err := source.New(scfg)
	if err != nil {
		return nil, fmt.Errorf("start the source fetcher: %w", err)
	}
	return f, nil
}
