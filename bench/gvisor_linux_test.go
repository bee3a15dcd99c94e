package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/runtime/agentbin"
	"github.com/paddock-dev/paddock/internal/runtime/gvisor"
)

// The gVisor benchmarks run the runc driver and the gVisor driver side by
// side in one run, interleaved, and report each runtime's figures and
// gVisor's over runc's (ratio-*): create → first command, exec round trip,
// file write throughput and idle memory per sandbox.
//
//	flock /tmp/paddock-root-tests.lock go test -run '^$' -bench GVisor -benchtime 20x ./bench/
//
// They skip without runsc (gvisor.Find says how to get it).

// setupGVisor is setup's twin with the gVisor driver, over a data dir of
// its own.
func setupGVisor(b *testing.B) *env {
	b.Helper()
	if _, err := gvisor.Find(); err != nil {
		b.Skip("the gvisor runtime cannot run here: " + err.Error())
	}
	agentPath, err := agentbin.Path(context.Background(), filepath.Join(os.TempDir(), "paddock-test-agent"))
	if err != nil {
		b.Fatalf("agent binary: %v", err)
	}
	dir, err := os.MkdirTemp("", "pbg-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	d, err := gvisor.New(gvisor.Config{DataDir: dir, AgentPath: agentPath})
	if err != nil {
		b.Fatalf("gvisor driver: %v", err)
	}
	b.Cleanup(func() { d.Close() })
	return &env{driver: d, dataDir: dir}
}

// runtimePair is the runc and gVisor envs of one benchmark.
func runtimePair(b *testing.B) (rc, gv *env) {
	b.Helper()
	rc = setup(b) // skips where sandboxes cannot run at all
	return rc, setupGVisor(b)
}

// reportPair reports both runtimes' p50 and p99 of ds (ms) and
// ratio-p50, the other runtime's (named name) over runc's.
func reportPair(b *testing.B, name string, rc, other []time.Duration) {
	b.Helper()
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(ms(pct(rc, 50)), "runc-p50-ms")
	b.ReportMetric(ms(pct(rc, 99)), "runc-p99-ms")
	b.ReportMetric(ms(pct(other, 50)), name+"-p50-ms")
	b.ReportMetric(ms(pct(other, 99)), name+"-p99-ms")
	b.ReportMetric(ms(pct(other, 50))/ms(pct(rc, 50)), "ratio-p50")
	b.Logf("n=%d runc p50=%v p99=%v; %s p50=%v p99=%v", len(rc), pct(rc, 50), pct(rc, 99), name, pct(other, 50), pct(other, 99))
}

// BenchmarkGVisorCreateToFirstCommand times create → `true` finished in a
// new sandbox on each runtime, alternating which goes first.
func BenchmarkGVisorCreateToFirstCommand(b *testing.B) {
	rc, gv := runtimePair(b)
	ctx := context.Background()
	one := func(e *env, id string) time.Duration {
		start := time.Now()
		cl := e.create(b, id)
		if err := run(ctx, cl, "true"); err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		b.StopTimer()
		e.destroy(b, id)
		b.StartTimer()
		return took
	}
	var rcs, gvs []time.Duration
	for i := 0; b.Loop(); i++ {
		if i%2 == 0 {
			rcs = append(rcs, one(rc, fmt.Sprintf("bench-rc-%d", i)))
			gvs = append(gvs, one(gv, fmt.Sprintf("bench-gv-%d", i)))
		} else {
			gvs = append(gvs, one(gv, fmt.Sprintf("bench-gv-%d", i)))
			rcs = append(rcs, one(rc, fmt.Sprintf("bench-rc-%d", i)))
		}
	}
	reportPair(b, "gvisor", rcs, gvs)
}

// BenchmarkGVisorExecRoundTrip times `true` run to completion in a running
// sandbox of each runtime (one request to its agent), alternately.
func BenchmarkGVisorExecRoundTrip(b *testing.B) {
	rc, gv := runtimePair(b)
	ctx := context.Background()
	rcl, gcl := rc.create(b, "bench-rc-exec"), gv.create(b, "bench-gv-exec")
	b.Cleanup(func() { rc.destroy(b, "bench-rc-exec"); gv.destroy(b, "bench-gv-exec") })
	timed := func(cl *agent.Client) time.Duration {
		start := time.Now()
		if err := run(ctx, cl, "true"); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	var rcs, gvs []time.Duration
	for b.Loop() {
		rcs = append(rcs, timed(rcl))
		gvs = append(gvs, timed(gcl))
	}
	reportPair(b, "gvisor", rcs, gvs)
}

// BenchmarkGVisorFileWrite writes one 64 MiB file (WriteTar, as
// BenchmarkFileWrite) into a sandbox of each runtime, alternately: the
// agent writes it through runc's overlayfs, or through gVisor's sentry and
// gofer. As root (sudo) in both: the agent's write as the sandbox user
// fails under gVisor for now ("fsgid is -1"; the driver's conformance list).
func BenchmarkGVisorFileWrite(b *testing.B) {
	rc, gv := runtimePair(b)
	rcl, gcl := rc.create(b, "bench-rc-files"), gv.create(b, "bench-gv-files")
	b.Cleanup(func() { rc.destroy(b, "bench-rc-files"); gv.destroy(b, "bench-gv-files") })
	_, archive := blobTar()
	b.SetBytes(2 * blobSize)
	var rcs, gvs []time.Duration
	for b.Loop() {
		rcs = append(rcs, writeBlob(b, rcl, archive, true))
		gvs = append(gvs, writeBlob(b, gcl, archive, true))
	}
	b.ReportMetric(blobMiBps(rcs), "runc-MiB/s")
	b.ReportMetric(blobMiBps(gvs), "gvisor-MiB/s")
	b.ReportMetric(blobMiBps(gvs)/blobMiBps(rcs), "ratio")
}

// BenchmarkGVisorIdleMemory keeps PADDOCK_GVISOR_IDLE_N (default 5) idle
// sandboxes of each runtime at once and reports what one costs: the PSS
// of the processes in its memory cgroup (runc: the agent; gVisor: the
// sentry, the gofer and systrap's stubs, which run in it, the agent being
// inside the sentry) and the memory charged to the cgroup, each a mean
// over the sandboxes. One iteration is one whole measurement.
func BenchmarkGVisorIdleMemory(b *testing.B) {
	rc, gv := runtimePair(b)
	n := 5
	if v := os.Getenv("PADDOCK_GVISOR_IDLE_N"); v != "" {
		if _, err := fmt.Sscan(v, &n); err != nil || n < 1 {
			b.Fatalf("PADDOCK_GVISOR_IDLE_N=%q: want a positive count", v)
		}
	}
	measure := func(e *env, prefix string) sandboxMem {
		var ids []string
		b.Cleanup(func() {
			for _, id := range ids {
				e.destroy(b, id)
			}
		})
		for i := range n {
			id := fmt.Sprintf("%s-%d", prefix, i)
			cl := e.create(b, id)
			if err := run(context.Background(), cl, "true"); err != nil {
				b.Fatal(err)
			}
			ids = append(ids, id)
		}
		// Let start-up garbage settle: idle is what a sandbox costs
		// between commands.
		time.Sleep(2 * time.Second)
		var sum sandboxMem
		for _, id := range ids {
			m, err := sandboxMemory(id)
			if err != nil {
				b.Fatalf("memory of %s: %v", id, err)
			}
			sum.add(m)
		}
		for _, id := range ids {
			e.destroy(b, id)
		}
		ids = nil
		return sum
	}
	var rcm, gvm sandboxMem
	for i := 0; b.Loop(); i++ {
		rcm.add(measure(rc, fmt.Sprintf("bench-rc-idle-%d", i)))
		gvm.add(measure(gv, fmt.Sprintf("bench-gv-idle-%d", i)))
	}
	per := func(v int64) float64 { return float64(v) / float64(n*b.N) / (1 << 20) }
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(per(rcm.pss), "runc-pss-MiB")
	b.ReportMetric(per(gvm.pss), "gvisor-pss-MiB")
	b.ReportMetric(per(rcm.usage), "runc-cgroup-MiB")
	b.ReportMetric(per(gvm.usage), "gvisor-cgroup-MiB")
	b.ReportMetric(per(gvm.pss)/per(rcm.pss), "ratio-pss")
	b.ReportMetric(per(gvm.usage)/per(rcm.usage), "ratio-cgroup")
	b.Logf("per sandbox: runc %d procs/%d threads per %d; gvisor %d procs/%d threads per %d", rcm.procs, rcm.threads, n*b.N, gvm.procs, gvm.threads, n*b.N)
}
