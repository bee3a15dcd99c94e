// Package metrics is paddock's Prometheus registry: the one place every
// series is registered and the /metrics handler that exposes them. It holds
// the series of its own (create latency by phase, proxied requests,
// admission queue waits) and the scrape-time collectors over the sandboxes
// of this host (counts by state and team, CPU, memory and network per
// sandbox), the warm pools (size, hits and misses) and the admission queue
// (length), plus the Go and process collectors. Scrape-time collectors
// read what their owners keep; none starts a goroutine.
//
// Adding a series from another package is one call: take a
// prometheus.Registerer in your Config and build your series with
// promauto.With(cfg.Metrics); the daemon passes Registry.Registerer(). A nil
// Registerer in tests registers nowhere (promauto.With(nil)).
//
// Cardinality is bounded on purpose: the team label carries at most
// MaxTeams distinct teams (the ones with most sandboxes; the rest are summed
// under team="_other"), and per-sandbox series cover at most MaxSandboxes
// running sandboxes per scrape, read within one deadline.
package metrics

import (
	"bufio"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every paddock series.
const Namespace = "paddock"

// Registry holds every series of one paddock process.
type Registry struct {
	reg *prometheus.Registry

	createPhase   *prometheus.HistogramVec
	proxyRequests *prometheus.CounterVec
	proxyDuration *prometheus.HistogramVec
	queueWait     *prometheus.HistogramVec
}

// New returns a registry with paddock's own series and the Go and process
// collectors.
func New() *Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	r := &Registry{reg: reg}
	r.createPhase = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "sandbox_create_phase_seconds",
		Help: "Time taken by each phase of a sandbox create (phase=total for the whole create).",
		// 1 ms to ~16 s: cold starts are tens of milliseconds, sources and
		// image layers can take seconds.
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
	}, []string{"phase"})
	r.proxyRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "proxy_requests_total",
		Help: "Requests served by the port proxy (proxy=port) and the app proxy (proxy=app), by status code.",
	}, []string{"proxy", "code"})
	r.proxyDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "proxy_request_duration_seconds",
		Help:    "Time until a proxied request's response ended (streams count until they close).",
		Buckets: prometheus.DefBuckets,
	}, []string{"proxy"})
	r.queueWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "admission_queue_wait_seconds",
		Help: "Time a create or activation waited for its admission slot (0 when admitted at once), by outcome (admitted, refused: its deadline passed, it was cancelled, or paddock stopped).",
		// 0 (admitted at once) to past the longest default wait (60 s).
		Buckets: []float64{0, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120},
	}, []string{"outcome"})
	for _, o := range []string{"admitted", "refused"} {
		r.queueWait.WithLabelValues(o) // the series exist from the start, at zero
	}
	reg.MustRegister(r.createPhase, r.proxyRequests, r.proxyDuration, r.queueWait)
	return r
}

// Registerer is where other packages register their series.
func (r *Registry) Registerer() prometheus.Registerer { return r.reg }

// Gatherer reads every registered series (for tests and the handler).
func (r *Registry) Gatherer() prometheus.Gatherer { return r.reg }

// Handler serves the text exposition format. It is the operator's: the
// caller puts it behind the host admin's token or on a listener of its
// own (see cmd/paddock serve --metrics-listen).
func (r *Registry) Handler() http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{
		// A failing collector drops its series, not the whole scrape.
		ErrorHandling: promhttp.ContinueOnError,
		// Scrapes are cheap but not free: one at a time is plenty.
		MaxRequestsInFlight: 2,
		Timeout:             10 * time.Second,
	})
}

// ObserveCreatePhase records that one phase of a sandbox create took d.
// It is the one recording point of create timing: node calls it through
// its Observer for the phases it has (network, volumes, driver, source,
// total), and a finer-grained create path calls it with its own phase
// names.
func (r *Registry) ObserveCreatePhase(phase string, d time.Duration) {
	r.createPhase.WithLabelValues(phase).Observe(d.Seconds())
}

// InstrumentProxy counts and times the requests h serves as proxy kind
// ("port" or "app"), by the status sent. A request is recorded as its
// handler ends, also when it ends by panicking: httputil.ReverseProxy
// aborts a response whose body it cannot copy (the client went away
// before the body was written, the app died mid-stream) by panicking
// with http.ErrAbortHandler, after the status has reached the client.
// promhttp's instrumentation observes only after a normal return, so such
// requests (a client that closes a response without reading its body is
// one) were never counted. The wrapper keeps Flush and Hijack (streams
// and WebSockets pass through), directly and through Unwrap.
func (r *Registry) InstrumentProxy(kind string, h http.Handler) http.Handler {
	counter := r.proxyRequests.MustCurryWith(prometheus.Labels{"proxy": kind})
	duration := r.proxyDuration.WithLabelValues(kind) // the series exists from the start, at zero
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() { // runs as a panic unwinds too, which then goes on
			duration.Observe(time.Since(start).Seconds())
			counter.WithLabelValues(strconv.Itoa(sw.code())).Inc()
		}()
		h.ServeHTTP(sw, req)
	})
}

// statusWriter remembers the status a handler sent.
type statusWriter struct {
	http.ResponseWriter
	status   int
	hijacked bool
}

func (w *statusWriter) WriteHeader(code int) {
	// 1xx responses are interim: the final status comes after them.
	if w.status == 0 && (code < 100 || code > 199) {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush keeps streaming for callers that look for http.Flusher.
func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack keeps upgrades (WebSockets) working: the proxy writes their
// 101 on the hijacked connection.
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.hijacked = true
	}
	return c, rw, err
}

// Unwrap lets http.ResponseController reach the server's writer
// (deadlines, flushes, hijacks).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) code() int {
	switch {
	case w.status != 0:
		return w.status
	case w.hijacked:
		return http.StatusSwitchingProtocols
	}
	return http.StatusOK
}
