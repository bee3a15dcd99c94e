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
