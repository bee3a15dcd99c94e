package e2e

import (
	"context"
	"crypto/rand"
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
	"github.com/paddock-dev/paddock/internal/doctor"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/leakcheck"
	"github.com/paddock-dev/paddock/internal/netns"
	"github.com/paddock-dev/paddock/internal/node"
	"github.com/paddock-dev/paddock/internal/proxy"
	"github.com/paddock-dev/paddock/internal/runtime/agentbin"
	"github.com/paddock-dev/paddock/internal/runtime/runc"
	"github.com/paddock-dev/paddock/internal/server"
	"github.com/paddock-dev/paddock/internal/server/nodeadapter"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/noderecords"
	"github.com/paddock-dev/paddock/internal/store/sqlite"
	"github.com/paddock-dev/paddock/sdk"
)

func TestMain(m *testing.M) {
	runc.Init() // the test binary is re-executed as every container's init
	os.Exit(m.Run())
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

// stack is one paddock process's worth of services, in-process.
type stack struct {
	dataDir string
	driver  *runc.Driver
	mgr     *node.Manager
	images  *image.Store
	http    *httptest.Server
	token   string
	client  *sdk.Client
	closed  bool
	db      *sqlite.Store
	auth    *auth.Authenticator // teams and tokens: token is the host admin's

	// With stackOptions.network only.
	net    *netns.Manager
	proxy  *proxy.Proxy
	signer *proxy.Signer
}

type stackOptions struct {
	node           func(*node.Config)
	maxUploadBytes int64
	// network, when set, gives sandboxes networks from this pool (a small
	// one the test picks) and serves the port proxy beside the API, as
	// `paddock serve` does.
	network netip.Prefix
	// wrap, when set, wraps the listener's handler once the stack is built
	// and before it serves, to mount more beside the API (compat layers).
	wrap func(s *stack, front http.Handler) http.Handler
}

// unreachableDNS is the upstream of test networks: a loopback port nobody
// serves, so no lookup a test makes can leave the machine.
var unreachableDNS = netip.MustParseAddrPort("127.0.0.1:9")

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

// startStack starts the services on dataDir. The cleanup deletes every
// sandbox left and shuts the stack down.
func startStack(t *testing.T, dataDir string, opts stackOptions) *stack {
	t.Helper()
	agent := requireSandboxes(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	drv, err := runc.New(runc.Config{DataDir: dataDir, AgentPath: agent, Logger: log})
	if err != nil {
		t.Fatalf("runc driver: %v", err)
	}
	images, err := image.OpenStore(filepath.Join(dataDir, "images"), image.StoreOptions{Logger: log})
	if err != nil {
		drv.Close()
		t.Fatalf("image store: %v", err)
	}
	// The store serve uses (<data>/paddock.db): teams, users and tokens,
	// the node's records and the sandboxes' history.
	db, err := sqlite.Open(filepath.Join(dataDir, "paddock.db"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := node.Config{DataDir: dataDir, Driver: drv, Logger: log, MaxTimeout: time.Hour, Images: images,
		Records: noderecords.New(db, "local"), History: noderecords.NewHistory(db)}
	nodeVols, serverVols := testVolumes(t, dataDir, log) // nil when the host cannot run volumes
	cfg.Volumes = nodeVols
	cfg.Sources = testSources(t, dataDir, log) // loopback sources allowed, as with --source-allow-private
	var nm *netns.Manager
	if opts.network.IsValid() {
		nm, err = netns.New(netns.Config{DataDir: dataDir, Pool: opts.network, Upstream: []netip.AddrPort{unreachableDNS}, Logger: log})
		if err != nil {
			drv.Close()
			t.Fatalf("netns: %v", err)
		}
		cfg.Network = nm
	}
	if opts.node != nil {
		opts.node(&cfg)
	}
	mgr, err := node.New(cfg)
	if err != nil {
		t.Fatalf("node: %v", err)
	}
	if err := mgr.Start(context.Background()); err != nil {
		t.Fatalf("node start: %v", err)
	}
	authn, err := auth.New(context.Background(), auth.Config{Store: db, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	token, created, err := authn.Bootstrap(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !created { // a restart: the admin token exists only as a hash now
		if token, _, err = authn.CreateToken(context.Background(), auth.BootstrapTeamID, "", "e2e-restart", store.RoleAdmin, 0); err != nil {
			t.Fatal(err)
		}
	}
	// Unstarted, so that the routes' base URL knows the listener's port.
	hs := httptest.NewUnstartedServer(nil)
	scfg := server.Config{Sandboxes: nodeadapter.New(mgr), Auth: authn, Accounts: authn, Logger: log, MaxUploadBytes: opts.maxUploadBytes,
		Images: nodeadapter.Images{Store: images, Node: mgr}, Snapshots: nodeadapter.Snapshots{Store: images, Node: mgr}}
	scfg.Volumes = serverVols
	scfg.History = db
	s := &stack{dataDir: dataDir, driver: drv, mgr: mgr, images: images, http: hs, token: token, net: nm, db: db, auth: authn}
	if nm != nil {
		key := make([]byte, proxy.MinKeyLen)
		rand.Read(key)
		s.signer = &proxy.Signer{Key: key}
		scfg.Signer = s.signer
		scfg.PortBaseURL = "http://localhost:" + portOf(hs.Listener.Addr())
	}
	srv, err := server.New(scfg)
	if err != nil {
		t.Fatal(err)
	}
	if nm != nil {
		s.proxy, err = proxy.New(proxy.Config{Domain: "localhost", Signer: s.signer, Resolver: mgr, Authorizer: srv, Activity: mgr.Touch, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
	}
	hs.Config.Handler = server.Front(srv.Handler(), s.proxy)
	if opts.wrap != nil {
		hs.Config.Handler = opts.wrap(s, hs.Config.Handler)
	}
	hs.Start()
	s.client = sdk.New(hs.URL, token)
	t.Cleanup(func() {
		if s.closed {
			return
		}
		ctx := context.Background()
		items, _, _ := mgr.List(ctx, node.ListOptions{Limit: 500})
		for _, sb := range items {
			if err := mgr.Delete(ctx, sb.ID); err != nil {
				t.Errorf("cleanup: delete %s: %v", sb.ID, err)
			}
		}
		s.shutdown()
	})
	return s
}

// shutdown stops the services as a paddock process exit would: sandboxes
// keep running.
func (s *stack) shutdown() {
	s.closed = true
	s.http.Close()
	if s.proxy != nil {
		s.proxy.Close()
	}
	s.mgr.Close()
	s.db.Close()
	if s.net != nil {
		s.net.Close()
	}
	s.driver.Close()
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

var nodeListAll = node.ListOptions{Limit: 500}
