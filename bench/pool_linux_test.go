package bench

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/examples/goose-standin/standinimage"
	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/control"
	"github.com/paddock-dev/paddock/internal/daemon"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/sdk"
)

// Address pools of the warm-pool benchmarks, apart from the others'.
var (
	warmClaimPool      = netip.MustParsePrefix("10.213.240.0/24")
	warmActivationPool = netip.MustParsePrefix("10.213.241.0/24")
)

// startPoolDaemon starts a networked daemon on a fresh data dir with a
// leak check, and removes its pools (and their idle sandboxes, which no
// list shows) before it closes.
func startPoolDaemon(b *testing.B, network netip.Prefix, opts ...daemon.Option) (*daemon.Daemon, string) {
	b.Helper()
	ctx := context.Background()
	agentPath, dir := benchDir(b)
	d, _ := startDaemon(b, daemon.Config{DataDir: dir, NetworkPool: network, Domain: "localhost"}, agentPath, opts...)
	b.Cleanup(func() { // before startDaemon's close (cleanups run last first)
		for _, p := range d.Pools().List() {
			if err := d.Pools().Remove(ctx, p.Name); err != nil {
				b.Errorf("remove pool %s: %v", p.Name, err)
			}
		}
		deadline := time.Now().Add(time.Minute)
		for len(d.Node().Pooled()) > 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	})
	return d, dir
}

