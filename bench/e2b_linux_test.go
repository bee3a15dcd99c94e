package bench

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/auth"
	"github.com/paddock-dev/paddock/internal/daemon"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/sdk"
)

// BenchmarkE2BCreateToFirstCommand is the E2B JS SDK's Sandbox.create()
// until a first commands.run("true") has finished, through paddock's E2B
// control plane and envd data plane (the unmodified SDK pinned in
// internal/server/compat/e2b/nodetest, E2B_SANDBOX_URL at the listener),
// beside the Go SDK's create until a first command has finished, in the
// same run and the same team, interleaved in batches of ten. Each batch
// of the Node loop runs in one process after one untimed warm-up
// iteration, so Node's start and first connections are not counted (the
// Go client is warm after its first create too); every sandbox is deleted
// untimed. Reported: p50
// and p99 of each, the ratio of the p50s (E2B over Go), the p50 of each
// create alone, and of the Go SDK running, in the same sandbox after its
// first command, what commands.run("true") runs: /bin/bash -l -c true.
//
//	go test -run '^$' -bench E2BCreateToFirstCommand -benchtime 20x ./bench/
func BenchmarkE2BCreateToFirstCommand(b *testing.B) {
	ctx := context.Background()
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		b.Skip("node is not installed: the E2B SDK runs on Node.js")
	}
	nodeDir, err := filepath.Abs(filepath.Join("..", "internal", "server", "compat", "e2b", "nodetest"))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", "e2b", "package.json")); err != nil {
		b.Skip("the e2b SDK is not installed: run npm ci --prefix internal/server/compat/e2b/nodetest")
	}
	agentPath, dir := benchDir(b)
	d, hs := startDaemon(b, daemon.Config{DataDir: dir, NoNetwork: true, Domain: "localhost", MaxTimeout: time.Hour}, agentPath)
	tm, err := d.Auth().CreateTeam(ctx, "bench-e2b")
	if err != nil {
		b.Fatal(err)
	}
	e2bKey, _, err := d.Auth().CreateTokenFormat(ctx, auth.FormatE2B, tm.ID, "", "e2b-sdk", store.RoleMember, 0)
	if err != nil {
		b.Fatal(err)
	}
	goToken, _, err := d.Auth().CreateToken(ctx, tm.ID, "", "go-sdk", store.RoleMember, 0)
	if err != nil {
		b.Fatal(err)
	}
	client := sdk.New(hs.URL, goToken)

	// nodeBatch runs the E2B SDK's loop n times in one Node process: the
	// whole of each iteration, and its create alone.
	var e2bCreate []time.Duration
	nodeBatch := func(n int) []time.Duration {
		run := exec.CommandContext(ctx, nodeBin, "createbench.mjs")
		run.Dir = nodeDir
		run.Env = append(os.Environ(), "E2B_API_URL="+hs.URL+"/compat/e2b", "E2B_SANDBOX_URL="+hs.URL,
			"E2B_API_KEY="+e2bKey, "PADDOCK_BENCH_N="+strconv.Itoa(n))
		run.Stderr = os.Stderr
		out, err := run.Output()
		if err != nil {
			b.Fatalf("the E2B SDK loop: %v", err)
		}
		var msE2B [][2]float64
		if err := json.Unmarshal(out, &msE2B); err != nil {
			b.Fatalf("the E2B SDK loop's output %q: %v", out, err)
		}
		ds := make([]time.Duration, len(msE2B))
		for i, v := range msE2B {
			ds[i] = time.Duration(v[0] * float64(time.Millisecond))
			e2bCreate = append(e2bCreate, time.Duration(v[1]*float64(time.Millisecond)))
		}
		return ds
	}

	// Interleaved in batches, so both see the same load as it drifts.
	const batch = 10
	var goSDK, goCreate, goBash, e2bSDK []time.Duration
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		sb, err := client.Create(ctx, api.CreateSandboxRequest{TimeoutMs: time.Hour.Milliseconds()})
		if err != nil {
			b.Fatalf("create: %v", err)
		}
		goCreate = append(goCreate, time.Since(start))
		cmd, err := sb.RunCommand(ctx, api.CommandRequest{Cmd: "true"})
		if err != nil || cmd.ExitCode == nil || *cmd.ExitCode != 0 {
			b.Fatalf("first command: %v %+v", err, cmd)
		}
		goSDK = append(goSDK, time.Since(start))
		b.StopTimer()
		// What the E2B SDK runs for commands.run("true"): a login shell.
		t := time.Now()
		if cmd, err := sb.RunCommand(ctx, api.CommandRequest{Cmd: "/bin/bash", Args: []string{"-l", "-c", "true"}}); err != nil || cmd.ExitCode == nil || *cmd.ExitCode != 0 {
			b.Fatalf("bash -l -c true: %v %+v", err, cmd)
		}
		goBash = append(goBash, time.Since(t))
		if err := sb.Delete(ctx); err != nil {
			b.Fatalf("delete: %v", err)
		}
		if (i+1)%batch == 0 {
			e2bSDK = append(e2bSDK, nodeBatch(batch)...)
		}
		b.StartTimer()
	}
	b.StopTimer()
	if n := len(goSDK) - len(e2bSDK); n > 0 {
		e2bSDK = append(e2bSDK, nodeBatch(n)...)
	}

	b.ReportMetric(0, "ns/op") // per-op time mixes in the deletes; the percentiles are the figures
	b.ReportMetric(ms(pct(e2bSDK, 50)), "e2b-p50-ms")
	b.ReportMetric(ms(pct(e2bSDK, 99)), "e2b-p99-ms")
	b.ReportMetric(ms(pct(goSDK, 50)), "go-p50-ms")
	b.ReportMetric(ms(pct(goSDK, 99)), "go-p99-ms")
	b.ReportMetric(ms(pct(e2bSDK, 50))/ms(pct(goSDK, 50)), "ratio-p50")
	b.ReportMetric(ms(pct(e2bCreate, 50)), "e2b-create-p50-ms")
	b.ReportMetric(ms(pct(goCreate, 50)), "go-create-p50-ms")
	b.ReportMetric(ms(pct(goBash, 50)), "go-bash-cmd-p50-ms")
	b.Logf("n=%d e2b p50=%v p99=%v (create p50=%v); go p50=%v p99=%v (create p50=%v)", len(goSDK),
		pct(e2bSDK, 50), pct(e2bSDK, 99), pct(e2bCreate, 50), pct(goSDK, 50), pct(goSDK, 99), pct(goCreate, 50))
}
