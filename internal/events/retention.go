package events

import (
	"context"
	"fmt"
	"time"

	"github.com/paddock-dev/paddock/internal/store"
)

// Defaults of Retention.
const (
	DefaultRetentionAge = 30 * 24 * time.Hour
	DefaultMaxEvents    = 1_000_000
	DefaultPruneEvery   = time.Hour
)

// Retention bounds what the store keeps of the event log: events older
// than MaxAge, and those more than MaxEvents behind the newest, are
// deleted every Every, with the settled deliveries (delivered, failed,
// dropped) of the events gone. Pending deliveries stay until they settle.
// A zero MaxAge or MaxEvents does not bound by that; the newest event
// always stays (Seqs never go back).
type Retention struct {
	MaxAge    time.Duration
	MaxEvents int64
	Every     time.Duration // default DefaultPruneEvery
}

// Prune applies r once at now and reports what it deleted.
func Prune(ctx context.Context, st store.Store, r Retention, now time.Time) (evs, deliveries int, err error) {
	var before time.Time
	if r.MaxAge > 0 {
		before = now.Add(-r.MaxAge)
	}
	if evs, err = st.PruneEvents(ctx, before, r.MaxEvents); err != nil {
		return 0, 0, fmt.Errorf("prune events: %w", err)
	}
	oldest, err := st.ListEvents(ctx, store.EventFilter{Limit: 1})
	if err != nil || len(oldest) == 0 {
		return evs, 0, err
	}
	if deliveries, err = st.PruneDeliveries(ctx, oldest[0].Seq); err != nil {
		return evs, 0, fmt.Errorf("prune webhook deliveries: %w", err)
	}
	return evs, deliveries, nil
}

// StartPruning applies r now and every r.Every until Close. The goroutine
// is the bus's. Replicas sharing a store may each prune: a second prune
// of the same cut deletes nothing.
func (b *Bus) StartPruning(r Retention) {
	if r.Every <= 0 {
		r.Every = DefaultPruneEvery
	}
	if r.MaxAge <= 0 && r.MaxEvents <= 0 {
		return // keep everything
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		t := time.NewTicker(r.Every)
		defer t.Stop()
		for {
			ctx, cancel := context.WithTimeout(b.ctx, 5*time.Minute)
			evs, ds, err := Prune(ctx, b.st, r, time.Now())
			cancel()
			switch {
			case err != nil && b.ctx.Err() == nil:
				b.log.Warn("prune the event log", "err", err)
			case evs > 0 || ds > 0:
				b.log.Info("pruned the event log", "events", evs, "deliveries", ds, "maxAge", r.MaxAge, "maxEvents", r.MaxEvents)
			}
			select {
			case <-b.ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}