// waitIdle waits, untimed, until pool name holds want idle sandboxes.
func waitIdle(b *testing.B, d *daemon.Daemon, name string, want int) {
	b.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		st, err := d.Pools().Get(name)
		if err != nil {
			b.Fatal(err)
		}
		if st.Idle >= want {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("pool %s never refilled: %+v", name, st)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// BenchmarkWarmClaim times a create served from a warm pool until a first
// command (`true`) finished in it, against a cold create → first command
// of the same request but for its key (another memory limit, so no pool
// serves it), interleaved, on a networked daemon as `paddock serve` runs
// it. Both go through the daemon's create path (pools, then node) and
// node's Exec, without HTTP. Between samples, untimed, both sandboxes are
// deleted and the pool refills. The claimer's env and owner are applied
// by the claim, as for any warm create.
func BenchmarkWarmClaim(b *testing.B) {
	// The phases of every create, the pool's refills and the cold
	// baseline's alike: where a networked create's time goes.
	phases := newPhaseLog()
	d, _ := startPoolDaemon(b, warmClaimPool, daemon.WithLogger(phases.logger()))
	ctx := context.Background()
	if _, err := d.Pools().Set(ctx, sandbox.PoolSpec{Name: "bench", Resources: benchResources, Min: 2, Max: 2}); err != nil {
		b.Fatal(err)
	}
	coldRes := benchResources
	coldRes.MemoryMB++
	var claimOnly []time.Duration
	first := func(req sandbox.CreateRequest) (time.Duration, sandbox.Sandbox) {
		start := time.Now()
		sb, err := d.Pools().Create(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		if sb.Warm {
			claimOnly = append(claimOnly, time.Since(start))
		}
		cmd, err := d.Node().Exec(ctx, sb.ID, sandbox.ExecRequest{Cmd: "true", Wait: true})
		if err != nil || cmd.ExitCode == nil || *cmd.ExitCode != 0 {
			b.Fatalf("first command: %+v, %v", cmd, err)
		}
		return time.Since(start), sb
	}
	var warm, cold, next []time.Duration
	for b.Loop() {
		b.StopTimer()
		waitIdle(b, d, "bench", 2)
		b.StartTimer()
		took, sb := first(sandbox.CreateRequest{Resources: benchResources, TeamID: "bench", Env: map[string]string{"RUN": "warm"}})
		if !sb.Warm {
			b.Fatalf("not served warm: %+v", sb)
		}
		warm = append(warm, took)
		b.StopTimer()
		// The same command again: what the first one costs beyond any other.
		t1 := time.Now()
		if _, err := d.Node().Exec(ctx, sb.ID, sandbox.ExecRequest{Cmd: "true", Wait: true}); err != nil {
			b.Fatal(err)
		}
		next = append(next, time.Since(t1))
		tookCold, cs := first(sandbox.CreateRequest{Resources: coldRes, TeamID: "bench", Env: map[string]string{"RUN": "cold"}})
		if cs.Warm {
			b.Fatal("the baseline was served warm")
		}
		cold = append(cold, tookCold)
		for _, id := range []string{sb.ID, cs.ID} {
			if err := d.Node().Delete(ctx, id); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(ms(pct(warm, 50)), "claim-p50-ms")
	b.ReportMetric(ms(pct(warm, 99)), "claim-p99-ms")
	b.ReportMetric(ms(pct(claimOnly, 50)), "claim-only-p50-ms")
	b.ReportMetric(ms(pct(next, 50)), "next-command-p50-ms")
	b.ReportMetric(ms(pct(cold, 50)), "cold-p50-ms")
	b.ReportMetric(ms(pct(cold, 99)), "cold-p99-ms")
	b.ReportMetric(ms(pct(warm, 50))/ms(pct(cold, 50)), "ratio-p50")
	phases.report(b, "create-")
}

// BenchmarkActivationWarm times activations of the goose stand-in (from
// Activate to the app healthy, as BenchmarkActivation) whose sandbox is
// claimed from a warm pool, against the same-run baseline of a project
// that differs only in its memory limit (1 MB more), which no pool
// serves: a cold provision. Each iteration activates both, one after the
// other, and deactivates them untimed.
func BenchmarkActivationWarm(b *testing.B) {
	d, dir := startPoolDaemon(b, warmActivationPool)
	ctx := context.Background()
	importStandin(b, d, dir)
	svc := d.Projects()
	tm, err := d.Auth().CreateTeam(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	team := auth.Principal{TeamID: tm.ID, Role: store.RoleAdmin}
	res := sandbox.Resources{VCPUs: 1, MemoryMB: 256, PIDs: 128}
	project := func(name string, res sandbox.Resources) string {
		p, err := svc.CreateProject(ctx, team, control.ProjectRequest{Name: name,
			Source: control.Source{Image: standinimage.DefaultRef}, MaxLifetime: time.Hour,
			Env: map[string]string{"GOOSE_PATH_ROOT": "/home/user/goose"}, Resources: res})
		if err != nil {
			b.Fatal(err)
		}
		return p.ID
	}
	coldRes := res
	coldRes.MemoryMB++
	warmID, coldID := project("warm", res), project("cold", coldRes)
	if _, err := d.Pools().Set(ctx, sandbox.PoolSpec{Name: "standin", Image: standinimage.DefaultRef, Resources: res, Min: 1, Max: 1}); err != nil {
		b.Fatal(err)
	}
	activate := func(projectID string) (total, provision time.Duration, sandboxID string) {
		return activateTimed(b, svc, team, projectID)
	}
	var warm, cold, warmProv, coldProv []time.Duration
	for b.Loop() {
		b.StopTimer()
		waitIdle(b, d, "standin", 1)
		b.StartTimer()
		total, prov, sbID := activate(warmID)
		b.StopTimer()
		if sb, err := d.Node().Get(ctx, sbID); err != nil || !sb.Warm {
			b.Fatalf("the warm project's sandbox %s was not claimed from the pool: %+v, %v", sbID, sb, err)
		}
		warm, warmProv = append(warm, total), append(warmProv, prov)
		total, prov, _ = activate(coldID)
		cold, coldProv = append(cold, total), append(coldProv, prov)
		for _, id := range []string{warmID, coldID} {
			if _, err := svc.Deactivate(ctx, team, id, ""); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(ms(pct(warm, 50)), "warm-p50-ms")
	b.ReportMetric(ms(pct(cold, 50)), "cold-p50-ms")
	b.ReportMetric(ms(pct(warmProv, 50)), "warm-to-start-p50-ms")
	b.ReportMetric(ms(pct(coldProv, 50)), "cold-to-start-p50-ms")
	b.ReportMetric(ms(pct(cold, 50))-ms(pct(warm, 50)), "saved-p50-ms")
}

// warmBurstPool is BenchmarkBurstWarm's address pool: room for 2×burstSize
// sandboxes' /30s.
var warmBurstPool = netip.MustParsePrefix("10.213.228.0/22")

// BenchmarkBurstWarm sends burstSize creates → first command (`true`) at
// once through the HTTP API (the SDK), served from a warm pool of
// burstSize idle sandboxes, after the same burst of a request no pool
// serves (1 MB more memory), cold, as the same-run baseline. Reported:
// p50/p99 of each request's create → command finished, and the burst's
// wall time. Refills and deletes are untimed; use -benchtime 1x.
func BenchmarkBurstWarm(b *testing.B) {
	ctx := context.Background()
	agentPath, dir := benchDir(b)
	d, hs := startDaemon(b, daemon.Config{DataDir: dir, NetworkPool: warmBurstPool, Domain: "localhost",
		MaxSandboxes: 2*burstSize + 2, PoolConcurrency: 2}, agentPath)
	b.Cleanup(func() {
		for _, p := range d.Pools().List() {
			if err := d.Pools().Remove(ctx, p.Name); err != nil {
				b.Errorf("remove pool %s: %v", p.Name, err)
			}
		}
		deadline := time.Now().Add(5 * time.Minute)
		for len(d.Node().Pooled()) > 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	})
	token, _ := d.AdminToken()
	client := sdk.New(hs.URL, token)
	if _, err := d.Pools().Set(ctx, sandbox.PoolSpec{Name: "burst", Resources: benchResources, Min: burstSize, Max: burstSize}); err != nil {
		b.Fatal(err)
	}
	res := api.Resources{VCPUs: benchResources.VCPUs, MemoryMB: benchResources.MemoryMB, PIDs: benchResources.PIDs}
	coldRes := res
	coldRes.MemoryMB++
	burst := func(res api.Resources, wantWarm bool) (took []time.Duration, wall time.Duration) {
		type result struct {
			id   string
			took time.Duration
			err  error
		}
		results := make(chan result, burstSize)
		start := time.Now()
		for range burstSize {
			go func() {
				t0 := time.Now()
				sb, err := client.Create(ctx, api.CreateSandboxRequest{Resources: res})
				if err != nil {
					results <- result{err: err}
					return
				}
				if sb.Warm != wantWarm {
					err = fmt.Errorf("sandbox %s warm %v, want %v", sb.ID, sb.Warm, wantWarm)
				} else {
					var cmd *sdk.Command
					cmd, err = sb.RunCommand(ctx, api.CommandRequest{Cmd: "true"})
					if err == nil && (cmd.ExitCode == nil || *cmd.ExitCode != 0) {
						err = fmt.Errorf("true in %s: %+v", sb.ID, cmd.Command)
					}
				}
				results <- result{sb.ID, time.Since(t0), err}
			}()
		}
		var ids []string
		var errs []error
		for range burstSize {
			r := <-results
			if r.id != "" {
				ids = append(ids, r.id)
			}
			if r.err != nil {
				errs = append(errs, r.err)
			}
			took = append(took, r.took)
		}
		wall = time.Since(start)
		b.StopTimer()
		for _, id := range ids {
			if err := d.Node().Delete(ctx, id); err != nil {
				b.Errorf("delete %s: %v", id, err)
			}
		}
		if len(errs) > 0 {
			b.Fatalf("%d of %d failed, the first: %v", len(errs), burstSize, errs[0])
		}
		return took, wall
	}
	var warm, cold []time.Duration
	var warmWall, coldWall []time.Duration
	for b.Loop() {
		b.StopTimer()
		waitIdle(b, d, "burst", burstSize)
		// Cold first, while the pool is full and makes nothing: the
		// refills after the warm burst would load the baseline's cores.
		b.StartTimer()
		took, wall := burst(coldRes, false)
		cold, coldWall = append(cold, took...), append(coldWall, wall)
		b.StartTimer()
		took, wall = burst(res, true)
		warm, warmWall = append(warm, took...), append(warmWall, wall)
		b.StartTimer()
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(ms(pct(warm, 50)), "warm-p50-ms")
	b.ReportMetric(ms(pct(warm, 99)), "warm-p99-ms")
	b.ReportMetric(ms(pct(warmWall, 50)), "warm-wall-ms")
	b.ReportMetric(ms(pct(cold, 50)), "cold-p50-ms")
	b.ReportMetric(ms(pct(cold, 99)), "cold-p99-ms")
	b.ReportMetric(ms(pct(coldWall, 50)), "cold-wall-ms")
}
