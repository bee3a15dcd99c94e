package bench

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/doctor"
	"github.com/paddock-dev/paddock/internal/hostimage"
	"github.com/paddock-dev/paddock/internal/k8stest"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/runtime/agentbin"
	"github.com/paddock-dev/paddock/internal/runtime/runc"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

func TestMain(m *testing.M) {
	runc.Init()
	// k8stest.Main runs the benchmarks and tears down the cluster the
	// Kubernetes ones brought up, if any.
	code := k8stest.Main(m)
	removeEchoBuild()
	os.Exit(code)
}

var benchResources = sandbox.Resources{VCPUs: 1, MemoryMB: 512, PIDs: 256}

type env struct {
	driver  runtime.Driver // runc's, unless gvisor_linux_test.go made it
	dataDir string
}

func setup(b *testing.B) *env { b.Helper(); return setupWith(b, nil) }

// setupWith is setup with the driver's config changed by mod (nil: as is).
func setupWith(b *testing.B, mod func(*runc.Config)) *env {
	b.Helper()
	if why := doctor.SandboxReady(context.Background()); why != "" {
		b.Skip("sandboxes cannot run here: " + why)
	}
	ctx := context.Background()
	agentPath, err := agentbin.Path(ctx, filepath.Join(os.TempDir(), "paddock-test-agent"))
	if err != nil {
		b.Fatalf("agent binary: %v", err)
	}
	dir, err := os.MkdirTemp("", "pb-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	cfg := runc.Config{DataDir: dir, AgentPath: agentPath, InitPath: initBinary(b)}
	if mod != nil {
		mod(&cfg)
	}
	d, err := runc.New(cfg)
	if err != nil {
		b.Fatalf("driver: %v", err)
	}
	b.Cleanup(func() { d.Close() })
	return &env{driver: d, dataDir: dir}
}

// initBinary finds or builds paddock-init in the cache the agent shares.
func initBinary(b *testing.B) string {
	b.Helper()
	p, err := agentbin.InitPath(context.Background(), filepath.Join(os.TempDir(), "paddock-test-agent"))
	if err != nil {
		b.Fatalf("paddock-init: %v", err)
	}
	return p
}

func (e *env) create(b *testing.B, id string) *agent.Client {
	b.Helper()
	return e.createPhased(b, id, nil)
}

// createPhased is create with the driver's step timings recorded into p
// (nil: dropped).
func (e *env) createPhased(b *testing.B, id string, p *sandbox.Phases) *agent.Client {
	b.Helper()
	ctx := context.Background()
	if p != nil {
		ctx = sandbox.WithPhases(ctx, p)
	}
	cl, err := e.driver.Create(ctx, runtime.Spec{ID: id, Image: sandbox.HostImage, Resources: benchResources})
	if err != nil {
		b.Fatalf("create %s: %v", id, err)
	}
	return cl
}

func (e *env) destroy(b *testing.B, id string) {
	b.Helper()
	if err := e.driver.Destroy(context.Background(), id); err != nil {
		b.Errorf("destroy %s: %v", id, err)
	}
}

func run(ctx context.Context, cl *agent.Client, cmd string, args ...string) error {
	c, err := cl.Run(ctx, agent.CommandRequest{Cmd: cmd, Args: args})
	if err != nil {
		return err
	}
	if c.ExitCode == nil || *c.ExitCode != 0 {
		return fmt.Errorf("%s: status %s, error %q", cmd, c.Status, c.Error)
	}
	return nil
}

// BenchmarkCreateToFirstCommand times create → `true` finished in a new
// sandbox, interleaved with `runc run` of an equivalent bundle running `true`.
// Each iteration is one sample of each; use -benchtime 60x for p99 to mean something.
func BenchmarkCreateToFirstCommand(b *testing.B) {
	e := setup(b)
	rb := newRuncBaseline(b, e.dataDir)
	ctx := context.Background()
	var ours, base []time.Duration
	steps := map[string][]time.Duration{}
	for i := 0; b.Loop(); i++ {
		id := fmt.Sprintf("bench-%d", i)
		var p sandbox.Phases
		start := time.Now()
		cl := e.createPhased(b, id, &p)
		created := time.Now()
		if err := run(ctx, cl, "true"); err != nil {
			b.Fatal(err)
		}
		ours = append(ours, time.Since(start))
		b.StopTimer()
		for name, d := range map[string]time.Duration{"layer": p.Layer, "config": p.Config, "start": p.Start,
			"agent": p.Agent, "first-command": ours[len(ours)-1] - created.Sub(start)} {
			steps[name] = append(steps[name], d)
		}
		e.destroy(b, id)
		base = append(base, rb.run(b, i))
		b.StartTimer()
	}
	report(b, "", ours, base)
	reportSteps(b, steps)
}

// reportSteps adds the p50 of each step as "<step>-p50-ms" and logs them.
func reportSteps(b *testing.B, steps map[string][]time.Duration) {
	b.Helper()
	var line []string
	for _, name := range slices.Sorted(maps.Keys(steps)) {
		p := pct(steps[name], 50)
		b.ReportMetric(ms(p), name+"-p50-ms")
		line = append(line, name+"="+p.Round(10*time.Microsecond).String())
	}
	b.Logf("steps p50: %s", strings.Join(line, " "))
}

// BenchmarkExecRoundTrip times `true` run to completion in a running sandbox
// (one request to its agent), beside `runc exec` of `true` into a running
// runc container and a plain fork+exec of `true` on the host.
func BenchmarkExecRoundTrip(b *testing.B) {
	e := setup(b)
	ctx := context.Background()
	cl := e.create(b, "bench-exec")
	b.Cleanup(func() { e.destroy(b, "bench-exec") })
	rb := newRuncBaseline(b, e.dataDir)
	rb.startIdle(b)
	var ours, base []time.Duration
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		if err := run(ctx, cl, "true"); err != nil {
			b.Fatal(err)
		}
		ours = append(ours, time.Since(start))
		if i < 60 { // runc exec costs ~100x more; 60 samples are plenty
			b.StopTimer()
			base = append(base, rb.exec(b))
			b.StartTimer()
		}
	}
	report(b, "", ours, base)
	// The floor: the same binary forked, exec'd and waited for by this
	// process on the host, without any sandbox or round trip.
	var host []time.Duration
	for range 60 {
		start := time.Now()
		if err := exec.Command("/usr/bin/true").Run(); err != nil {
			b.Fatal(err)
		}
		host = append(host, time.Since(start))
	}
	b.ReportMetric(ms(pct(host, 50)), "host-exec-p50-ms")
	b.ReportMetric(ms(pct(ours, 50))/ms(pct(host, 50)), "ratio-host-p50")
}

