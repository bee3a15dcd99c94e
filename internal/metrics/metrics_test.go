package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

type fakeSandboxes struct {
	sbs     []sandbox.Sandbox
	failing string // Stats of this id fails
}

func (f fakeSandboxes) All(context.Context) []sandbox.Sandbox { return f.sbs }

func (f fakeSandboxes) Stats(_ context.Context, id string) (runtime.Stats, error) {
	if id == f.failing {
		return runtime.Stats{}, errors.New("cgroup gone")
	}
	return runtime.Stats{MemoryBytes: 1 << 20}, nil
}

// TestSandboxCollectorBounds: team labels past the bound fold into
// _other; per-sandbox series stop at the cap and count what they skip.
func TestSandboxCollectorBounds(t *testing.T) {
	var sbs []sandbox.Sandbox
	for team := range 5 {
		for i := range 5 - team { // team t0 has 5 sandboxes, t4 has 1
			sbs = append(sbs, sandbox.Sandbox{ID: fmt.Sprintf("sb-%d-%d", team, i), TeamID: fmt.Sprintf("t%d", team), State: sandbox.Running})
		}
	}
	c := &sandboxCollector{src: fakeSandboxes{sbs: sbs, failing: "sb-0-0"}, maxTeams: 2, maxSandboxes: 10}
	want := `
# HELP paddock_sandboxes Sandboxes on this host by state and team (at most MaxTeams teams by size, the rest as team="_other").
# TYPE paddock_sandboxes gauge
paddock_sandboxes{state="running",team="_other"} 6
paddock_sandboxes{state="running",team="t0"} 5
paddock_sandboxes{state="running",team="t1"} 4
# HELP paddock_sandbox_stats_skipped Running sandboxes whose stats this scrape did not report (past MaxSandboxes, the deadline, or a read error).
# TYPE paddock_sandbox_stats_skipped gauge
paddock_sandbox_stats_skipped 6
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "paddock_sandboxes", "paddock_sandbox_stats_skipped"); err != nil {
		t.Error(err)
	}
	// 15 running, 10 read, one of which failed: 9 series each.
	if n := testutil.CollectAndCount(c, "paddock_sandbox_memory_bytes"); n != 9 {
		t.Errorf("memory series = %d, want 9", n)
	}
}

type fakePools []sandbox.PoolStatus

func (f fakePools) List() []sandbox.PoolStatus { return f }

type fakeQueue int

func (f fakeQueue) Waiting() int { return int(f) }

// TestCapacityCollectors: pools report size, hits, misses and the hit
// ratio (0 before any request), the queue its length, and waits land in
// the histogram by outcome.
func TestCapacityCollectors(t *testing.T) {
	r := New()
	r.RegisterPools(fakePools{
		{PoolSpec: sandbox.PoolSpec{Name: "py"}, Idle: 2, Creating: 1, Target: 3, Hits: 3, Misses: 1},
		{PoolSpec: sandbox.PoolSpec{Name: "new"}, Target: 1},
	})
	r.RegisterQueue(fakeQueue(4))
	r.ObserveQueueWait(0, true)
	r.ObserveQueueWait(1500*time.Millisecond, true)
	r.ObserveQueueWait(60*time.Second, false)
	want := `
# HELP paddock_admission_queue_length Requests waiting in the admission queue on this replica.
# TYPE paddock_admission_queue_length gauge
paddock_admission_queue_length 4
# HELP paddock_pool_hit_ratio Share of a pool's requests served warm since paddock started (0 before any request); for a recent rate use rate() over paddock_pool_requests_total.
# TYPE paddock_pool_hit_ratio gauge
paddock_pool_hit_ratio{pool="new"} 0
paddock_pool_hit_ratio{pool="py"} 0.75
# HELP paddock_pool_idle Idle warm sandboxes ready in a pool.
# TYPE paddock_pool_idle gauge
paddock_pool_idle{pool="new"} 0
paddock_pool_idle{pool="py"} 2
# HELP paddock_pool_requests_total Creates of a pool's key since paddock started: served warm (result=hit) or cold because the pool was empty (result=miss).
# TYPE paddock_pool_requests_total counter
paddock_pool_requests_total{pool="new",result="hit"} 0
paddock_pool_requests_total{pool="new",result="miss"} 0
paddock_pool_requests_total{pool="py",result="hit"} 3
paddock_pool_requests_total{pool="py",result="miss"} 1
`
	if err := testutil.GatherAndCompare(r.Gatherer(), strings.NewReader(want),
		"paddock_admission_queue_length", "paddock_pool_hit_ratio", "paddock_pool_idle", "paddock_pool_requests_total"); err != nil {
		t.Error(err)
	}
	fams, err := r.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]uint64{}
	for _, f := range fams {
		if f.GetName() != "paddock_admission_queue_wait_seconds" {
			continue
		}
		for _, m := range f.Metric {
			counts[m.Label[0].GetValue()] = m.Histogram.GetSampleCount()
		}
	}
	if counts["admitted"] != 2 || counts["refused"] != 1 {
		t.Errorf("queue wait samples by outcome = %v, want admitted 2, refused 1", counts)
	}
}

// TestInstrumentProxyAborted: a proxied request whose handler aborts
// after sending its status (httputil.ReverseProxy does so with
// http.ErrAbortHandler when the client goes away before the body is
// copied) is counted and timed all the same; the wrapper keeps Flush and
// Hijack.
func TestInstrumentProxyAborted(t *testing.T) {
	r := New()
	h := r.InstrumentProxy("port", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch req.URL.Path {
		case "/abort":
			w.WriteHeader(http.StatusOK)
			http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler)
		case "/flush":
			if _, ok := w.(http.Flusher); !ok {
				t.Error("the wrapper hides http.Flusher")
			}
			w.Write([]byte("ok"))
		case "/hijack":
			c, rw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Errorf("hijack: %v", err)
				return
			}
			rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n")
			rw.Flush()
			c.Close()
		}
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the abort's log line
	for _, path := range []string{"/abort", "/flush", "/hijack"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	for code, want := range map[string]float64{"200": 2, "101": 1} {
		// The server records as the handler ends, which may be a moment
		// after the client has its answer.
		var got float64
		for range 200 {
			if got = testutil.ToFloat64(r.proxyRequests.WithLabelValues("port", code)); got == want {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if got != want {
			t.Errorf("requests with code %s = %v, want %v", code, got, want)
		}
	}
	fams, err := r.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == "paddock_proxy_request_duration_seconds" {
			if n := f.Metric[0].Histogram.GetSampleCount(); n != 3 {
				t.Errorf("timed requests = %d, want 3", n)
			}
		}
	}
}
