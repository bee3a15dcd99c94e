package e2e

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/doctor"
	"github.com/paddock-dev/paddock/internal/leakcheck"
	"github.com/paddock-dev/paddock/internal/node"
	"github.com/paddock-dev/paddock/internal/runtime/agentbin"
	"github.com/paddock-dev/paddock/internal/runtime/runc"
	"github.com/paddock-dev/paddock/internal/server"
	"github.com/paddock-dev/paddock/internal/server/nodeadapter"
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
	http    *httptest.Server
	token   string
	client  *sdk.Client
	closed  bool
}

type stackOptions struct {
	node           func(*node.Config)
	maxUploadBytes int64
}

// newDataDir returns a fresh data dir removed after the test, and installs
// a leak check scoped to it that runs after everything else is cleaned up.
func newDataDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pe2e-")
	if err != nil {
		t.Fatal(err)
	}
	before := leakcheck.Snapshot(leakcheck.Scope{Dirs: []string{dir}, IDs: []string{"sb-*"}})
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
	cfg := node.Config{DataDir: dataDir, Driver: drv, Logger: log, MaxTimeout: time.Hour}
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
	tokens, err := server.OpenFileTokenStore(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	token, created, err := tokens.EnsureAdminToken()
	if err != nil {
		t.Fatal(err)
	}
	if !created { // a restart: the admin token exists only as a hash now
		if token, _, err = tokens.Create("e2e-restart"); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := server.New(server.Config{Sandboxes: nodeadapter.New(mgr), Tokens: tokens, Logger: log, MaxUploadBytes: opts.maxUploadBytes})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	s := &stack{dataDir: dataDir, driver: drv, mgr: mgr, http: hs, token: token, client: sdk.New(hs.URL, token)}
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
	s.mgr.Close()
	s.driver.Close()
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
