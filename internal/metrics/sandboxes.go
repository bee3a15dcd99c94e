package metrics

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Bounds of the sandbox collector, so a scrape costs the same on a host of
// ten sandboxes and of two thousand.
const (
	// MaxTeams is how many teams get a team label of their own on
	// paddock_sandboxes; the others are summed as OtherTeam.
	MaxTeams = 50
	// MaxSandboxes is how many running sandboxes a scrape reads stats of.
	MaxSandboxes = 1000
	// statsDeadline bounds the stats reads of one scrape, statsWorkers
	// how many run at once.
	statsDeadline = 5 * time.Second
	statsWorkers  = 4
)

// OtherTeam is the team label of teams past MaxTeams.
const OtherTeam = "_other"

// Sandboxes is what the sandbox collector reads at scrape time; the
// daemon adapts node.Manager to it.
type Sandboxes interface {
	// All returns every sandbox this host knows, from memory.
	All(ctx context.Context) []sandbox.Sandbox
	// Stats reads a running sandbox's counters (cgroup and veth).
	Stats(ctx context.Context, id string) (runtime.Stats, error)
}

// RegisterSandboxes adds the collector of this host's sandboxes: counts by
// state and team, and CPU, memory and network of each running sandbox.
func (r *Registry) RegisterSandboxes(src Sandboxes) {
	r.reg.MustRegister(&sandboxCollector{src: src, maxTeams: MaxTeams, maxSandboxes: MaxSandboxes})
}

var (
	descSandboxes = prometheus.NewDesc(Namespace+"_sandboxes", "Sandboxes on this host by state and team (at most MaxTeams teams by size, the rest as team=\"_other\").", []string{"state", "team"}, nil)
	descCPU       = prometheus.NewDesc(Namespace+"_sandbox_cpu_seconds_total", "CPU time used by a running sandbox's cgroup.", []string{"sandbox", "team"}, nil)
	descMem       = prometheus.NewDesc(Namespace+"_sandbox_memory_bytes", "Memory a running sandbox's cgroup uses now.", []string{"sandbox", "team"}, nil)
	descMemLimit  = prometheus.NewDesc(Namespace+"_sandbox_memory_limit_bytes", "Memory limit of a running sandbox.", []string{"sandbox", "team"}, nil)
	descRx        = prometheus.NewDesc(Namespace+"_sandbox_network_receive_bytes_total", "Bytes a running sandbox received over its veth.", []string{"sandbox", "team"}, nil)
	descTx        = prometheus.NewDesc(Namespace+"_sandbox_network_transmit_bytes_total", "Bytes a running sandbox sent over its veth.", []string{"sandbox", "team"}, nil)
	descSkipped   = prometheus.NewDesc(Namespace+"_sandbox_stats_skipped", "Running sandboxes whose stats this scrape did not report (past MaxSandboxes, the deadline, or a read error).", nil, nil)
)

type sandboxCollector struct {
	src          Sandboxes
	maxTeams     int
	maxSandboxes int
}

func (c *sandboxCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSandboxes, descCPU, descMem, descMemLimit, descRx, descTx, descSkipped} {
		ch <- d
	}
}

func (c *sandboxCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), statsDeadline)
	defer cancel()
	all := c.src.All(ctx)
	c.counts(ch, all)

	var running []sandbox.Sandbox
	for _, sb := range all {
		if sb.State == sandbox.Running {
			running = append(running, sb)
		}
	}
	skipped := max(0, len(running)-c.maxSandboxes)
	running = running[:min(len(running), c.maxSandboxes)]
	type result struct {
		sb sandbox.Sandbox
		st runtime.Stats
		ok bool
	}
	results := make([]result, len(running))
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(statsWorkers, len(running)) {
		wg.Go(func() {
			for i := range next {
				st, err := c.src.Stats(ctx, running[i].ID)
				results[i] = result{running[i], st, err == nil}
			}
		})
	}
feed:
	for i := range running {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	for _, r := range results {
		if !r.ok {
			skipped++
			continue
		}
		l := []string{r.sb.ID, r.sb.TeamID}
		ch <- prometheus.MustNewConstMetric(descCPU, prometheus.CounterValue, r.st.CPUUsage.Seconds(), l...)
		ch <- prometheus.MustNewConstMetric(descMem, prometheus.GaugeValue, float64(r.st.MemoryBytes), l...)
		ch <- prometheus.MustNewConstMetric(descMemLimit, prometheus.GaugeValue, float64(r.st.MemoryLimit), l...)
		ch <- prometheus.MustNewConstMetric(descRx, prometheus.CounterValue, float64(r.st.NetworkRxBytes), l...)
		ch <- prometheus.MustNewConstMetric(descTx, prometheus.CounterValue, float64(r.st.NetworkTxBytes), l...)
	}
	ch <- prometheus.MustNewConstMetric(descSkipped, prometheus.GaugeValue, float64(skipped))
}

// counts emits paddock_sandboxes with the team label bounded: the
// maxTeams teams with most sandboxes keep their id, the rest are summed.
func (c *sandboxCollector) counts(ch chan<- prometheus.Metric, all []sandbox.Sandbox) {
	perTeam := map[string]int{}
	for _, sb := range all {
		perTeam[sb.TeamID]++
	}
	teams := make([]string, 0, len(perTeam))
	for t := range perTeam {
		teams = append(teams, t)
	}
	slices.SortFunc(teams, func(a, b string) int {
		return cmp.Or(cmp.Compare(perTeam[b], perTeam[a]), cmp.Compare(a, b))
	})
	keep := map[string]bool{}
	for _, t := range teams[:min(len(teams), c.maxTeams)] {
		keep[t] = true
	}
	type key struct{ state, team string }
	n := map[key]int{}
	for _, sb := range all {
		team := sb.TeamID
		if !keep[team] {
			team = OtherTeam
		}
		n[key{string(sb.State), team}]++
	}
	for k, v := range n {
		ch <- prometheus.MustNewConstMetric(descSandboxes, prometheus.GaugeValue, float64(v), k.state, k.team)
	}
}
