package e2e

import (
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/daemon"
	"github.com/paddock-dev/paddock/internal/proxy"
	"github.com/paddock-dev/paddock/sdk"
)

var observePool = netip.MustParsePrefix("10.213.238.0/24")

// TestObservability: on real sandboxes, a request through the port proxy
// and a CPU burn show in /metrics (proxy, per-sandbox CPU and network, the
// create's admission), and the stop event carries the run's usage.
func TestObservability(t *testing.T) {
	s := startStack(t, newDataDir(t), stackOptions{network: observePool})
	sb := s.create(t, api.CreateSandboxRequest{Ports: []api.PortSpec{{Port: 3000, Public: true}}, Labels: map[string]string{"suite": "observe"}})
	serveHTTP(t, sb, 3000)
	ctx := ctxFor(t, 2*time.Minute)
	resp, err := http.Get(s.http.URL + proxy.PathPrefix(sb.ID, 3000) + "/")
	if err != nil {
		t.Fatal(err)
	}
	// Closed unread on purpose: when the client is gone before the proxy
	// copied the body (often, on a loaded host), the proxy aborts the
	// response, and the request must count all the same.
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("through the proxy: %d", resp.StatusCode)
	}
	if _, code := sh(t, sb, `python3 -c "import time; t=time.time()
while time.time()-t < 0.5: pass"`); code != 0 {
		t.Fatalf("burn exited %d", code)
	}

	// A request is counted when the proxy's handler returns, which may be
	// a moment after the client has its answer: scrape until the series
	// are there (bounded), then report what is still missing.
	scrape := func() []string {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.http.URL+daemon.MetricsPath, nil)
		req.Header.Set("Authorization", "Bearer "+s.token)
		mresp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(mresp.Body)
		mresp.Body.Close()
		if err != nil {
			t.Fatalf("parse /metrics: %v", err)
		}
		value := func(name string, labels map[string]string) (float64, bool) {
			f := fams[name]
			if f == nil {
				return 0, false
			}
			for _, m := range f.Metric {
				if slices.ContainsFunc(labelPairs(labels), func(want [2]string) bool {
					return !slices.ContainsFunc(m.Label, func(l *dto.LabelPair) bool { return l.GetName() == want[0] && l.GetValue() == want[1] })
				}) {
					continue
				}
				switch {
				case m.Counter != nil:
					return m.Counter.GetValue(), true
				case m.Gauge != nil:
					return m.Gauge.GetValue(), true
				case m.Histogram != nil:
					return float64(m.Histogram.GetSampleCount()), true
				}
			}
			return 0, false
		}
		var missing []string
		for _, c := range []struct {
			name   string
			labels map[string]string
			min    float64
		}{
			{"paddock_proxy_requests_total", map[string]string{"proxy": "port", "code": "200"}, 1},
			{"paddock_proxy_request_duration_seconds", map[string]string{"proxy": "port"}, 1},
			{"paddock_sandbox_cpu_seconds_total", map[string]string{"sandbox": sb.ID}, 0.4},
			{"paddock_sandbox_memory_bytes", map[string]string{"sandbox": sb.ID}, 1},
			{"paddock_sandbox_network_transmit_bytes_total", map[string]string{"sandbox": sb.ID}, 1},
			{"paddock_sandbox_create_phase_seconds", map[string]string{"phase": "network"}, 1},
			{"paddock_sandboxes", map[string]string{"state": "running"}, 1},
			{"paddock_admission_queue_wait_seconds", map[string]string{"outcome": "admitted"}, 1}, // the create's, at 0
			{"paddock_admission_queue_length", nil, 0},
		} {
			if v, ok := value(c.name, c.labels); !ok || v < c.min {
				missing = append(missing, fmt.Sprintf("%s%v = %v (found %v), want at least %v", c.name, c.labels, v, ok, c.min))
			}
		}
		return missing
	}
	missing := scrape()
	for deadline := time.Now().Add(10 * time.Second); len(missing) > 0 && time.Now().Before(deadline); missing = scrape() {
		time.Sleep(200 * time.Millisecond)
	}
	for _, m := range missing {
		t.Error(m)
	}

	if err := sb.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	for e, err := range s.client.Events(ctx, sdk.EventOptions{FromStart: true, SandboxID: sb.ID, Types: []string{"sandbox.stopped"}}) {
		if err != nil {
			t.Fatal(err)
		}
		cpu, _ := strconv.ParseFloat(e.Data["cpuSeconds"], 64)
		tx, _ := strconv.ParseUint(e.Data["netTxBytes"], 10, 64)
		if e.Data["reason"] != "requested" || cpu < 0.4 || tx == 0 {
			t.Errorf("stopped event data = %v, want reason requested, cpu >= 0.4 s, bytes sent", e.Data)
		}
		break
	}
}

func labelPairs(m map[string]string) [][2]string {
	var out [][2]string
	for k, v := range m {
		out = append(out, [2]string{k, v})
	}
	return out
}
