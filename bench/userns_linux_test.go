package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/runtime/runc"
)

// BenchmarkUserNSCreate times create → `true` finished in a new sandbox
// with a user namespace of its own (the default) and without one
// (NoUserNS), interleaved in one run, alternating which goes first, so
// the difference is what user namespaces cost: a range claim, the
// namespace's holder, idmapped layers and binds.
func BenchmarkUserNSCreate(b *testing.B) {
	with := setup(b)
	without := setupWith(b, func(c *runc.Config) { c.NoUserNS = true })
	if !with.driver.Capabilities().UserNS {
		b.Fatal("the default driver has no user namespaces")
	}
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
	var userns, plain []time.Duration
	for i := 0; b.Loop(); i++ {
		if i%2 == 0 {
			userns = append(userns, one(with, fmt.Sprintf("bench-us-%d", i)))
			plain = append(plain, one(without, fmt.Sprintf("bench-nous-%d", i)))
		} else {
			plain = append(plain, one(without, fmt.Sprintf("bench-nous-%d", i)))
			userns = append(userns, one(with, fmt.Sprintf("bench-us-%d", i)))
		}
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(ms(pct(userns, 50)), "userns-p50-ms")
	b.ReportMetric(ms(pct(userns, 99)), "userns-p99-ms")
	b.ReportMetric(ms(pct(plain, 50)), "no-userns-p50-ms")
	b.ReportMetric(ms(pct(plain, 99)), "no-userns-p99-ms")
	b.ReportMetric(ms(pct(userns, 50))-ms(pct(plain, 50)), "added-p50-ms")
	b.Logf("n=%d userns p50=%v p99=%v; without p50=%v p99=%v", len(userns), pct(userns, 50), pct(userns, 99), pct(plain, 50), pct(plain, 99))
}
