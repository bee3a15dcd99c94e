package proxy

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/proxy/proxytest"
)

// Bounds of every load loop in the benchmark, whatever -benchtime says.
const (
	benchLoadWorkers  = 8                      // concurrent clients in the throughput run
	benchLoadRounds   = 4                      // alternating direct/proxy rounds
	benchLoadDuration = 250 * time.Millisecond // per round and path
	benchLoadMaxReqs  = 50000                  // per round and path
)

// BenchmarkProxy compares requests through the proxy with requests straight
// to the same loopback backend in the same run: latency p50/p99 from
// interleaved sequential requests, and requests/s from a bounded concurrent
// load. The proxied path verifies a header token on every request, as a
// private port does. Targets: p50 added < 0.3 ms, throughput >= 70% of direct.
func BenchmarkProxy(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"2B", 2}, {"1MB", 1 << 20}} {
		b.Run(size.name, func(b *testing.B) {
			body := make([]byte, size.n)
			h := newHarness(b)
			be := h.addBackend("bench", false, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", strconv.Itoa(len(body)))
				_, _ = w.Write(body)
			}))
			directURL := "http://127.0.0.1:" + strconv.Itoa(be.port) + "/"
			direct := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}
			b.Cleanup(direct.CloseIdleConnections)
			// A bare stdlib ReverseProxy to the same backend: the cost of any
			// extra HTTP hop, so the report separates it from this package's.
			rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(be.port)})
			rp.ErrorLog = log.New(io.Discard, "", 0) // canceled requests at the end of each load round
			bare := httptest.NewServer(rp)
			b.Cleanup(bare.Close)
			bareURL := bare.URL + "/"
			viaBare := func(ctx context.Context) error { return fetch(ctx, direct, bareURL, "", size.n) }
			token := h.token("bench", be.port)
			proxied := func(ctx context.Context) error {
				return fetch(ctx, h.client, h.url("bench", be.port, "/"), token, size.n)
			}
			straight := func(ctx context.Context) error { return fetch(ctx, direct, directURL, "", size.n) }

			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var dLat, pLat []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N && i < proxytest.MaxSamples; i++ {
				for _, s := range []struct {
					do  func(context.Context) error
					lat *[]time.Duration
				}{{straight, &dLat}, {proxied, &pLat}} {
					start := time.Now()
					if err := s.do(ctx); err != nil {
						b.Fatal(err)
					}
					*s.lat = append(*s.lat, time.Since(start))
				}
			}
			b.StopTimer()
			// Alternate short rounds so that noise from other work on the
			// host falls on both paths alike.
			var dRPS, pRPS, bRPS float64
			for range benchLoadRounds {
				for _, l := range []struct {
					do  func(context.Context) error
					rps *float64
				}{{straight, &dRPS}, {proxied, &pRPS}, {viaBare, &bRPS}} {
					r, err := load(ctx, l.do)
					if err != nil {
						b.Fatal(err)
					}
					*l.rps += r / benchLoadRounds
				}
			}
			d50, d99 := proxytest.Percentile(dLat, 50), proxytest.Percentile(dLat, 99)
			p50, p99 := proxytest.Percentile(pLat, 50), proxytest.Percentile(pLat, 99)
			us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
			b.ReportMetric(us(d50), "direct-p50-µs")
			b.ReportMetric(us(p50), "proxy-p50-µs")
			b.ReportMetric(us(p50-d50), "added-p50-µs")
			b.ReportMetric(us(d99), "direct-p99-µs")
			b.ReportMetric(us(p99), "proxy-p99-µs")
			b.ReportMetric(us(p99-d99), "added-p99-µs")
			b.ReportMetric(dRPS, "direct-req/s")
			b.ReportMetric(pRPS, "proxy-req/s")
			b.ReportMetric(pRPS/dRPS, "throughput-ratio")
			b.ReportMetric(bRPS, "bare-proxy-req/s")
			b.ReportMetric(pRPS/bRPS, "vs-bare-proxy-ratio")
			b.ReportMetric(us(p50)/us(d50), "p50-ratio")
		})
	}
}

func fetch(ctx context.Context, c *http.Client, url, token string, want int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set(TokenHeader, token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil && (resp.StatusCode != 200 || n != int64(want)) {
		err = &benchError{status: resp.StatusCode, n: n}
	}
	return err
}

type benchError struct {
	status int
	n      int64
}

func (e *benchError) Error() string {
	return "status " + strconv.Itoa(e.status) + ", " + strconv.FormatInt(e.n, 10) + " bytes"
}

// load runs benchLoadWorkers clients for at most benchLoadDuration and
// benchLoadMaxReqs requests in all, and returns requests per second.
func load(ctx context.Context, do func(context.Context) error) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, benchLoadDuration)
	defer cancel()
	var (
		issued, done atomic.Int64
		wg           sync.WaitGroup
		firstErr     error
		errOnce      sync.Once
	)
	start := time.Now()
	for range benchLoadWorkers {
		wg.Go(func() {
			for ctx.Err() == nil && issued.Add(1) <= benchLoadMaxReqs {
				if err := do(ctx); err != nil {
					if ctx.Err() == nil {
						errOnce.Do(func() { firstErr = err })
					}
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	return float64(done.Load()) / time.Since(start).Seconds(), firstErr
}
