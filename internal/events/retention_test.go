package events_test

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/events"
	"github.com/paddock-dev/paddock/internal/store"
)

// TestPruning: the bus's pruning loop deletes events past the age and the
// count, with the settled deliveries of the events it deleted; a pending
// delivery stays until it settles, and the loop ends with the bus.
func TestPruning(t *testing.T) {
	st := openStore(t, filepath.Join(t.TempDir(), "paddock.db"))
	ctx := t.Context()
	now := time.Now()
	var seqs []int64
	for _, age := range []time.Duration{50, 40, 3, 2, 1, 0} { // hours
		e, err := st.AppendEvent(ctx, store.Event{TeamID: "team-a", Type: "sandbox.created", Time: now.Add(-age * time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, e.Seq)
	}
	for i, state := range []string{store.DeliveryDelivered, store.DeliveryPending, store.DeliveryFailed, store.DeliveryDelivered} {
		if err := st.AddDelivery(ctx, store.Delivery{ID: store.DeliveryID("wh-a", seqs[i]), WebhookID: "wh-a", TeamID: "team-a",
			EventSeq: seqs[i], EventType: "sandbox.created", Payload: json.RawMessage(`{}`), State: state}); err != nil {
			t.Fatal(err)
		}
	}
	bus := events.NewBus(st, nil)
	// A day's age and four events: the two old ones go by age, the third by count.
	bus.StartPruning(events.Retention{MaxAge: 24 * time.Hour, MaxEvents: 3, Every: 10 * time.Millisecond})
	left := func() []int64 {
		evs, err := st.ListEvents(ctx, store.EventFilter{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		var out []int64
		for _, e := range evs {
			out = append(out, e.Seq)
		}
		return out
	}
	for deadline := time.Now().Add(10 * time.Second); !slices.Equal(left(), seqs[3:]) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if got := left(); !slices.Equal(got, seqs[3:]) {
		t.Fatalf("events left = %v, want %v", got, seqs[3:])
	}
	ds, err := st.ListDeliveries(ctx, store.DeliveryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, d := range ds {
		kept = append(kept, d.ID)
	}
	// The pending one of a pruned event stays; that of a kept event too.
	if want := []string{store.DeliveryID("wh-a", seqs[1]), store.DeliveryID("wh-a", seqs[3])}; !slices.Equal(kept, want) {
		t.Errorf("deliveries left = %v, want %v", kept, want)
	}
	if err := bus.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestPruneKeepsEverythingUnbounded: no age and no count keep every event.
func TestPruneKeepsEverythingUnbounded(t *testing.T) {
	st := openStore(t, filepath.Join(t.TempDir(), "paddock.db"))
	for range 3 {
		if _, err := st.AppendEvent(t.Context(), store.Event{Type: "x", Time: time.Now().Add(-1000 * time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	evs, ds, err := events.Prune(t.Context(), st, events.Retention{}, time.Now())
	if err != nil || evs != 0 || ds != 0 {
		t.Errorf("Prune with no bounds = %d events, %d deliveries, %v; want nothing", evs, ds, err)
	}
}
