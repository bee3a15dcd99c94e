package gvisor

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/imagetest"
	"github.com/paddock-dev/paddock/internal/leakcheck"
	"github.com/paddock-dev/paddock/internal/netns"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/runtime/agentbin"
	"github.com/paddock-dev/paddock/internal/runtime/runtimetest"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

var agentPath string

// testRunsc skips without root or runsc, and builds (or finds) the agent.
func testRunsc(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("gvisor driver: needs root")
	}
	p, err := Find()
	if err != nil {
		t.Skip("gvisor driver: " + err.Error())
	}
	if agentPath == "" {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		a, err := agentbin.Path(ctx, filepath.Join(os.TempDir(), "paddock-test-agent"))
		if err != nil {
			t.Fatal(err)
		}
		agentPath = a
	}
	return p
}

func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func newDriver(t *testing.T) runtime.Driver {
	t.Helper()
	runsc := testRunsc(t)
	d, err := New(Config{DataDir: t.TempDir(), AgentPath: agentPath, Runsc: runsc, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	})
	return d
}

// TestCreateExecDestroy is the driver's smoke test: a sandbox starts with
// the agent as PID 1 under the sentry, runs a command, and goes leaving
// nothing behind.
func TestCreateExecDestroy(t *testing.T) {
	testRunsc(t)
	leakcheck.Check(t, leakcheck.Scope{Children: true, IDs: []string{"gv-*"}})
	d := newDriver(t)
	id := "gv-smoke-" + strings.ReplaceAll(time.Now().Format("150405.000"), ".", "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	c, err := d.Create(ctx, runtime.Spec{ID: id, Image: sandbox.HostImage, Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 256, PIDs: 128}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("create took %v", time.Since(start))
	defer c.Close()
	info, err := c.Ping(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.PID != 1 {
		t.Errorf("agent is pid %d, want 1", info.PID)
	}
	// The sentry's kernel, not the host's: the code runs on gVisor.
	host, err := os.ReadFile("/proc/version")
	if err != nil {
		t.Fatal(err)
	}
	if out := run(t, c, "cat /proc/version"); out == "" || out == string(host) {
		t.Errorf("/proc/version inside is %q, want the sentry's, not the host's %q", out, host)
	} else {
		t.Logf("/proc/version inside: %s", strings.TrimSpace(out))
	}
	if _, err := d.Agent(ctx, id); err != nil {
		t.Errorf("Agent: %v", err)
	}
	if err := d.Destroy(ctx, id); err != nil {
		t.Fatal(err)
	}
}

// run runs a shell snippet as root in the sandbox and returns its stdout.
func run(t *testing.T, c *agent.Client, script string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd, err := c.Start(ctx, agent.CommandRequest{Cmd: "sh", Args: []string{"-c", script}, Sudo: true})
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.Output(ctx, cmd.ID, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var stdout strings.Builder
	for {
		f, err := r.Next()
		if errors.Is(err, io.EOF) {
			return stdout.String()
		}
		if err != nil {
			t.Fatal(err)
		}
		if f.Kind == agent.FrameStdout {
			stdout.Write(f.Data)
		}
	}
}

// TestPinSocket: the host reaches the agent only through a socket file in
// the sandbox's socket dir, never through a symlink a sandbox put there.
func TestPinSocket(t *testing.T) {
	d := &Driver{runDir: t.TempDir()}
	id := "gv-pin"
	dir := filepath.Join(d.hostDir(id), sockDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(t.TempDir(), "host.sock")
	ln, err := net.Listen("unix", target)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, tc := range []struct {
		name    string
		make    func(p string) error
		wantErr bool
	}{
		{"missing", func(string) error { return nil }, true},
		{"symlink to a host socket", func(p string) error { return os.Symlink(target, p) }, true},
		{"regular file", func(p string) error { return os.WriteFile(p, nil, 0o600) }, true},
		{"socket", func(p string) error {
			l, err := net.Listen("unix", p)
			if err == nil {
				t.Cleanup(func() { l.Close() })
			}
			return err
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, sockName)
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				t.Fatal(err)
			}
			if err := tc.make(p); err != nil {
				t.Fatal(err)
			}
			sock, err := d.pinSocket(id)
			if (err != nil) != tc.wantErr {
				t.Fatalf("pinSocket: err %v, want error %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			defer sock.Close()
			// The pinned inode is reached even after the name is swapped.
			if err := os.Rename(p, p+".old"); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
			conn, err := net.Dial("unix", "/proc/self/fd/"+strconv.Itoa(int(sock.Fd())))
			if err != nil {
				t.Fatalf("dial the pinned socket: %v", err)
			}
			conn.Close()
		})
	}
}

func TestCheckDest(t *testing.T) {
	for _, tc := range []struct {
		dest string
		ok   bool
	}{
		{"/data", true},
		{"/home/user/cache", true},
		{"data", false},
		{"/", false},
		{"/data/../etc", false},
		{"/data/", false},
		{"/proc", false},
		{"/dev/shm", false},
		{"/.paddock", false},
		{"/run", false}, // above the agent's state dir
		{"/etc/resolv.conf", false},
		{"/etc", false},
	} {
		t.Run(tc.dest, func(t *testing.T) {
			err := checkDest(tc.dest)
			if (err == nil) != tc.ok {
				t.Fatalf("checkDest(%q) = %v, want ok %v", tc.dest, err, tc.ok)
			}
			if err != nil && !errors.Is(err, sandbox.ErrInvalid) {
				t.Errorf("error %v is not ErrInvalid", err)
			}
		})
	}
}

// TestConformance runs the runtime conformance suite against runsc.
func TestConformance(t *testing.T) {
	testRunsc(t)
	leakcheck.Check(t, leakcheck.Scope{Children: true, IDs: []string{"rt-*"}, LinkPrefix: "pd"})
	runtimetest.Run(t, runtimetest.Harness{
		NewDriver: newDriver,
		Image:     harnessImage,
		Volume:    harnessVolume,
		Network:   harnessNetwork,
		EmulatedDevices: "the sentry does not implement nodev (runsc drops the option): a device node in a volume opens the sentry's " +
			"own emulated device of that number (--character-device-policy=emulated-only), never the host's, and the gofer's host-side bind is nodev",
	})
}

// harnessImage unpacks layers into an image store, as a pull or import
// would, and gives the driver their directories, as node does.
func harnessImage(t *testing.T, layers ...v1.Layer) *runtime.Rootfs {
	t.Helper()
	store, err := image.OpenStore(filepath.Join(t.TempDir(), "images"), image.StoreOptions{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	archive := filepath.Join(t.TempDir(), "img.tar")
	ref, err := name.NewTag("example.com/runtimetest/layers:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(archive, ref, imagetest.Image(t, []string{"PATH=/bin"}, "/", layers...)); err != nil {
		t.Fatal(err)
	}
	img, err := store.Import(t.Context(), image.Published, archive)
	if err != nil {
		t.Fatal(err)
	}
	return &runtime.Rootfs{Lowers: img.Lowerdirs()}
}

// harnessVolume is a plain host directory, as node hands a volume's mount.
func harnessVolume(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "seed"), []byte("seed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil { // the sandbox user writes there too
		t.Fatal(err)
	}
	return dir
}

// harnessNetwork sets up sandbox id's network with netns, as node does.
func harnessNetwork(t *testing.T, id string) (*runtime.NetworkSpec, string) {
	t.Helper()
	nm, err := netns.New(netns.Config{DataDir: t.TempDir(), Pool: netip.MustParsePrefix("10.213.246.0/24"),
		Upstream: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:9")}, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nm.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nw, err := nm.Setup(ctx, id, netns.Policy{Mode: netns.ModeAllowAll})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := nm.Teardown(context.Background(), id); err != nil {
			t.Errorf("teardown the network of %s: %v", id, err)
		}
	})
	return &runtime.NetworkSpec{NSPath: nw.NSPath, DNS: nw.DNS}, nw.SandboxAddr.String()
}