// BenchmarkFileWrite measures WriteTar of one 64 MiB file into a sandbox,
// beside writing the same bytes to a host file in the same data dir.
func BenchmarkFileWrite(b *testing.B) {
	e := setup(b)
	cl := e.create(b, "bench-files")
	b.Cleanup(func() { e.destroy(b, "bench-files") })
	payload, archive := blobTar()
	b.SetBytes(blobSize)
	var ours, base []time.Duration
	for b.Loop() {
		ours = append(ours, writeBlob(b, cl, archive, false))
		b.StopTimer()
		start := time.Now()
		if err := os.WriteFile(filepath.Join(e.dataDir, "blob"), payload, 0o644); err != nil {
			b.Fatal(err)
		}
		base = append(base, time.Since(start))
		b.StartTimer()
	}
	b.ReportMetric(blobMiBps(ours), "MiB/s")
	b.ReportMetric(blobMiBps(base), "host-MiB/s")
	b.ReportMetric(blobMiBps(ours)/blobMiBps(base), "ratio")
}

// blobSize is the file the write benchmarks write.
const blobSize = 64 << 20

// blobTar returns blobSize bytes and a tar holding them as one file, blob.
func blobTar() (payload, archive []byte) {
	payload = bytes.Repeat([]byte("paddock!"), blobSize/8)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "blob", Mode: 0o644, Size: blobSize, Typeflag: tar.TypeReg})
	tw.Write(payload)
	tw.Close()
	return payload, buf.Bytes()
}

