package storetest

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
)

// webhookCases are the cases of webhooks and their deliveries.
var webhookCases = []struct {
	name string
	fn   func(t *testing.T, s store.Store)
}{
	{"Webhooks", testWebhooks},
	{"Deliveries", testDeliveries},
	{"LastEventSeq", testLastEventSeq},
	{"DeliveryBacklogAndPrune", testDeliveryBacklogAndPrune},
	{"PruneEvents", testPruneEvents},
}

func testWebhooks(t *testing.T, s store.Store) {
	c := ctx(t)
	a := store.Webhook{ID: "wh-a", TeamID: "team-a", URL: "https://a.example/hook", Secret: []byte{1, 2, 3},
		Types: []string{"sandbox.started"}, CreatedAt: at(0)}
	b := store.Webhook{ID: "wh-b", TeamID: "team-b", URL: "https://b.example/hook", Secret: []byte{4}, CreatedAt: at(time.Second)}
	must(t, s.CreateWebhook(c, a))
	must(t, s.CreateWebhook(c, b))
	wantErr(t, s.CreateWebhook(c, a), sandbox.ErrConflict, "webhook_exists")
	wantErr(t, s.CreateWebhook(c, store.Webhook{ID: "x", TeamID: "team-a"}), sandbox.ErrInvalid, "")

	a.CreatedAt = store.Time(a.CreatedAt)
	got, err := s.GetWebhook(c, "team-a", "wh-a")
	must(t, err)
	equal(t, "webhook", got, a)
	if _, err := s.GetWebhook(c, "", "wh-a"); err != nil {
		t.Fatalf("get without a team: %v", err)
	}
	_, err = s.GetWebhook(c, "team-b", "wh-a")
	wantErr(t, err, sandbox.ErrNotFound, "webhook_not_found")

	list, err := s.ListWebhooks(c, "team-a")
	must(t, err)
	equal(t, "team-a's webhooks", ids(list, func(w store.Webhook) string { return w.ID }), []string{"wh-a"})
	list, err = s.ListWebhooks(c, "")
	must(t, err)
	equal(t, "every webhook", ids(list, func(w store.Webhook) string { return w.ID }), []string{"wh-a", "wh-b"})

	must(t, s.AddDelivery(c, store.Delivery{ID: store.DeliveryID("wh-a", 1), WebhookID: "wh-a", TeamID: "team-a",
		EventSeq: 1, EventType: "sandbox.started", Payload: json.RawMessage(`{}`), State: store.DeliveryPending}))
	wantErr(t, s.DeleteWebhook(c, "team-b", "wh-a"), sandbox.ErrNotFound, "webhook_not_found")
	must(t, s.DeleteWebhook(c, "team-a", "wh-a"))
	wantErr(t, s.DeleteWebhook(c, "team-a", "wh-a"), sandbox.ErrNotFound, "webhook_not_found")
	ds, err := s.ListDeliveries(c, store.DeliveryFilter{WebhookID: "wh-a"})
	must(t, err)
	equal(t, "deliveries of a deleted webhook", len(ds), 0)
}

