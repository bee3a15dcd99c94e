package bench

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/daemon"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/sdk"
)

// burstPool holds the burst's sandboxes: 128 /30 slots, more than a burst
// needs, apart from the other benchmarks' pools.
var burstPool = netip.MustParsePrefix("10.213.248.0/23")

// burstTimeout bounds one whole burst, create to delete.
const burstTimeout = 3 * time.Minute

// burstSize is BenchmarkBurst's number of concurrent creates; overridden
// with PADDOCK_BENCH_BURST (at most maxBurst) for the 10- and 50-create
// figures.
const (
	burstSize = 100
	maxBurst  = 120
	maxBursts = 5 // iterations of one burst benchmark
)

// burstStack is a daemon serving its API on a loopback listener, with a
// client holding its admin token. Other benchmarks (warm pools) start one
// with their own daemon settings through burstOptions.Configure.
type burstStack struct {
	d      *daemon.Daemon
	client *sdk.Client
	phases *phaseLog // the node's step timings of every create
}

// burstOptions change the stack a burst runs against.
type burstOptions struct {
	// NoNetwork gives the sandboxes loopback only.
	NoNetwork bool
	// SelfInit starts sandboxes from the test binary itself instead of
	// paddock-init (libcontainer re-executes the whole binary as init).
	SelfInit bool
	// Configure, when set, changes the daemon's config before it starts
	// (after the benchmark's own settings).
	Configure func(*daemon.Config)
}

func startBurstStack(b *testing.B, opts burstOptions) *burstStack {
	b.Helper()
	ctx := context.Background()
	agentPath, dir := benchDir(b)
	cfg := daemon.Config{DataDir: dir, NetworkPool: burstPool, Domain: "localhost", NoNetwork: opts.NoNetwork,
		MaxSandboxes: maxBurst + 8}
	if opts.NoNetwork {
		cfg.NetworkPool = netip.Prefix{}
	}
	if opts.Configure != nil {
		opts.Configure(&cfg)
	}
	phases := newPhaseLog()
	opts2 := []daemon.Option{daemon.WithLogger(phases.logger())}
	if opts.SelfInit {
		opts2 = append(opts2, daemon.WithInitPath(""))
	}
	d, hs := startDaemon(b, cfg, agentPath, opts2...)
	mgr := d.Node()
	// Whatever a failed burst left, deleted before the daemon closes.
	b.Cleanup(func() {
		items, _, _ := mgr.List(ctx, sandbox.ListOptions{Limit: 500})
		for _, sb := range items {
			if err := mgr.Delete(ctx, sb.ID); err != nil {
				b.Errorf("cleanup: delete %s: %v", sb.ID, err)
			}
		}
	})
	token, _ := d.AdminToken()
	return &burstStack{d: d, client: sdk.New(hs.URL, token, sdk.WithHTTPClient(newBurstHTTPClient())), phases: phases}
}

// burstResult is one burst: each create → first command finished, and the
// wall time from the first request to the last command's end.
type burstResult struct {
	latencies []time.Duration
	wall      time.Duration
	// cpu is the CPU time of the whole burst per sandbox: this process
	// (daemon and client), paddock-init, and each sandbox's cgroup (its
	// init from libcontainer's Go half on, the agent and `true`).
	cpu time.Duration
}

// burst creates n sandboxes at once through the API, each running `true`
// as soon as its create returns, then deletes them all (untimed). A failed
// create fails the benchmark: a burst must not lose a sandbox.
func (s *burstStack) burst(b *testing.B, n int, req api.CreateSandboxRequest) burstResult {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), burstTimeout)
	defer cancel()
	var (
		mu   sync.Mutex
		res  burstResult
		ids  []string
		errs []error
		wg   sync.WaitGroup
	)
	cpuBefore := processCPU() + helperCPU()
	start := time.Now()
	for i := range n {
		wg.Go(func() {
			t0 := time.Now()
			sb, err := s.client.Create(ctx, req)
			if err == nil {
				mu.Lock()
				ids = append(ids, sb.ID)
				mu.Unlock()
				var c *sdk.Command
				c, err = sb.RunCommand(ctx, api.CommandRequest{Cmd: "true"})
				if err == nil && c.ExitCodeOr(-1) != 0 {
					err = fmt.Errorf("true exited with %d", c.ExitCodeOr(-1))
				}
			}
			took := time.Since(t0)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("sandbox %d: %w", i, err))
				return
			}
			res.latencies = append(res.latencies, took)
		})
	}
	wg.Wait()
	res.wall = time.Since(start)
	cpu := processCPU() + helperCPU() - cpuBefore
	for _, id := range ids {
		if st, err := s.d.Node().Stats(ctx, id); err == nil {
			cpu += st.CPUUsage
		}
	}
	res.cpu = cpu / time.Duration(max(n, 1))
	s.deleteAll(b, ids)
	for _, err := range errs {
		b.Error(err)
	}
	if len(errs) > 0 {
		b.FailNow()
	}
	return res
}