// writeBlob writes blobTar's archive into a sandbox's home, as its user
// or as root (sudo), and returns how long it took.
func writeBlob(b *testing.B, cl *agent.Client, archive []byte, sudo bool) time.Duration {
	b.Helper()
	start := time.Now()
	if _, err := cl.WriteTar(context.Background(), "/home/user", sudo, bytes.NewReader(archive)); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// blobMiBps is the throughput of blob writes at their median.
func blobMiBps(ds []time.Duration) float64 {
	return float64(blobSize) / (1 << 20) / pct(ds, 50).Seconds()
}

func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(0, min(len(s)-1, i-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func report(b *testing.B, prefix string, ours, base []time.Duration) {
	b.ReportMetric(0, "ns/op") // per-op time mixes in setup; the percentiles are the figures
	b.ReportMetric(ms(pct(ours, 50)), prefix+"p50-ms")
	b.ReportMetric(ms(pct(ours, 99)), prefix+"p99-ms")
	if len(base) > 0 {
		b.ReportMetric(ms(pct(base, 50)), "runc-p50-ms")
		b.ReportMetric(ms(pct(base, 99)), "runc-p99-ms")
		b.ReportMetric(ms(pct(ours, 50))/ms(pct(base, 50)), "ratio-p50")
	}
	b.Logf("n=%d ours p50=%v p99=%v; runc n=%d p50=%v p99=%v", len(ours), pct(ours, 50), pct(ours, 99), len(base), pct(base, 50), pct(base, 99))
}

// runcBaseline runs Debian's runc CLI on a bundle equivalent to a paddock
// sandbox: the same host image, namespaces, cgroup limits and capabilities.
type runcBaseline struct {
	bin, root, bundle string
	idle              string // id of the container exec runs in
}

func newRuncBaseline(b *testing.B, dataDir string) *runcBaseline {
	b.Helper()
	bin, err := exec.LookPath("runc")
	if err != nil {
		b.Log("runc CLI not installed (apt-get install runc): no baseline")
		return nil
	}
	rootfs, err := hostimage.Build(dataDir)
	if err != nil {
		b.Fatalf("host image: %v", err)
	}
	dir := filepath.Join(dataDir, "runc-baseline")
	rb := &runcBaseline{bin: bin, root: filepath.Join(dir, "state"), bundle: filepath.Join(dir, "bundle")}
	if err := os.MkdirAll(rb.bundle, 0o700); err != nil {
		b.Fatal(err)
	}
	if err := writeBundle(rb.bundle, rootfs, []string{"/usr/bin/true"}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if rb.idle != "" {
			exec.Command(rb.bin, "--root", rb.root, "delete", "--force", rb.idle).Run()
		}
	})
	return rb
}

func (rb *runcBaseline) run(b *testing.B, i int) time.Duration {
	if rb == nil {
		return 0
	}
	start := time.Now()
	out, err := exec.Command(rb.bin, "--root", rb.root, "run", "--bundle", rb.bundle, "base-"+strconv.Itoa(i)).CombinedOutput()
	if err != nil {
		b.Fatalf("runc run: %v: %s", err, out)
	}
	return time.Since(start)
}

func (rb *runcBaseline) startIdle(b *testing.B) {
	if rb == nil {
		return
	}
	idleBundle := rb.bundle + "-idle"
	os.MkdirAll(idleBundle, 0o700)
	data, err := os.ReadFile(filepath.Join(rb.bundle, "config.json"))
	if err != nil {
		b.Fatal(err)
	}
	var spec specs.Spec
	json.Unmarshal(data, &spec)
	spec.Process.Args = []string{"/usr/bin/sleep", "3600"}
	data, _ = json.Marshal(&spec)
	os.WriteFile(filepath.Join(idleBundle, "config.json"), data, 0o600)
	rb.idle = "base-idle"
	// No pipes: the detached container inherits runc's stdio and would
	// hold a pipe open for as long as it lives.
	cmd := exec.Command(rb.bin, "--root", rb.root, "run", "--detach", "--bundle", idleBundle, rb.idle)
	if err := cmd.Run(); err != nil {
		b.Fatalf("runc run --detach: %v", err)
	}
}

func (rb *runcBaseline) exec(b *testing.B) time.Duration {
	if rb == nil {
		return 0
	}
	start := time.Now()
	if out, err := exec.Command(rb.bin, "--root", rb.root, "exec", rb.idle, "/usr/bin/true").CombinedOutput(); err != nil {
		b.Fatalf("runc exec: %v: %s", err, out)
	}
	return time.Since(start)
}

// writeBundle writes an OCI config whose root is the image's lower dir,
// read-only, with the image's binds, a private /tmp and the same limits as a
// paddock sandbox.
func writeBundle(dir string, rootfs *runtime.Rootfs, args []string) error {
	quota := int64(benchResources.VCPUs * 100000)
	period := uint64(100000)
	mem := benchResources.MemoryMB << 20
	pids := benchResources.PIDs
	caps := sandbox.Capabilities
	spec := specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: rootfs.Lower, Readonly: true},
		Process: &specs.Process{
			Args: args, Cwd: "/", Env: []string{"PATH=/usr/bin:/bin"},
			NoNewPrivileges: true,
			Capabilities:    &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps},
		},
		Hostname: "baseline",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777"}},
		},
		Linux: &specs.Linux{
			// Empty: runc puts each container in a cgroup named after its id.
			Resources: &specs.LinuxResources{
				Memory: &specs.LinuxMemory{Limit: &mem, Swap: &mem},
				CPU:    &specs.LinuxCPU{Quota: &quota, Period: &period},
				Pids:   &specs.LinuxPids{Limit: &pids},
			},
			Namespaces:    []specs.LinuxNamespace{{Type: "pid"}, {Type: "mount"}, {Type: "ipc"}, {Type: "uts"}, {Type: "network"}, {Type: "cgroup"}},
			MaskedPaths:   []string{"/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
	for _, bind := range rootfs.ReadOnlyBinds {
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: bind.Target, Type: "bind", Source: bind.Source,
			Options: []string{"rbind", "ro", "nosuid", "nodev"}})
	}
	data, err := json.MarshalIndent(&spec, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "config.json"), data, 0o600)
}

