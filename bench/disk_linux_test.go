package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/image"
	"github.com/paddock-dev/paddock/internal/runtime"
)

// diskMB is `paddock serve`'s default sandbox disk (--sandbox-disk 10G).
const diskMB = 10 << 10

// BenchmarkDiskCapCreate times create → `true` finished in a sandbox with
// the default 10 GiB disk cap (its writable layer on an ext4 image copied
// from a template, loop-mounted) interleaved with the same without a cap
// (--sandbox-disk 0: the layer a plain directory), in one driver, so the
// difference is what the cap costs. The first capped create formats the
// size's template; it happens before the timed loop, as on a server where
// the default size has been used once. Destroy (the unmount) is untimed.
func BenchmarkDiskCapCreate(b *testing.B) {
	e := setup(b)
	ctx := context.Background()
	if !e.driver.Capabilities().DiskCap {
		b.Skip("sandbox disks cannot work here")
	}
	createRun := func(id string, disk int64) time.Duration {
		res := benchResources
		res.DiskMB = disk
		start := time.Now()
		cl, err := e.driver.Create(ctx, runtime.Spec{ID: id, Image: image.HostImage, Resources: res})
		if err != nil {
			b.Fatalf("create %s: %v", id, err)
		}
		if err := run(ctx, cl, "true"); err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		b.StopTimer()
		e.destroy(b, id)
		b.StartTimer()
		return took
	}
	createRun("bench-disk-warm", diskMB)
	var capped, plain []time.Duration
	for i := 0; b.Loop(); i++ {
		// Alternating which goes first cancels out any order effect.
		if i%2 == 0 {
			capped = append(capped, createRun(fmt.Sprintf("bench-disk-%d", i), diskMB))
			plain = append(plain, createRun(fmt.Sprintf("bench-plain-%d", i), 0))
		} else {
			plain = append(plain, createRun(fmt.Sprintf("bench-plain-%d", i), 0))
			capped = append(capped, createRun(fmt.Sprintf("bench-disk-%d", i), diskMB))
		}
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(ms(pct(capped, 50)), "disk-p50-ms")
	b.ReportMetric(ms(pct(capped, 99)), "disk-p99-ms")
	b.ReportMetric(ms(pct(plain, 50)), "nodisk-p50-ms")
	b.ReportMetric(ms(pct(plain, 99)), "nodisk-p99-ms")
	b.ReportMetric(ms(pct(capped, 50))-ms(pct(plain, 50)), "added-p50-ms")
	b.Logf("n=%d with a %d MiB disk p50=%v p99=%v; without p50=%v p99=%v", len(capped), diskMB,
		pct(capped, 50), pct(capped, 99), pct(plain, 50), pct(plain, 99))
}
