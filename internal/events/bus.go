// Package events is paddock's lifecycle event bus and its webhooks. Every
// event (a sandbox created, started, stopped with its reason and usage,
// deleted, snapshotted; each step of a project's activation) is appended
// to the store, which gives it its Seq, and then wakes the feeds watching
// it and enqueues one delivery per matching webhook of its team. The
// store is the one log: a feed resumes after any Seq it saw (Last-Event-ID),
// across restarts and across replicas sharing the store (other replicas'
// events are found by polling), and a delivery outlives a restart.
package events

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// pollInterval is how often a feed looks for events this process was not
// told of (other replicas').
const pollInterval = 2 * time.Second

// asyncQueue bounds the events PublishAsync holds before its callers wait.
const asyncQueue = 4096

// Bus publishes events and feeds them to watchers. It is safe for
// concurrent use.
type Bus struct {
	st  store.Store
	log *slog.Logger

	// pub serialises Publish: events are appended and handed to hooks in
	// Seq order, so a webhook's deliveries are enqueued in order.
	pub   sync.Mutex
	hooks []func(context.Context, store.Event) // set before the first Publish

	mu      sync.Mutex    // guards changed
	changed chan struct{} // closed (and replaced) by every Publish

	qmu     sync.RWMutex // guards qclosed; senders hold it shared while they send
	qclosed bool
	queue   chan store.Event // PublishAsync's, drained in order by drain
	drained chan struct{}    // closed when drain has written the last one

	ctx    context.Context // ends at Close: watchers stop
	cancel context.CancelFunc
	wg     sync.WaitGroup // watchers
}

// NewBus returns a bus over st.
func NewBus(st store.Store, log *slog.Logger) *Bus {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Bus{st: st, log: log.With("component", "events"), changed: make(chan struct{}), ctx: ctx, cancel: cancel,
		queue: make(chan store.Event, asyncQueue), drained: make(chan struct{})}
	go b.drain() // owned: Close closes the queue and waits for drained
	return b
}

// PublishAsync publishes e in order with the other events given to it,
// without waiting for the store: for callers on a latency-critical path
// (a sandbox create). Its time is taken now. When the queue is full the
// caller waits (the store is the bottleneck then anyway); after Close the
// event is dropped, and logged.
func (b *Bus) PublishAsync(e store.Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	b.qmu.RLock()
	defer b.qmu.RUnlock()
	if b.qclosed {
		b.log.Warn("event after close dropped", "type", e.Type, "sandbox", e.SandboxID)
		return
	}
	b.queue <- e
}

func (b *Bus) drain() {
	defer close(b.drained)
	for e := range b.queue {
		if _, err := b.Publish(context.Background(), e); err != nil {
			b.log.Warn("publish event", "type", e.Type, "sandbox", e.SandboxID, "err", err)
		}
	}
}

// OnPublish registers fn to run right after each event is stored, in Seq
// order, before Publish returns. Register before the first Publish.
func (b *Bus) OnPublish(fn func(context.Context, store.Event)) {
	b.pub.Lock()
	defer b.pub.Unlock()
	b.hooks = append(b.hooks, fn)
}

// Publish appends e to the store and tells watchers and hooks. It is
// bounded in time and detached from the caller's cancellation: an event
// of something that happened is recorded even if the request that did it
// is gone.
func (b *Bus) Publish(ctx context.Context, e store.Event) (store.Event, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	b.pub.Lock()
	e, err := b.st.AppendEvent(ctx, e)
	if err == nil {
		for _, h := range b.hooks {
			h(ctx, e)
		}
	}
	b.pub.Unlock()
	if err != nil {
		return e, err
	}
	b.mu.Lock()
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
	return e, nil
}

func (b *Bus) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.changed
}

// Close writes the events PublishAsync still holds, then stops every
// watcher and waits for them.
func (b *Bus) Close() error {
	b.qmu.Lock()
	if !b.qclosed {
		b.qclosed = true
		close(b.queue)
	}
	b.qmu.Unlock()
	<-b.drained
	b.cancel()
	b.wg.Wait()
	return nil
}

