package bench

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/daemon"
	"github.com/paddock-dev/paddock/internal/doctor"
	"github.com/paddock-dev/paddock/internal/leakcheck"
	"github.com/paddock-dev/paddock/internal/proxy"
	"github.com/paddock-dev/paddock/internal/runtime/agentbin"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/sdk"
)

// proxyPool is the benchmark's address pool: a /24 of paddock's default
// pool beside the e2e tests' 10.213.250.0/24, so both can run at once and
// nothing routes off the machine (the host has no route for it beyond the
// veths the benchmark creates).
var proxyPool = netip.MustParsePrefix("10.213.251.0/24")

// unreachableDNS is the sandbox resolver's upstream: a loopback port nobody
// serves, so no lookup can leave the machine (the benchmark makes none).
var unreachableDNS = netip.MustParseAddrPort("127.0.0.1:9")

const echoPort = 8080

// Sizes of one measurement round per response size. Every loop is bounded
// in count and in time; the budget keeps -benchtime 60x (the existing
// benchmarks' command line) inside go test's default 10 min timeout.
const (
	latencyTime    = 30 * time.Second // cap of one sequential latency pass
	throughputTime = 3 * time.Second  // one concurrent window, per path
	clients        = 8                // concurrent keep-alive clients in a window
	roundsBudget   = 90 * time.Second // per size: rounds after the first start only within it
	requestTimeout = 10 * time.Second
)

// BenchmarkProxy measures a sandbox's HTTP port directly at its address and
// through the port proxy (path form with the signed URL's token; host form
// in the latency pass), in the same run, for a 2-byte and a 1 MiB response:
// sequential latency p50/p99 and requests/s of concurrent keep-alive
// clients, with the proxy-to-direct ratios. When nginx is installed it
// proxies the same port as a reference (its figures are nginx-*), so the
// ratios can be read against what a mature proxy achieves on the same
// cores. One b.Loop iteration is one full round; run with -benchtime 1x.
func BenchmarkProxy(b *testing.B) {
	ps := startProxyStack(b)
	for _, size := range []struct {
		name, path string
		n          int // sequential requests per path in a round
		bytes      int64
	}{
		{"small", "/small", 2000, 2},
		{"1MiB", "/big", 300, 1 << 20},
	} {
		b.Run(size.name, func(b *testing.B) {
			ps.measure(b, size.path, size.n, size.bytes)
		})
	}
}

type proxyStack struct {
	sandboxID string
	direct    string // http://<sandbox address>:8080
	pathBase  string // http://127.0.0.1:<port>/s/<id>/8080
	hostBase  string // http://127.0.0.1:<port>, sent with Host: 8080-<id>.localhost
	host      string
	token     string // the signed URL's token
	// nginx is a reference reverse proxy to the same port (Debian's
	// nginx-light), "" when nginx is not installed.
	nginx string
	// Separate transports: each path gets its own keep-alive pool, and
	// none reuses connections another opened.
	directClient, proxyClient, nginxClient *http.Client
}