func testDeliveries(t *testing.T, s store.Store) {
	c := ctx(t)
	for i, seq := range []int64{3, 1, 2} {
		must(t, s.AddDelivery(c, store.Delivery{ID: store.DeliveryID("wh-a", seq), WebhookID: "wh-a", TeamID: "team-a",
			EventSeq: seq, EventType: "sandbox.created", Payload: json.RawMessage(`{"seq":` + string(rune('0'+seq)) + `}`),
			State: store.DeliveryPending, CreatedAt: at(time.Duration(i) * time.Second)}))
	}
	must(t, s.AddDelivery(c, store.Delivery{ID: store.DeliveryID("wh-b", 1), WebhookID: "wh-b", TeamID: "team-b",
		EventSeq: 1, EventType: "sandbox.created", Payload: json.RawMessage(`{}`), State: store.DeliveryPending}))
	wantErr(t, s.AddDelivery(c, store.Delivery{ID: store.DeliveryID("wh-a", 1), WebhookID: "wh-a", TeamID: "team-a",
		EventSeq: 1, State: store.DeliveryPending}), sandbox.ErrConflict, "delivery_exists")
	wantErr(t, s.AddDelivery(c, store.Delivery{ID: "x", WebhookID: "wh-a", State: "lost"}), sandbox.ErrInvalid, "")

	ds, err := s.ListDeliveries(c, store.DeliveryFilter{WebhookID: "wh-a"})
	must(t, err)
	equal(t, "order by event seq", ids(ds, func(d store.Delivery) string { return d.ID }), []string{"wh-a-1", "wh-a-2", "wh-a-3"})
	first := ds[0]
	equal(t, "payload", string(first.Payload), `{"seq":1}`)
	equal(t, "version", first.Version, int64(1))
	equal(t, "state", first.State, store.DeliveryPending)

	// A failed attempt, then a stale writer, then success.
	next := at(time.Minute)
	upd := first
	upd.Attempts, upd.LastStatus, upd.LastError, upd.NextAttemptAt, upd.LastAttemptAt = 1, 500, "HTTP 500", next, at(30*time.Second)
	got, err := s.UpdateDelivery(c, upd)
	must(t, err)
	equal(t, "attempts", got.Attempts, 1)
	equal(t, "version", got.Version, int64(2))
	equal(t, "next attempt", got.NextAttemptAt, store.Time(next))
	equal(t, "last status", got.LastStatus, 500)
	equal(t, "payload kept", string(got.Payload), `{"seq":1}`)
	_, err = s.UpdateDelivery(c, upd) // version 1 again
	wantErr(t, err, sandbox.ErrConflict, "stale_version")
	got.State, got.Attempts, got.LastStatus, got.LastError = store.DeliveryDelivered, 2, 200, ""
	got, err = s.UpdateDelivery(c, got)
	must(t, err)
	equal(t, "state", got.State, store.DeliveryDelivered)
	_, err = s.UpdateDelivery(c, store.Delivery{ID: "nope", WebhookID: "wh-a", State: store.DeliveryPending, Version: 1})
	wantErr(t, err, sandbox.ErrNotFound, "delivery_not_found")

	pending, err := s.ListDeliveries(c, store.DeliveryFilter{State: store.DeliveryPending})
	must(t, err)
	equal(t, "pending", ids(pending, func(d store.Delivery) string { return d.ID }), []string{"wh-b-1", "wh-a-2", "wh-a-3"})
	pending, err = s.ListDeliveries(c, store.DeliveryFilter{State: store.DeliveryPending, TeamID: "team-a", AfterSeq: 2, Limit: 5})
	must(t, err)
	equal(t, "team-a's pending after 2", ids(pending, func(d store.Delivery) string { return d.ID }), []string{"wh-a-3"})
	delivered, err := s.ListDeliveries(c, store.DeliveryFilter{State: store.DeliveryDelivered})
	must(t, err)
	equal(t, "delivered", ids(delivered, func(d store.Delivery) string { return d.ID }), []string{"wh-a-1"})
}

func testLastEventSeq(t *testing.T, s store.Store) {
	c := ctx(t)
	seq, err := s.LastEventSeq(c)
	must(t, err)
	equal(t, "empty store", seq, int64(0))
	var last store.Event
	for range 3 {
		last, err = s.AppendEvent(c, store.Event{Type: "x", TeamID: "team-a"})
		must(t, err)
	}
	seq, err = s.LastEventSeq(c)
	must(t, err)
	equal(t, "last seq", seq, last.Seq)
}