// Filter selects the events of a feed. Zero fields match everything.
type Filter struct {
	TeamID    string
	ProjectID string
	SandboxID string
	// Types are event types (Type's names); "sandbox.*" matches a prefix.
	Types []string
	// AfterSeq starts after that Seq; with Tail (and no AfterSeq) the feed
	// starts after the newest event.
	AfterSeq int64
	Tail     bool
}

// Match reports whether e passes f (apart from AfterSeq).
func (f Filter) Match(e store.Event) bool {
	switch {
	case f.TeamID != "" && e.TeamID != f.TeamID,
		f.ProjectID != "" && e.ProjectID != f.ProjectID,
		f.SandboxID != "" && e.SandboxID != f.SandboxID:
		return false
	}
	return MatchType(f.Types, Type(e))
}

// MatchType reports whether typ is one of types ("x.*" matches a prefix);
// no types match every type.
func MatchType(types []string, typ string) bool {
	if len(types) == 0 {
		return true
	}
	return slices.ContainsFunc(types, func(t string) bool {
		if p, ok := strings.CutSuffix(t, "*"); ok {
			return strings.HasPrefix(typ, p)
		}
		return t == typ
	})
}

// ValidTypes checks type filters as a request gives them.
func ValidTypes(types []string) error {
	if len(types) > 32 {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_event_type", "at most 32 event types")
	}
	for _, t := range types {
		if t == "" || len(t) > 64 || strings.ContainsAny(t, " \t\r\n\x00") {
			return sandbox.Errorf(sandbox.ErrInvalid, "invalid_event_type", "event type %q is not one", t)
		}
	}
	return nil
}

// Type is the public name of an event's type: activation steps, which the
// control plane stores by state ("ready"), are "activation.ready".
func Type(e store.Event) string {
	if e.ActivationID != "" && !strings.Contains(e.Type, ".") {
		return "activation." + e.Type
	}
	return e.Type
}

// ToAPI is an event as feeds and webhooks send it.
func ToAPI(e store.Event) api.Event {
	return api.Event{Seq: e.Seq, Time: e.Time, Type: Type(e), TeamID: e.TeamID, ProjectID: e.ProjectID,
		ActivationID: e.ActivationID, SandboxID: e.SandboxID, Message: e.Message, Data: e.Data}
}

// ErrClosed is Watch's answer once the bus is closed.
var ErrClosed = sandbox.Errorf(sandbox.ErrUnavailable, "shutting_down", "paddock is shutting down")

// Watch feeds the events matching f, oldest first, until ctx ends or the
// bus closes; then the channel closes. The goroutine behind it belongs to
// the bus and ends with ctx: a client that goes away takes it along.
func (b *Bus) Watch(ctx context.Context, f Filter) (<-chan store.Event, error) {
	if b.ctx.Err() != nil {
		return nil, ErrClosed
	}
	seq := f.AfterSeq
	if seq == 0 && f.Tail {
		last, err := b.st.LastEventSeq(ctx)
		if err != nil {
			return nil, err
		}
		seq = last
	}
	out := make(chan store.Event)
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer close(out)
		poll := time.NewTicker(pollInterval)
		defer poll.Stop()
		for {
			changed := b.wait()
			evs, err := b.st.ListEvents(ctx, store.EventFilter{TeamID: f.TeamID, ProjectID: f.ProjectID, AfterSeq: seq, Limit: store.MaxEventLimit})
			if err != nil {
				if ctx.Err() == nil && b.ctx.Err() == nil && !errors.Is(err, context.Canceled) {
					b.log.Warn("watch events", "err", err)
				}
				return
			}
			for _, e := range evs {
				seq = e.Seq
				if !f.Match(e) {
					continue
				}
				select {
				case out <- e:
				case <-ctx.Done():
					return
				case <-b.ctx.Done():
					return
				}
			}
			if len(evs) == store.MaxEventLimit {
				continue
			}
			select {
			case <-changed:
			case <-poll.C:
			case <-ctx.Done():
				return
			case <-b.ctx.Done():
				return
			}
		}
	}()
	return out, nil
}
