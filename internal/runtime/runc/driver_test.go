//go:build linux

package runc

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/doctor"
	"github.com/paddock-dev/paddock/internal/hostimage"
	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/imagetest"
	"github.com/paddock-dev/paddock/internal/leakcheck"
	"github.com/paddock-dev/paddock/internal/netns"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/runtime/agentbin"
	"github.com/paddock-dev/paddock/internal/runtime/layer"
	"github.com/paddock-dev/paddock/internal/runtime/runtimetest"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

func TestMain(m *testing.M) {
	Init() // re-executed as "runc init" for every container
	os.Exit(m.Run())
}

var agentPath string

// testAgent builds (or finds) the real agent once per test binary, in a
// cache shared across runs.
func testAgent(t *testing.T) string {
	t.Helper()
	if r := doctor.SandboxReady(context.Background()); r != "" {
		t.Skip("runc driver: " + r)
	}
	if agentPath == "" {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		p, err := agentbin.Path(ctx, filepath.Join(os.TempDir(), "paddock-test-agent"))
		if err != nil {
			t.Fatal(err)
		}
		agentPath = p
	}
	return agentPath
}

var initPath string

// testInit builds (or finds) paddock-init once per test binary, beside the
// agent.
func testInit(t *testing.T) string {
	t.Helper()
	testAgent(t)
	if initPath == "" {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		p, err := agentbin.InitPath(ctx, filepath.Join(os.TempDir(), "paddock-test-agent"))
		if err != nil {
			t.Fatal(err)
		}
		initPath = p
	}
	return initPath
}