// testDeliveryBacklogAndPrune: a webhook's backlog is counted by state
// (up to a bound); pruning drops the settled deliveries (delivered,
// failed, dropped) of events before a Seq, never the pending ones.
func testDeliveryBacklogAndPrune(t *testing.T, s store.Store) {
	c := ctx(t)
	states := []string{store.DeliveryDelivered, store.DeliveryFailed, store.DeliveryDropped, store.DeliveryPending,
		store.DeliveryPending, store.DeliveryPending}
	for i, st := range states {
		seq := int64(i + 1)
		must(t, s.AddDelivery(c, store.Delivery{ID: store.DeliveryID("wh-a", seq), WebhookID: "wh-a", TeamID: "team-a",
			EventSeq: seq, EventType: "x", Payload: json.RawMessage(`{}`), State: st}))
	}
	must(t, s.AddDelivery(c, store.Delivery{ID: store.DeliveryID("wh-b", 1), WebhookID: "wh-b", TeamID: "team-b",
		EventSeq: 1, EventType: "x", Payload: json.RawMessage(`{}`), State: store.DeliveryPending}))
	for _, tc := range []struct {
		name string
		f    store.DeliveryFilter
		upTo int
		want int
	}{
		{"pending of wh-a", store.DeliveryFilter{WebhookID: "wh-a", State: store.DeliveryPending}, 0, 3},
		{"pending of wh-a, up to 2", store.DeliveryFilter{WebhookID: "wh-a", State: store.DeliveryPending}, 2, 2},
		{"dropped", store.DeliveryFilter{State: store.DeliveryDropped}, 0, 1},
		{"all of team-b", store.DeliveryFilter{TeamID: "team-b"}, 10, 1},
		{"all", store.DeliveryFilter{}, 0, 7},
	} {
		n, err := s.CountDeliveries(c, tc.f, tc.upTo)
		must(t, err)
		equal(t, "count "+tc.name, n, tc.want)
	}

	n, err := s.PruneDeliveries(c, 5) // events 1-4 are gone
	must(t, err)
	equal(t, "pruned", n, 3)
	left, err := s.ListDeliveries(c, store.DeliveryFilter{})
	must(t, err)
	equal(t, "left", ids(left, func(d store.Delivery) string { return d.ID }), []string{"wh-b-1", "wh-a-4", "wh-a-5", "wh-a-6"})
}

// testPruneEvents: events go by age and past a count, never the newest
// (Seqs never go back: the next event's Seq is past every pruned one).
func testPruneEvents(t *testing.T, s store.Store) {
	c := ctx(t)
	var seqs []int64
	for i := range 6 {
		e, err := s.AppendEvent(c, store.Event{Type: "x", TeamID: "team-a", Time: at(time.Duration(i) * time.Hour)})
		must(t, err)
		seqs = append(seqs, e.Seq)
	}
	left := func() []int64 {
		t.Helper()
		evs, err := s.ListEvents(c, store.EventFilter{Limit: 100})
		must(t, err)
		var out []int64
		for _, e := range evs {
			out = append(out, e.Seq)
		}
		return out
	}
	n, err := s.PruneEvents(c, time.Time{}, 0)
	must(t, err)
	equal(t, "no bound prunes nothing", n, 0)
	n, err = s.PruneEvents(c, at(2*time.Hour), 0) // older than the third
	must(t, err)
	equal(t, "pruned by age", n, 2)
	equal(t, "left after the age cut", left(), seqs[2:])
	n, err = s.PruneEvents(c, time.Time{}, 3)
	must(t, err)
	equal(t, "pruned by count", n, 1)
	equal(t, "left after the count cut", left(), seqs[3:])
	n, err = s.PruneEvents(c, at(100*time.Hour), 0) // all are old: the newest stays
	must(t, err)
	equal(t, "pruned all but the newest", n, 2)
	equal(t, "left: the newest", left(), seqs[5:])
	last, err := s.LastEventSeq(c)
	must(t, err)
	equal(t, "last seq kept", last, seqs[5])
	e, err := s.AppendEvent(c, store.Event{Type: "x", TeamID: "team-a"})
	must(t, err)
	if e.Seq <= seqs[5] {
		t.Errorf("after pruning the next Seq is %d, want past %d", e.Seq, seqs[5])
	}
}
