package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/runtime/runc"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// diskMB is `paddock serve`'s default sandbox disk (--sandbox-disk 10G).
const diskMB = 10 << 10

// BenchmarkDiskCapCreate times create → `true` finished in a sandbox with
// a disk cap, interleaved with the same without one (--sandbox-disk 0:
// the writable layer a plain directory), in one driver set up as `paddock
// serve` sets it up (disks of the default size made ahead of time), so the
// differences are what the cap costs:
//
//   - disk: the default 10 GiB cap, the disk taken from the driver's pool;
//   - disk-inline: a cap of another size, the disk made while the create
//     waits (an image copied from the size's template, attached to a loop
//     device, mounted), as when a burst of creates empties the pool.
//
// Each kind's first create (which formats its size's template) runs before
// the timed loop; destroy, and the pool making its next disk, are untimed.
func BenchmarkDiskCapCreate(b *testing.B) {
	e := setupWith(b, func(c *runc.Config) { c.PoolDiskMB = diskMB })
	ctx := context.Background()
	if !e.driver.Capabilities().DiskCap {
		b.Skip("sandbox disks cannot work here")
	}
	kinds := []struct {
		name string
		mb   int64
	}{{"disk", diskMB}, {"disk-inline", diskMB + 1}, {"nodisk", 0}}
	one := func(id string, mb int64) time.Duration {
		res := benchResources
		res.DiskMB = mb
		start := time.Now()
		cl, err := e.driver.Create(ctx, runtime.Spec{ID: id, Image: sandbox.HostImage, Resources: res})
		if err != nil {
			b.Fatalf("create %s: %v", id, err)
		}
		if err := run(ctx, cl, "true"); err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		b.StopTimer()
		e.destroy(b, id)
		time.Sleep(50 * time.Millisecond) // the pool makes its next disk
		b.StartTimer()
		return took
	}
	for _, k := range kinds {
		one("bench-warm-"+k.name, k.mb)
	}
	took := make([][]time.Duration, len(kinds))
	for i := 0; b.Loop(); i++ {
		// Rotating which goes first cancels out any order effect.
		for j := range kinds {
			k := (i + j) % len(kinds)
			took[k] = append(took[k], one(fmt.Sprintf("bench-%s-%d", kinds[k].name, i), kinds[k].mb))
		}
	}
	b.ReportMetric(0, "ns/op")
	none := ms(pct(took[2], 50))
	for k, kind := range kinds {
		b.ReportMetric(ms(pct(took[k], 50)), kind.name+"-p50-ms")
		b.ReportMetric(ms(pct(took[k], 99)), kind.name+"-p99-ms")
		if kind.mb != 0 {
			b.ReportMetric(ms(pct(took[k], 50))-none, kind.name+"-added-p50-ms")
		}
		b.Logf("%s: n=%d p50=%v p99=%v", kind.name, len(took[k]), pct(took[k], 50), pct(took[k], 99))
	}
}