// startProxyStack starts what `paddock serve` runs, in-process through
// internal/daemon as the e2e tests do, on a loopback listener; then creates
// one sandbox with a private port 8080 running bench/echoserver. Cleanups
// delete the sandbox, close everything and check that no mount, cgroup,
// process or pd* veth is left.
func startProxyStack(b *testing.B) *proxyStack {
	b.Helper()
	ctx := context.Background()
	if why := doctor.SandboxReady(ctx); why != "" {
		b.Skip("sandboxes cannot run here: " + why)
	}
	agentPath, err := agentbin.Path(ctx, filepath.Join(os.TempDir(), "paddock-test-agent"))
	if err != nil {
		b.Fatalf("agent binary: %v", err)
	}
	echo := buildEchoServer(b)

	dir, err := os.MkdirTemp("", "pb-")
	if err != nil {
		b.Fatal(err)
	}
	// Registered first, so it runs last: after the sandbox is deleted and
	// every service closed. Filled in once the sandbox exists.
	var sandboxID string
	b.Cleanup(func() {
		checkNoLeaks(b, dir, sandboxID)
		os.RemoveAll(dir)
	})

	// MaxTimeout allows the long sandbox timeout below.
	d, hs := startDaemon(b, daemon.Config{DataDir: dir, NetworkPool: proxyPool, Domain: "localhost", MaxTimeout: time.Hour}, agentPath)
	mgr := d.Node()
	adminToken, _ := d.AdminToken()

	// Through the API, as a user would; the cleanup deletes whatever
	// exists, so a failure half-way leaves nothing either.
	b.Cleanup(func() {
		items, _, _ := mgr.List(ctx, sandbox.ListOptions{Limit: 500})
		for _, sb := range items {
			if err := mgr.Delete(ctx, sb.ID); err != nil {
				b.Errorf("cleanup: delete %s: %v", sb.ID, err)
			}
		}
	})
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	client := sdk.New(hs.URL, adminToken)
	// The default timeout (5 min) could stop the sandbox during a long
	// -benchtime run; resources are the defaults a user gets (1 vCPU).
	sb, err := client.Create(cctx, api.CreateSandboxRequest{TimeoutMs: time.Hour.Milliseconds(), Ports: []api.PortSpec{{Port: echoPort}}})
	if err != nil {
		b.Fatalf("create: %v", err)
	}
	sandboxID = sb.ID
	addr, err := netip.ParseAddr(sb.Address)
	if err != nil || !proxyPool.Contains(addr) {
		b.Fatalf("sandbox address %q is not in %v", sb.Address, proxyPool)
	}
	signed, err := sb.SignedURL(cctx, echoPort, time.Hour)
	if err != nil {
		b.Fatalf("signed URL: %v", err)
	}
	su, err := url.Parse(signed.URL)
	if err != nil {
		b.Fatalf("signed URL %q: %v", signed.URL, err)
	}

	ps := &proxyStack{
		sandboxID:    sb.ID,
		direct:       "http://" + netip.AddrPortFrom(addr, echoPort).String(),
		pathBase:     hs.URL + proxy.PathPrefix(sb.ID, echoPort),
		hostBase:     hs.URL,
		host:         fmt.Sprintf("%d-%s.localhost", echoPort, sb.ID),
		token:        su.Query().Get(proxy.TokenParam),
		directClient: newBenchClient(),
		proxyClient:  newBenchClient(),
		nginxClient:  newBenchClient(),
	}
	if ps.token == "" {
		b.Fatalf("signed URL %q has no %s", signed.URL, proxy.TokenParam)
	}
	// Registered after the delete above, so it runs before it: no pooled
	// connection to the sandbox outlives it.
	b.Cleanup(func() {
		ps.directClient.CloseIdleConnections()
		ps.proxyClient.CloseIdleConnections()
		ps.nginxClient.CloseIdleConnections()
	})
	// Its cleanup runs before the sandbox's delete too.
	ps.nginx = startNginx(b, netip.AddrPortFrom(addr, echoPort))

	ag, err := mgr.Agent(cctx, sb.ID)
	if err != nil {
		b.Fatalf("agent: %v", err)
	}
	startEchoServer(b, cctx, ag, echo)
	ps.waitReady(b)
	return ps
}

// benchDir skips unless sandboxes run here, and returns the agent binary
// and a fresh data dir, removed at the end after a check that the
// benchmark left nothing of its sandboxes (mounts, cgroups, veths,
// processes) behind.
func benchDir(b *testing.B) (agentPath, dir string) {
	b.Helper()
	ctx := context.Background()
	if why := doctor.SandboxReady(ctx); why != "" {
		b.Skip("sandboxes cannot run here: " + why)
	}
	agentPath, err := agentbin.Path(ctx, filepath.Join(os.TempDir(), "paddock-test-agent"))
	if err != nil {
		b.Fatalf("agent binary: %v", err)
	}
	dir, err = os.MkdirTemp("", "pb-")
	if err != nil {
		b.Fatal(err)
	}
	before := leakcheck.Snapshot(leakcheck.Scope{Dirs: []string{dir}, IDs: []string{"sb-*"}, LinkPrefix: "pd"})
	b.Cleanup(func() {
		before.Check(b)
		os.RemoveAll(dir)
	})
	return agentPath, dir
}

