package daemon

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/paddock-dev/paddock/internal/events"
	"github.com/paddock-dev/paddock/internal/httperr"
	"github.com/paddock-dev/paddock/internal/metrics"
	"github.com/paddock-dev/paddock/internal/netguard"
	"github.com/paddock-dev/paddock/internal/node"
	"github.com/paddock-dev/paddock/internal/proxy"
	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/server"
	"github.com/paddock-dev/paddock/internal/store"
)

// MetricsPath is where the Prometheus metrics are served: on the main
// listener to the host admin's token, and unauthenticated on
// `serve --metrics-listen`'s own listener (MetricsHandler).
const MetricsPath = "/metrics"

// startEvents starts the lifecycle event bus over the store, its pruning
// of old events (Config.EventRetention, EventMaxCount), and the webhook
// deliverer on it, which resumes what a previous run left pending.
func (d *Daemon) startEvents(_ context.Context, _ *options) error {
	d.bus = events.NewBus(d.store, d.log)
	d.push("event feeds", d.bus.Close)
	d.bus.StartPruning(d.cfg.eventRetention()) // the bus's goroutine: Close stops it
	key, err := loadSecretsKey(d.cfg.DataDir)
	if err != nil {
		return err
	}
	wh, err := events.NewWebhooks(events.WebhookConfig{
		Store: d.store, Bus: d.bus, Key: key, Logger: d.log,
		Guard:       netguard.Guard{AllowPrivate: d.cfg.WebhookAllowPrivate, Allow: d.cfg.EgressAllowCIDRs, Deny: d.cfg.deny()},
		MaxAttempts: d.cfg.WebhookMaxAttempts, Backoff: d.cfg.WebhookBackoff, MaxBacklog: d.cfg.WebhookMaxBacklog,
		Active: d.leader, // replicas deliver from one
	})
	if err != nil {
		return err
	}
	wh.Start()
	d.push("webhooks", wh.Close) // pending deliveries stay for the next start
	d.webhooks = wh
	return nil
}

// MetricsHandler serves the Prometheus metrics without authentication, for
// a listener of the operator's own (serve --metrics-listen).
func (d *Daemon) MetricsHandler() http.Handler { return d.metrics.Handler() }

// Metrics is the registry other subsystems add their series to (see
// internal/metrics).
func (d *Daemon) Metrics() *metrics.Registry { return d.metrics }

// adminOnly lets only the host admin's credential through: metrics cover
// every team.
func (d *Daemon) adminOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := d.auth.Authenticate(r)
		if err != nil {
			httperr.Write(w, err)
			return
		}
		if !p.HostAdmin {
			httperr.Write(w, sandbox.Errorf(sandbox.ErrForbidden, "forbidden", "metrics are the host admin's"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// nodeObserver turns node's lifecycle facts into events on the bus and its
// create timings into the create-phase histogram.
type nodeObserver struct {
	metrics *metrics.Registry
	bus     *events.Bus
}

var _ node.Observer = nodeObserver{}

func (o nodeObserver) CreatePhase(phase string, d time.Duration) {
	o.metrics.ObserveCreatePhase(phase, d)
}

func (o nodeObserver) SandboxEvent(ctx context.Context, e node.Event) {
	sb := e.Sandbox
	data := map[string]string{"state": string(sb.State)}
	if e.Reason != "" {
		data["reason"] = e.Reason
	}
	if e.SnapshotID != "" {
		data["snapshotId"] = e.SnapshotID
	}
	if u := e.Usage; u != nil {
		f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
		data["cpuSeconds"] = f(u.CPUSeconds)
		data["memoryMBHours"] = f(u.MemoryMBHours)
		data["netRxBytes"] = strconv.FormatUint(u.NetRxBytes, 10)
		data["netTxBytes"] = strconv.FormatUint(u.NetTxBytes, 10)
		data["durationSeconds"] = f(u.End.Sub(u.Start).Seconds())
	}
	msg := ""
	if e.Type == node.EventFailed || e.Type == node.EventStopped {
		// A stop nobody asked for (reason "exited") says what ended it.
		msg = sb.Error
	}
	// Off the create path: the store write (a quarter of a millisecond on
	// SQLite here, more with webhooks) happens behind it, in order.
	o.bus.PublishAsync(store.Event{TeamID: sb.TeamID, ProjectID: sb.ProjectID, SandboxID: sb.ID,
		Type: string(e.Type), Message: msg, Data: data})
}

// metricsSandboxes is node as the metrics collector reads it.
type metricsSandboxes struct{ m *node.Manager }

func (s metricsSandboxes) All(ctx context.Context) []sandbox.Sandbox {
	var all []sandbox.Sandbox
	opts := sandbox.ListOptions{Limit: 500}
	for {
		page, next, err := s.m.List(ctx, opts)
		if err != nil {
			return all
		}
		all = append(all, page...)
		if next == "" {
			return all
		}
		opts.Cursor = next
	}
}

func (s metricsSandboxes) Stats(ctx context.Context, id string) (runtime.Stats, error) {
	return s.m.Stats(ctx, id)
}

// instrumentedPorts is the port proxy with its requests counted and timed.
type instrumentedPorts struct {
	px          *proxy.Proxy
	hosts, path http.Handler
}

var _ server.PortProxy = instrumentedPorts{}

func (p instrumentedPorts) HandlesHost(host string) bool                     { return p.px.HandlesHost(host) }
func (p instrumentedPorts) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.hosts.ServeHTTP(w, r) }
func (p instrumentedPorts) PathHandler() http.Handler                        { return p.path }

// instrumentedHost is a host handler (the app proxy) counted and timed.
type instrumentedHost struct {
	server.HostHandler
	h http.Handler
}

func (i instrumentedHost) ServeHTTP(w http.ResponseWriter, r *http.Request) { i.h.ServeHTTP(w, r) }
