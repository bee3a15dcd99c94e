package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Pools is what the pool collector reads at scrape time; pool.Manager
// satisfies it.
type Pools interface {
	List() []sandbox.PoolStatus
}

// Queue is what the queue collector reads at scrape time;
// admission.Controller satisfies it.
type Queue interface {
	// Waiting is how many requests wait on this replica.
	Waiting() int
}

var (
	descPoolIdle     = prometheus.NewDesc(Namespace+"_pool_idle", "Idle warm sandboxes ready in a pool.", []string{"pool"}, nil)
	descPoolCreating = prometheus.NewDesc(Namespace+"_pool_creating", "Warm sandboxes being made for a pool (refills in flight).", []string{"pool"}, nil)
	descPoolTarget   = prometheus.NewDesc(Namespace+"_pool_target", "Idle count a pool aims at now: recent demand clamped to its min and max.", []string{"pool"}, nil)
	descPoolRequests = prometheus.NewDesc(Namespace+"_pool_requests_total", "Creates of a pool's key since paddock started: served warm (result=hit) or cold because the pool was empty (result=miss).", []string{"pool", "result"}, nil)
	descPoolHitRatio = prometheus.NewDesc(Namespace+"_pool_hit_ratio", "Share of a pool's requests served warm since paddock started (0 before any request); for a recent rate use rate() over paddock_pool_requests_total.", []string{"pool"}, nil)
	descQueueLength  = prometheus.NewDesc(Namespace+"_admission_queue_length", "Requests waiting in the admission queue on this replica.", nil, nil)
)

// RegisterPools adds the warm pools' collector: size (idle, creating,
// target) and requests served warm or cold, per pool. Pools are few (set by
// the host admin), so the pool label is bounded.
func (r *Registry) RegisterPools(src Pools) {
	r.reg.MustRegister(poolCollector{src})
}

type poolCollector struct{ src Pools }

func (c poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPoolIdle, descPoolCreating, descPoolTarget, descPoolRequests, descPoolHitRatio} {
		ch <- d
	}
}

func (c poolCollector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c.src.List() {
		ch <- prometheus.MustNewConstMetric(descPoolIdle, prometheus.GaugeValue, float64(p.Idle), p.Name)
		ch <- prometheus.MustNewConstMetric(descPoolCreating, prometheus.GaugeValue, float64(p.Creating), p.Name)
		ch <- prometheus.MustNewConstMetric(descPoolTarget, prometheus.GaugeValue, float64(p.Target), p.Name)
		ch <- prometheus.MustNewConstMetric(descPoolRequests, prometheus.CounterValue, float64(p.Hits), p.Name, "hit")
		ch <- prometheus.MustNewConstMetric(descPoolRequests, prometheus.CounterValue, float64(p.Misses), p.Name, "miss")
		ratio := 0.0
		if n := p.Hits + p.Misses; n > 0 {
			ratio = float64(p.Hits) / float64(n)
		}
		ch <- prometheus.MustNewConstMetric(descPoolHitRatio, prometheus.GaugeValue, ratio, p.Name)
	}
}

// RegisterQueue adds the admission queue's length, read at scrape time;
// its waits are recorded by ObserveQueueWait.
func (r *Registry) RegisterQueue(src Queue) {
	r.reg.MustRegister(queueCollector{src})
}

type queueCollector struct{ src Queue }

func (c queueCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descQueueLength }

func (c queueCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descQueueLength, prometheus.GaugeValue, float64(c.src.Waiting()))
}

// ObserveQueueWait records how long a request waited for its admission
// slot (0 when admitted at once) and whether it got one: admission calls
// it through its Config.ObserveWait as each wait ends.
func (r *Registry) ObserveQueueWait(waited time.Duration, admitted bool) {
	outcome := "admitted"
	if !admitted {
		outcome = "refused"
	}
	r.queueWait.WithLabelValues(outcome).Observe(waited.Seconds())
}