// startDaemon starts the stack on cfg (PublicURL: the listener's) behind
// a loopback listener, as `paddock serve` does; the cleanup closes both.
// The sandboxes' resolver forwards nowhere.
func startDaemon(b *testing.B, cfg daemon.Config, agentPath string, opts ...daemon.Option) (*daemon.Daemon, *httptest.Server) {
	b.Helper()
	// Unstarted, so that the routes' base URL knows the listener's port.
	hs := httptest.NewUnstartedServer(nil)
	cfg.PublicURL = "http://localhost:" + portOf(hs.Listener.Addr())
	opts = append([]daemon.Option{daemon.WithAgentPath(agentPath), daemon.WithInitPath(initBinary(b)),
		daemon.WithDNSUpstream(unreachableDNS)}, opts...)
	d, err := daemon.Start(context.Background(), cfg, opts...)
	if err != nil {
		hs.Close()
		b.Fatalf("start the daemon: %v", err)
	}
	hs.Config.Handler = d.Handler()
	hs.Start()
	b.Cleanup(func() {
		d.CloseStreams()
		hs.Close()
		if err := d.Close(); err != nil {
			b.Errorf("close the daemon: %v", err)
		}
	})
	return d, hs
}

func newBenchClient() *http.Client {
	return &http.Client{
		Timeout: requestTimeout,
		Transport: &http.Transport{
			Proxy:               nil, // never an environment proxy: the targets are host-local
			DialContext:         (&net.Dialer{Timeout: 3 * time.Second}).DialContext,
			MaxIdleConns:        4 * clients,
			MaxIdleConnsPerHost: 2 * clients, // every concurrent client keeps its connection
			IdleConnTimeout:     time.Minute,
			DisableCompression:  true,
		},
	}
}

var (
	echoOnce sync.Once
	echoDir  string
	echoBin  string
	echoErr  error
)

// buildEchoServer builds bench/echoserver once per test binary, static so
// that it runs in the sandbox's image whatever its libraries.
func buildEchoServer(b *testing.B) string {
	b.Helper()
	echoOnce.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			echoErr = fmt.Errorf("go tool not in PATH: %w", err)
			return
		}
		if echoDir, echoErr = os.MkdirTemp("", "pb-echo-"); echoErr != nil {
			return
		}
		echoBin = filepath.Join(echoDir, "echoserver")
		// go test runs in the package dir, so ./echoserver is bench/echoserver.
		cmd := exec.Command(goBin, "build", "-trimpath", "-o", echoBin, "./echoserver")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			echoErr = fmt.Errorf("go build ./echoserver: %w: %s", err, out)
		}
	})
	if echoErr != nil {
		b.Fatal(echoErr)
	}
	return echoBin
}

// removeEchoBuild deletes the echoserver build; TestMain calls it once all
// benchmarks are done.
func removeEchoBuild() {
	if echoDir != "" {
		os.RemoveAll(echoDir)
	}
}