// BenchmarkCreateInitHelper times create → `true` finished with the
// container started from paddock-init (as paddock does) and from this
// process (libcontainer re-executing the whole test binary as init),
// interleaved in one run, on two drivers of their own.
func BenchmarkCreateInitHelper(b *testing.B) {
	helper := setup(b)
	self := setupWith(b, func(c *runc.Config) { c.InitPath = "" })
	ctx := context.Background()
	var withHelper, withSelf, cpuHelper, cpuSelf []time.Duration
	for i := 0; b.Loop(); i++ {
		for k, e := range []*env{helper, self} {
			id := fmt.Sprintf("bench-%d-%d", k, i)
			start := time.Now()
			cl := e.create(b, id)
			if err := run(ctx, cl, "true"); err != nil {
				b.Fatal(err)
			}
			took := time.Since(start)
			b.StopTimer()
			// The sandbox's cgroup holds its init from before libcontainer's
			// Go half runs: its CPU time is what the init binary costs,
			// plus the agent's start and `true`, and moves less with the
			// machine's load than the latency does.
			st, err := e.driver.Stats(ctx, id)
			if err != nil {
				b.Fatal(err)
			}
			if e == helper {
				withHelper, cpuHelper = append(withHelper, took), append(cpuHelper, st.CPUUsage)
			} else {
				withSelf, cpuSelf = append(withSelf, took), append(cpuSelf, st.CPUUsage)
			}
			e.destroy(b, id)
			b.StartTimer()
		}
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(ms(pct(withHelper, 50)), "helper-p50-ms")
	b.ReportMetric(ms(pct(withHelper, 99)), "helper-p99-ms")
	b.ReportMetric(ms(pct(withSelf, 50)), "self-p50-ms")
	b.ReportMetric(ms(pct(withSelf, 99)), "self-p99-ms")
	b.ReportMetric(ms(pct(withHelper, 50))/ms(pct(withSelf, 50)), "ratio-p50")
	b.ReportMetric(ms(pct(cpuHelper, 50)), "helper-sandbox-cpu-p50-ms")
	b.ReportMetric(ms(pct(cpuSelf, 50)), "self-sandbox-cpu-p50-ms")
}
