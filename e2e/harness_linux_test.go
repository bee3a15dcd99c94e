package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/control"
	"github.com/paddock-dev/paddock/internal/daemon"
	"github.com/paddock-dev/paddock/internal/diskimg"
	"github.com/paddock-dev/paddock/internal/doctor"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/k8stest"
	"github.com/paddock-dev/paddock/internal/leakcheck"
	"github.com/paddock-dev/paddock/internal/netns"
	"github.com/paddock-dev/paddock/internal/node"
	"github.com/paddock-dev/paddock/internal/proxy"
	"github.com/paddock-dev/paddock/internal/runtime/agentbin"
	"github.com/paddock-dev/paddock/internal/runtime/runc"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/mongo/mongotest"
	"github.com/paddock-dev/paddock/internal/volume"
	"github.com/paddock-dev/paddock/sdk"
)

func TestMain(m *testing.M) {
	runc.Init() // the test binary is re-executed as every container's init
	// Runs the tests and tears down the test cluster if a test on the
	// kubernetes runtime brought one up; then stops the FerretDB the
	// replica test starts.
	code := k8stest.Main(m)
	mongotest.Stop()
	os.Exit(code)
}

var (
	agentOnce sync.Once
	agentPath string
	agentErr  error
)

// requireSandboxes skips the test when this host cannot run sandboxes and
// returns the agent binary otherwise.
func requireSandboxes(t *testing.T) string {
	t.Helper()
	if why := doctor.SandboxReady(context.Background()); why != "" {
		t.Skip("sandboxes cannot run here: " + why)
	}
	agentOnce.Do(func() {
		agentPath, agentErr = agentbin.Path(context.Background(), filepath.Join(os.TempDir(), "paddock-test-agent"))
	})
	if agentErr != nil {
		t.Fatalf("agent binary: %v", agentErr)
	}
	return agentPath
}

// stack is one paddock process's worth of services, in-process: a
// daemon, as `paddock serve` starts it, behind a test listener.
type stack struct {
	d       *daemon.Daemon
	dataDir string
	http    *httptest.Server
	url     string // the listener's base URL: http, or https with stackOptions.tls
	token   string
	client  *sdk.Client
	closed  bool

	// The daemon's subsystems, for what tests check behind the API.
	mgr    *node.Manager
	images *image.Store
	auth   *auth.Authenticator // teams and tokens: token is the host admin's
	// With stackOptions.network only.
	net    *netns.Manager
	signer *proxy.Signer
}

type stackOptions struct {
	maxUploadBytes int64
	// network, when set, gives sandboxes networks from this pool (a small
	// one the test picks) and serves the port proxy beside the API, as
	// `paddock serve` does.
	network netip.Prefix
	// control, when set, changes the project control plane's config.
	control func(*control.Config)
	// config, when set, changes the daemon's config last.
	config func(*daemon.Config)
	// tls serves HTTPS with the daemon's development CA, under the domain
	// paddock.localhost, as `paddock serve --tls-dev-ca` does; the stack's
	// URL is then https and its client trusts the CA.
	tls bool
	// runtime, when daemon.RuntimeKubernetes, runs every sandbox of the
	// stack as a Pod on the test cluster (requireKubernetes), in a
	// namespace of the test's own, as `paddock serve --runtime kubernetes`
	// does; "" is this host's drivers (runc, and gVisor where runsc is).
	runtime string
}

// testDiskMB is the disk cap of the tests' sandboxes, as `paddock serve
// --sandbox-disk` gives every sandbox one.
const testDiskMB = 1024

// unreachableDNS is the upstream of test networks: a loopback port nobody
// serves, so no lookup a test makes can leave the machine.
var unreachableDNS = netip.MustParseAddrPort("127.0.0.1:9")

// Test volumes are small so that filling one past its cap is quick.
const (
	testVolumeSize    = 32 << 20
	testVolumeMaxSize = 256 << 20
)