// deleteAll deletes ids a few at a time.
func (s *burstStack) deleteAll(b *testing.B, ids []string) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), burstTimeout)
	defer cancel()
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for _, id := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := s.client.Sandbox(id).Delete(ctx); err != nil {
				b.Errorf("delete %s: %v", id, err)
			}
		})
	}
	wg.Wait()
}

// burstN is the burst size: burstSize, or $PADDOCK_BENCH_BURST.
func burstN(b *testing.B) int {
	b.Helper()
	n := burstSize
	if v := os.Getenv("PADDOCK_BENCH_BURST"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 || n > maxBurst {
			b.Fatalf("PADDOCK_BENCH_BURST=%q: want 1..%d", v, maxBurst)
		}
	}
	return n
}

// BenchmarkBurst creates burstN sandboxes at once through the HTTP API,
// each running `true` once its create returned: p50/p99 of create → first
// command finished over all bursts, and the median wall time of a burst.
// The same-run baseline is one create → first command alone on the same
// daemon. Each iteration is one burst; -benchtime 3x is plenty.
func BenchmarkBurst(b *testing.B) {
	s := startBurstStack(b, burstOptions{})
	s.reportBurst(b, burstN(b), api.CreateSandboxRequest{})
}

// BenchmarkBurstSelfInit is BenchmarkBurst with sandboxes started from the
// test binary itself rather than paddock-init: what the helper saves (run
// both in one go: -bench 'Burst$|BurstSelfInit').
func BenchmarkBurstSelfInit(b *testing.B) {
	s := startBurstStack(b, burstOptions{SelfInit: true})
	s.reportBurst(b, burstN(b), api.CreateSandboxRequest{})
}

// BenchmarkBurstNoNetwork is BenchmarkBurst with loopback-only sandboxes.
func BenchmarkBurstNoNetwork(b *testing.B) {
	s := startBurstStack(b, burstOptions{NoNetwork: true})
	s.reportBurst(b, burstN(b), api.CreateSandboxRequest{})
}

// reportBurst runs one burst per iteration, each after one lone create as
// the same-run baseline, and reports both.
func (s *burstStack) reportBurst(b *testing.B, n int, req api.CreateSandboxRequest) {
	b.Helper()
	var all, alone, walls, cpus []time.Duration
	// At most maxBursts, whatever -benchtime asks (-bench . -benchtime 60x
	// would otherwise run 60 bursts).
	for range min(b.N, maxBursts) {
		b.StopTimer()
		s.phases.collect(false) // the bursts' phases only
		one := s.burst(b, 1, req)
		alone = append(alone, one.latencies...)
		s.phases.collect(true)
		b.StartTimer()
		r := s.burst(b, n, req)
		all = append(all, r.latencies...)
		walls, cpus = append(walls, r.wall), append(cpus, r.cpu)
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(ms(pct(all, 50)), "p50-ms")
	b.ReportMetric(ms(pct(all, 99)), "p99-ms")
	b.ReportMetric(ms(pct(walls, 50)), "wall-ms")
	b.ReportMetric(ms(pct(alone, 50)), "alone-p50-ms")
	b.ReportMetric(ms(pct(walls, 50))/float64(n), "wall-per-sandbox-ms")
	b.ReportMetric(ms(pct(cpus, 50)), "cpu-per-sandbox-ms")
	s.phases.report(b, "")
	b.Logf("burst of %d: n=%d p50=%v p99=%v wall p50=%v cpu/sandbox %v; alone p50=%v", n, len(all), pct(all, 50), pct(all, 99), pct(walls, 50), pct(cpus, 50), pct(alone, 50))
}

// newBurstHTTPClient keeps a connection per concurrent create.
func newBurstHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil, // the daemon is on loopback
		MaxIdleConnsPerHost: maxBurst,
		IdleConnTimeout:     time.Minute,
	}}
}