// startEchoServer copies the binary into the sandbox's home and starts it
// detached: Start returns once it runs, and it lives until the sandbox goes.
func startEchoServer(b *testing.B, ctx context.Context, ag *agent.Client, bin string) {
	b.Helper()
	data, err := os.ReadFile(bin)
	if err != nil {
		b.Fatal(err)
	}
	var archive bytes.Buffer
	tw := tar.NewWriter(&archive)
	if err := tw.WriteHeader(&tar.Header{Name: "echoserver", Mode: 0o755, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
		b.Fatal(err)
	}
	tw.Write(data)
	tw.Close()
	if _, err := ag.WriteTar(ctx, "/home/user", false, &archive); err != nil {
		b.Fatalf("write echoserver: %v", err)
	}
	cmd, err := ag.Start(ctx, agent.CommandRequest{Cmd: "/home/user/echoserver", Args: []string{"-addr", fmt.Sprintf(":%d", echoPort)}})
	if err != nil {
		b.Fatalf("start echoserver: %v", err)
	}
	if cmd.Status != agent.StatusRunning {
		b.Fatalf("echoserver is %s (error %q), want running", cmd.Status, cmd.Error)
	}
}

// waitReady polls the sandbox address until the server answers, then
// checks that both proxy forms reach it.
func (ps *proxyStack) waitReady(b *testing.B) {
	b.Helper()
	var err error
	for range 100 { // bounded: about 10 s
		if err = ps.get(ps.directClient, ps.direct+"/small", "", 2); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		b.Fatalf("echoserver never answered on %s: %v", ps.direct, err)
	}
	if err := ps.get(ps.proxyClient, ps.pathURL("/small"), "", 2); err != nil {
		b.Fatalf("path form: %v", err)
	}
	if err := ps.get(ps.proxyClient, ps.hostBase+"/small", ps.host, 2); err != nil {
		b.Fatalf("host form: %v", err)
	}
	if ps.nginx != "" {
		if err := ps.get(ps.nginxClient, ps.nginx+"/small", "", 2); err != nil {
			b.Fatalf("nginx reference: %v", err)
		}
	}
}

// pathURL is the signed URL's path form: the token in the query, as a
// user's client sends it.
func (ps *proxyStack) pathURL(p string) string {
	return ps.pathBase + p + "?" + proxy.TokenParam + "=" + ps.token
}

// get fetches url (with host as Host header and the token in a header when
// host is set) and reads the whole body, which must be want bytes.
func (ps *proxyStack) get(c *http.Client, url, host string, want int64) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if host != "" {
		req.Host = host
		req.Header.Set(proxy.TokenHeader, ps.token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		return fmt.Errorf("GET %s: body: %w", url, err)
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	case n != want:
		return fmt.Errorf("GET %s: %d bytes, want %d", url, n, want)
	}
	return nil
}

// target is one way to the echoserver.
type target struct {
	client    *http.Client
	url, host string
}

func (ps *proxyStack) measure(b *testing.B, path string, n int, size int64) {
	// The ways to the server, in the order the figures name them: direct,
	// path form, host form, and nginx when installed.
	ways := []target{
		{ps.directClient, ps.direct + path, ""},
		{ps.proxyClient, ps.pathURL(path), ""},
		{ps.proxyClient, ps.hostBase + path, ps.host},
	}
	const direct, viaPath, viaHost, viaNginx = 0, 1, 2, 3
	if ps.nginx != "" {
		ways = append(ways, target{ps.nginxClient, ps.nginx + path, ""})
	}
	// Throughput windows: direct, path form and nginx.
	loaded := []int{direct, viaPath}
	if ps.nginx != "" {
		loaded = append(loaded, viaNginx)
	}
	// Warm every pool (and the proxies' own pools to the sandbox) so that
	// no sample pays a TCP handshake.
	for range 2 * clients {
		for _, t := range ways {
			if err := ps.get(t.client, t.url, t.host, size); err != nil {
				b.Fatal(err)
			}
		}
	}

	lat := make([][]time.Duration, len(ways))
	reqs := make([]int, len(ways)) // completed in throughput windows
	var windows time.Duration
	start := time.Now()
	rounds, skipped := 0, 0
	for b.Loop() {
		if rounds > 0 && time.Since(start) > roundsBudget {
			skipped++ // over budget: the figures pool the rounds done so far
			continue
		}
		rounds++
		// Latency: one request at a time, the ways interleaved so that any
		// drift in the host's load hits them alike.
		deadline := time.Now().Add(latencyTime)
		for i := 0; i < n && time.Now().Before(deadline); i++ {
			for j, t := range ways {
				t0 := time.Now()
				if err := ps.get(t.client, t.url, t.host, size); err != nil {
					b.Fatal(err)
				}
				lat[j] = append(lat[j], time.Since(t0))
			}
		}
		// Throughput: concurrent clients, one window per way; the order
		// rotates between rounds.
		for k := range loaded {
			j := loaded[(k+rounds)%len(loaded)]
			done, err := ps.throughput(ways[j], size)
			if err != nil {
				b.Fatal(err)
			}
			reqs[j] += done
		}
		windows += throughputTime
	}
	if skipped > 0 {
		b.Logf("budget of %s spent: %d rounds measured, %d skipped", roundsBudget, rounds, skipped)
	}

	b.ReportMetric(0, "ns/op") // per-op time is a whole round; the figures are below
	p50 := func(j int) float64 { return ms(pct(lat[j], 50)) }
	p99 := func(j int) float64 { return ms(pct(lat[j], 99)) }
	rps := func(j int) float64 { return float64(reqs[j]) / windows.Seconds() }
	b.ReportMetric(p50(direct), "direct-p50-ms")
	b.ReportMetric(p99(direct), "direct-p99-ms")
	b.ReportMetric(p50(viaPath), "proxy-p50-ms")
	b.ReportMetric(p99(viaPath), "proxy-p99-ms")
	b.ReportMetric(p50(viaPath)-p50(direct), "added-p50-ms")
	b.ReportMetric(p99(viaPath)-p99(direct), "added-p99-ms")
	b.ReportMetric(p50(viaHost), "host-p50-ms")
	b.ReportMetric(p99(viaHost), "host-p99-ms")
	b.ReportMetric(rps(direct), "direct-req/s")
	b.ReportMetric(rps(viaPath), "proxy-req/s")
	if rps(direct) > 0 {
		b.ReportMetric(rps(viaPath)/rps(direct), "ratio-req/s")
	}
	b.Logf("%s: latency n=%d per way: direct p50=%.3fms p99=%.3fms; path form p50=%.3fms p99=%.3fms (added p50 %.3fms); host form p50=%.3fms p99=%.3fms",
		path, len(lat[direct]), p50(direct), p99(direct), p50(viaPath), p99(viaPath), p50(viaPath)-p50(direct), p50(viaHost), p99(viaHost))
	b.Logf("%s: %d clients, %s windows: direct %.0f req/s (%.1f MiB/s), proxy %.0f req/s (%.1f MiB/s), %.0f%%",
		path, clients, windows, rps(direct), rps(direct)*float64(size)/(1<<20), rps(viaPath), rps(viaPath)*float64(size)/(1<<20), 100*rps(viaPath)/max(rps(direct), 1))
	if ps.nginx == "" {
		return
	}
	// The reference: what a mature C proxy adds on the same machine in the
	// same run, so the ratios above can be read against the hardware.
	b.ReportMetric(p50(viaNginx)-p50(direct), "nginx-added-p50-ms")
	b.ReportMetric(rps(viaNginx), "nginx-req/s")
	if rps(direct) > 0 {
		b.ReportMetric(rps(viaNginx)/rps(direct), "nginx-ratio-req/s")
	}
	b.Logf("%s: nginx reference: p50=%.3fms p99=%.3fms (added p50 %.3fms), %.0f req/s, %.0f%% of direct; paddock's proxy does %.0f%% of nginx's req/s",
		path, p50(viaNginx), p99(viaNginx), p50(viaNginx)-p50(direct), rps(viaNginx), 100*rps(viaNginx)/max(rps(direct), 1), 100*rps(viaPath)/max(rps(viaNginx), 1))
}

// throughput runs clients goroutines, each sending requests back to back on
// its keep-alive connection for throughputTime, and returns how many
// completed. A request in flight at the deadline is let finish (bounded by
// the client's timeout) but not counted.
func (ps *proxyStack) throughput(t target, size int64) (int, error) {
	var done atomic.Int64
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	deadline := time.Now().Add(throughputTime)
	for range clients {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if err := ps.get(t.client, t.url, t.host, size); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				if time.Now().Before(deadline) {
					done.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return int(done.Load()), firstErr
}

// checkNoLeaks fails b if anything of the benchmark's sandbox is left: a
// mount under its data dir (overlay, netns pin), its cgroup or a process in
// it, or a veth with an address from proxyPool. It is scoped to what this
// benchmark made, rather than every sb-* cgroup and pd* link as the e2e
// leak check is, because e2e tests may run beside it on the same host.
// Dying processes get up to 5 s to go.
func checkNoLeaks(b *testing.B, dir, id string) {
	b.Helper()
	scope := leakcheck.Scope{Dirs: []string{dir}}
	if id != "" {
		scope.IDs = []string{id}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := append(leakcheck.Snapshot(scope).Entries, poolLinks()...)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, l := range left {
				b.Errorf("leak: %s", l)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// poolLinks lists this namespace's interfaces with an address in proxyPool:
// the host ends of the benchmark's veths.
func poolLinks() []string {
	ifs, err := net.Interfaces()
	if err != nil {
		return []string{"interfaces: " + err.Error()}
	}
	var out []string
	for _, ifc := range ifs {
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && proxyPool.Contains(p.Addr()) {
				out = append(out, "link "+ifc.Name+" "+a.String())
			}
		}
	}
	return out
}

func portOf(a net.Addr) string {
	_, port, _ := net.SplitHostPort(a.String())
	return port
}