// newDataDir returns a fresh data dir removed after the test, and installs
// a leak check scoped to it that runs after everything else is cleaned up.
func newDataDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pe2e-")
	if err != nil {
		t.Fatal(err)
	}
	before := leakcheck.Snapshot(leakcheck.Scope{Dirs: []string{dir}, IDs: []string{"sb-*"}, LinkPrefix: "pd"})
	t.Cleanup(func() {
		before.Check(t)
		os.RemoveAll(dir)
	})
	return dir
}

// startStack starts the daemon on dataDir. The cleanup deletes every
// sandbox left and shuts the stack down.
func startStack(t *testing.T, dataDir string, opts stackOptions) *stack {
	t.Helper()
	var agent, snapshots string
	var k8s daemon.KubernetesConfig
	if opts.runtime == daemon.RuntimeKubernetes {
		// The namespace's cleanup, registered first, runs after the
		// stack's, which deletes the sandboxes.
		ke := requireKubernetes(t)
		k8s = ke.config(t)
		// Beside the sandbox images, in the registry the node pulls from.
		snapshots = ke.images.Registry + "/paddock/snapshots"
	} else {
		agent = requireSandboxes(t)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	// Unstarted, so that the routes' base URL knows the listener's port.
	hs := httptest.NewUnstartedServer(nil)
	cfg := daemon.Config{DataDir: dataDir, MaxTimeout: time.Hour, NoNetwork: !opts.network.IsValid(), NetworkPool: opts.network,
		Domain: "localhost", PublicURL: "http://localhost:" + portOf(hs.Listener.Addr()), TLSDevCA: opts.tls,
		MaxVolumeSize: testVolumeMaxSize, HealthTimeout: time.Minute,
		// The tests' git and tarball servers and registries are on 127.0.0.1.
		SourceAllowPrivate: true, RegistryAllowPrivate: true}
	if opts.tls {
		// Node and browsers refuse a wildcard right under a top-level name.
		cfg.Domain, cfg.PublicURL = "paddock.localhost", "https://paddock.localhost:"+portOf(hs.Listener.Addr())
	}
	switch {
	case opts.runtime == daemon.RuntimeKubernetes:
		// Capped as the chart runs them: an ephemeral-storage limit each.
		cfg.Runtime, cfg.Kubernetes, cfg.SnapshotRegistry = daemon.RuntimeKubernetes, k8s, snapshots
		cfg.SandboxDiskMB = testDiskMB
	case diskimg.Available() == "":
		// As `paddock serve` runs sandboxes: each with a disk of its own,
		// small here, made ahead of time.
		cfg.SandboxDiskMB = testDiskMB
	}
	if opts.config != nil {
		opts.config(&cfg)
	}
	d, err := daemon.Start(t.Context(), cfg, daemon.WithLogger(log), daemon.WithAgentPath(agent),
		daemon.WithDNSUpstream(unreachableDNS), daemon.WithMaxUploadBytes(opts.maxUploadBytes),
		daemon.WithVolumeConfig(func(c *volume.Config) { c.DefaultSize = testVolumeSize }),
		daemon.WithControlConfig(opts.control))
	if err != nil {
		hs.Close()
		t.Fatalf("start the daemon: %v", err)
	}
	token, created := d.AdminToken()
	if !created { // a restart: the admin token exists only as a hash now
		if token, _, err = d.Auth().CreateToken(context.Background(), auth.BootstrapTeamID, "", "e2e-restart", store.RoleAdmin, 0); err != nil {
			t.Fatal(err)
		}
	}
	hs.Config.Handler = d.Handler()
	var client *sdk.Client
	var url string
	if opts.tls {
		// The daemon's certificate, not httptest's own: a TLS listener
		// under a plain Start.
		hs.Listener = tls.NewListener(hs.Listener, d.TLSConfig())
		url = "https://" + hs.Listener.Addr().String()
		pool := x509.NewCertPool()
		if pem, err := os.ReadFile(d.DevCAPath()); err != nil || !pool.AppendCertsFromPEM(pem) {
			t.Fatalf("the development CA %s: %v", d.DevCAPath(), err)
		}
		client = sdk.New(url, token, sdk.WithHTTPClient(&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}))
	}
	hs.Start()
	if !opts.tls {
		url = hs.URL
		client = sdk.New(url, token)
	}
	s := &stack{d: d, dataDir: dataDir, http: hs, url: url, token: token, client: client,
		mgr: d.Node(), images: d.Images(), auth: d.Auth(), net: d.Network(), signer: d.Signer()}
	t.Cleanup(func() {
		if s.closed {
			return
		}
		ctx := context.Background()
		s.removePools(t)
		items, _, _ := s.mgr.List(ctx, sandbox.ListOptions{Limit: 500})
		for _, sb := range items {
			if err := s.mgr.Delete(ctx, sb.ID); err != nil {
				t.Errorf("cleanup: delete %s: %v", sb.ID, err)
			}
		}
		s.shutdown(t)
	})
	return s
}