// newDriver starts sandboxes from paddock-init, as paddock does; the
// driver's other tests cover starting them from this process.
func newDriver(t *testing.T, dataDir string) *Driver {
	t.Helper()
	d, err := New(Config{DataDir: dataDir, AgentPath: testAgent(t), InitPath: testInit(t), Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestConformance(t *testing.T) {
	testAgent(t)
	// Every process and mount of every subtest must be gone at the end.
	leakcheck.Check(t, leakcheck.Scope{Children: true, IDs: []string{"rt-*"}, LinkPrefix: "pd"})
	runtimetest.Run(t, runtimetest.Harness{
		NewDriver: func(t *testing.T) runtime.Driver { return newDriver(t, t.TempDir()) },
		Image:     harnessImage,
		Volume:    harnessVolume,
		Network:   harnessNetwork,
	})
}

// harnessImage unpacks layers into an image store, as a pull or import
// would, and gives the runc driver their directories, as node does.
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

// harnessVolume is a plain host directory: the runc driver binds whatever
// directory node hands it (an ext4 volume's mount, in paddock).
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

// harnessNetwork sets up sandbox id's network with netns, as node does
// before the driver creates it: a pinned namespace and a veth from a small
// pool of the test's own, its resolver pointing at nothing.
func harnessNetwork(t *testing.T, id string) (*runtime.NetworkSpec, string) {
	t.Helper()
	nm, err := netns.New(netns.Config{DataDir: t.TempDir(), Pool: netip.MustParsePrefix("10.213.244.0/24"),
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

// TestEscape runs the escape battery alone (`go test -run Escape`). A run
// without -run gets it from TestConformance instead, so it is not run twice.
func TestEscape(t *testing.T) {
	if f := flag.Lookup("test.run"); f == nil || f.Value.String() == "" {
		t.Skip("runs as TestConformance/Parallel/Escape")
	}
	testAgent(t)
	leakcheck.Check(t, leakcheck.Scope{Children: true, IDs: []string{"rt-*"}})
	runtimetest.Escape(t, func(t *testing.T) runtime.Driver { return newDriver(t, t.TempDir()) })
}

func TestCreateFailureCleansUp(t *testing.T) {
	dataDir := t.TempDir()
	leakcheck.Check(t, leakcheck.Scope{Dirs: []string{dataDir}})
	// An agent that exits at once: Create must fail and leave nothing.
	bad := filepath.Join(t.TempDir(), "agent")
	if err := os.WriteFile(bad, []byte("#!/bin/sh\necho dying >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	testAgent(t)
	d, err := New(Config{DataDir: dataDir, AgentPath: bad})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	id := "rt-fail-" + fmt.Sprint(time.Now().UnixNano()%1e6)
	leakcheck.Check(t, leakcheck.Scope{IDs: []string{id}})
	_, err = d.Create(context.Background(), runtime.Spec{ID: id, Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 64, PIDs: 32}})
	if err == nil {
		t.Fatal("Create with a dying agent succeeded")
	}
	t.Logf("create error: %v", err)
	if !strings.Contains(err.Error(), "agent output: dying") {
		t.Errorf("the error does not quote the agent's last output")
	}
	if _, err := os.Stat(filepath.Join(dataDir, "runc", id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("host dir left behind: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "runc", stateName, id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("libcontainer state left behind: %v", err)
	}
	if list, _ := d.List(context.Background()); len(list) != 0 {
		t.Errorf("List after a failed create: %+v", list)
	}
	if _, err := os.Lstat(filepath.Join(d.roots.dir, id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("rootfs dir left behind: %v", err)
	}
	ents, _ := os.ReadDir(filepath.Join(d.roots.dir, rangesName))
	for _, e := range ents {
		if target, _ := os.Readlink(filepath.Join(d.roots.dir, rangesName, e.Name())); target == "../"+id {
			t.Errorf("id range %s still claimed", e.Name())
		}
	}
}

func TestReadoption(t *testing.T) {
	dataDir := t.TempDir()
	leakcheck.Check(t, leakcheck.Scope{Dirs: []string{dataDir}})
	ctx := context.Background()
	d1 := newDriver(t, dataDir)
	id := "rt-adopt-" + fmt.Sprint(time.Now().UnixNano()%1e6)
	leakcheck.Check(t, leakcheck.Scope{IDs: []string{id}})
	c1, err := d1.Create(ctx, runtime.Spec{ID: id, Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 128, PIDs: 64}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d1.Destroy(ctx, id) })
	before, err := c1.Ping(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c1.Start(ctx, agent.CommandRequest{Cmd: "sleep", Args: []string{"1000"}}); err != nil {
		t.Fatal(err)
	}
	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}

	// A second driver, as after a paddock restart.
	d2 := newDriver(t, dataDir)
	list, err := d2.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != id || !list[0].Running {
		t.Fatalf("List on the new driver: %+v", list)
	}
	c2, err := d2.Agent(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	after, err := c2.Ping(ctx)
	// The user included: the agent resolved it once, at its start.
	if err != nil || !reflect.DeepEqual(after, before) {
		t.Fatalf("adopted agent: %+v %v, want %+v", after, err, before)
	}
	cmds, err := c2.List(ctx)
	if err != nil || len(cmds) != 1 || cmds[0].Status != agent.StatusRunning {
		t.Errorf("commands survive re-adoption: %+v %v", cmds, err)
	}
	cmd, err := c2.Start(ctx, agent.CommandRequest{Cmd: "echo", Args: []string{"adopted"}})
	if err != nil {
		t.Fatal(err)
	}
	if done, err := c2.Wait(ctx, cmd.ID); err != nil || done.ExitCode == nil || *done.ExitCode != 0 {
		t.Errorf("command after re-adoption: %+v %v", done, err)
	}
	if _, err := d2.Stats(ctx, id); err != nil {
		t.Errorf("Stats after re-adoption: %v", err)
	}
	// The restarted driver knows the adopted sandbox's range is taken.
	other, _ := create(t, d2, "adopt2", runtime.Spec{})
	if a, b := agentUID(t, d2, id), agentUID(t, d2, other); a == b || a == 0 {
		t.Errorf("adopted sandbox's host uid %d, a new one's %d", a, b)
	}
	if err := d2.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := d2.Agent(ctx, id); !errors.Is(err, sandbox.ErrNotRunning) {
		t.Errorf("Agent after Stop: %v", err)
	}
	// Stopped keeps the writable layer until Destroy.
	if _, err := os.Stat(filepath.Join(dataDir, "runc", id, layer.UpperName)); err != nil {
		t.Errorf("upper dir gone after Stop: %v", err)
	}
	if err := d2.Destroy(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "runc", id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("host dir after Destroy: %v", err)
	}
}

func TestStatsAndBaseUnchanged(t *testing.T) {
	dataDir := t.TempDir()
	leakcheck.Check(t, leakcheck.Scope{Dirs: []string{dataDir}})
	ctx := context.Background()
	d := newDriver(t, dataDir)
	img, err := hostimage.Build(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	lowerBefore := snapshotTree(t, img.Lower)
	id := "rt-stats-" + fmt.Sprint(time.Now().UnixNano()%1e6)
	leakcheck.Check(t, leakcheck.Scope{IDs: []string{id}})
	c, err := d.Create(ctx, runtime.Spec{ID: id, Resources: sandbox.Resources{VCPUs: 1.5, MemoryMB: 96, PIDs: 50}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Destroy(ctx, id) })
	cmd, err := c.Start(ctx, agent.CommandRequest{Cmd: "sh", Args: []string{"-c",
		"echo x > /etc/probe; rm -f /etc/profile; mkdir -p /root/x; head -c 20000000 /dev/zero > /tmp/z"}, Sudo: true})
	if err != nil {
		t.Fatal(err)
	}
	if done, err := c.Wait(ctx, cmd.ID); err != nil || *done.ExitCode != 0 {
		t.Fatalf("%+v %v", done, err)
	}
	st, err := d.Stats(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stats %+v", st)
	if st.MemoryLimit != 96<<20 || st.CPUQuotaFrac != 1.5 || st.PIDs == 0 || st.CPUUsage == 0 ||
		st.MemoryBytes < 20_000_000 || st.MemoryPeak < st.MemoryBytes {
		t.Errorf("stats %+v", st)
	}
	if got := snapshotTree(t, img.Lower); fmt.Sprint(got) != fmt.Sprint(lowerBefore) {
		t.Errorf("the image's lower dir changed")
	}
	if _, err := os.Stat(filepath.Join(dataDir, "runc", id, layer.UpperName, "etc", "probe")); err != nil {
		t.Errorf("write did not land in the upper layer: %v", err)
	}
	if d.Capabilities().Name != "runc" || !d.Capabilities().Seccomp {
		t.Errorf("capabilities %+v", d.Capabilities())
	}
}

// snapshotTree lists a tree's paths with sizes and modes.
func snapshotTree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		out = append(out, fmt.Sprintf("%s %v %d %v", p, fi.Mode(), fi.Size(), fi.ModTime().UnixNano()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// TestCreateLatency reports create -> agent answering; the lead's benchmark
// is the real measure.
func TestCreateLatency(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	dataDir := t.TempDir()
	leakcheck.Check(t, leakcheck.Scope{Dirs: []string{dataDir}})
	d := newDriver(t, dataDir)
	ctx := context.Background()
	var times []time.Duration
	for i := range 15 {
		id := fmt.Sprintf("rt-lat-%d-%d", i, time.Now().UnixNano()%1e6)
		start := time.Now()
		if _, err := d.Create(ctx, runtime.Spec{ID: id, Resources: sandbox.Resources{VCPUs: 1, MemoryMB: 128, PIDs: 64}}); err != nil {
			t.Fatal(err)
		}
		times = append(times, time.Since(start))
		if err := d.Destroy(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	t.Logf("create->ping: min %v p50 %v max %v", times[0], times[len(times)/2], times[len(times)-1])
}

// testLogger logs at debug level with -v and PADDOCK_TEST_DEBUG=1.
func testLogger() *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("PADDOCK_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}
