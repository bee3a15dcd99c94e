package app

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/proxy/proxytest"
)

// BenchmarkAppProxy compares a request to a project's app through the app
// proxy (path form: principal check, resolve, header rewrite, activity)
// with the same request straight to the app, interleaved in one run so
// both see the same machine. It reports p50 and p99 of each and the p50
// the proxy adds.
func BenchmarkAppProxy(b *testing.B) {
	h := newAppHarness(b, 0)
	body := []byte(`{"sessions":[]}`)
	h.addApp("bench", "", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(body)
	}))
	direct := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	b.Cleanup(direct.CloseIdleConnections)
	h.mu.Lock()
	directURL := h.projects["bench"].target.URL.String() + "/sessions"
	h.mu.Unlock()
	proxiedURL := h.pathURL("bench", "/sessions")
	get := func(c *http.Client, url, token string) time.Duration {
		req, _ := http.NewRequest("GET", url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		start := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("%s: %d", url, resp.StatusCode)
		}
		return time.Since(start)
	}
	// Warm both connection pools.
	get(direct, directURL, "")
	get(h.client, proxiedURL, "pdk_team_a")
	n := min(b.N, proxytest.MaxSamples)
	d := make([]time.Duration, 0, n)
	p := make([]time.Duration, 0, n)
	b.ResetTimer()
	for range n {
		d = append(d, get(direct, directURL, ""))
		p = append(p, get(h.client, proxiedURL, "pdk_team_a"))
	}
	b.StopTimer()
	us := func(s []time.Duration, p int) float64 {
		return float64(proxytest.Percentile(s, p)) / float64(time.Microsecond)
	}
	b.ReportMetric(us(d, 50), "direct-p50-µs")
	b.ReportMetric(us(d, 99), "direct-p99-µs")
	b.ReportMetric(us(p, 50), "proxied-p50-µs")
	b.ReportMetric(us(p, 99), "proxied-p99-µs")
	b.ReportMetric(us(p, 50)-us(d, 50), "added-p50-µs")
}