// removePools removes every warm pool and waits until their idle
// sandboxes, which no list shows, are gone (refills in flight are
// discarded as they finish).
func (s *stack) removePools(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	for _, p := range s.d.Pools().List() {
		if err := s.d.Pools().Remove(ctx, p.Name); err != nil {
			t.Errorf("cleanup: remove pool %s: %v", p.Name, err)
		}
	}
	deadline := time.Now().Add(time.Minute)
	for len(s.mgr.Pooled()) > 0 {
		if time.Now().After(deadline) {
			t.Errorf("cleanup: pool sandboxes left: %d", len(s.mgr.Pooled()))
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// shutdown stops the services as a paddock process exit would: sandboxes
// keep running.
func (s *stack) shutdown(t *testing.T) {
	t.Helper()
	s.closed = true
	s.d.CloseStreams()
	s.http.Close()
	if err := s.d.Close(); err != nil {
		t.Errorf("close the daemon: %v", err)
	}
}

func portOf(a net.Addr) string {
	_, port, _ := net.SplitHostPort(a.String())
	return port
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// create makes a sandbox through the SDK and fails the test on error.
func (s *stack) create(t *testing.T, req api.CreateSandboxRequest) *sdk.Sandbox {
	t.Helper()
	sb, err := s.client.Create(ctxFor(t, time.Minute), req)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if sb.Status != api.StatusRunning {
		t.Fatalf("created sandbox is %s, want running", sb.Status)
	}
	return sb
}

// run runs a command to completion and returns its stdout, stderr and exit code.
func run(t *testing.T, sb *sdk.Sandbox, req api.CommandRequest) (stdout, stderr string, code int) {
	t.Helper()
	ctx := ctxFor(t, time.Minute)
	cmd, err := sb.RunCommand(ctx, req)
	if err != nil {
		t.Fatalf("run %s: %v", req.Cmd, err)
	}
	var out, errOut strings.Builder
	for l, err := range cmd.Logs(ctx) {
		if err != nil {
			t.Fatalf("logs of %s: %v", req.Cmd, err)
		}
		switch l.Stream {
		case api.StreamStdout:
			out.Write(l.Bytes())
		case api.StreamStderr:
			errOut.Write(l.Bytes())
		}
	}
	return out.String(), errOut.String(), cmd.ExitCodeOr(-1)
}

func sh(t *testing.T, sb *sdk.Sandbox, script string) (string, int) {
	t.Helper()
	out, errOut, code := run(t, sb, api.CommandRequest{Cmd: "sh", Args: []string{"-c", script}})
	if code != 0 && testing.Verbose() {
		t.Logf("sh %q: exit %d, stderr %q", script, code, errOut)
	}
	return out, code
}

var nodeListAll = sandbox.ListOptions{Limit: 500}
