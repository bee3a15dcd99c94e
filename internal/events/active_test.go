package events_test

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/events"
	"github.com/paddock-dev/paddock/internal/netguard"
	"github.com/paddock-dev/paddock/internal/store"
)

// TestInactiveReplicaDoesNotDeliver: a deliverer whose Active gate is shut
// (another replica holds the delivery lease) sends nothing; opened, it
// sends what is pending.
func TestInactiveReplicaDoesNotDeliver(t *testing.T) {
	var got atomic.Int32
	hs := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { got.Add(1) }))
	defer hs.Close()
	st := openStore(t, filepath.Join(t.TempDir(), "paddock.db"))
	var active atomic.Bool
	bus := events.NewBus(st, nil)
	t.Cleanup(func() { bus.Close() })
	wh, err := events.NewWebhooks(events.WebhookConfig{Store: st, Bus: bus, Key: key, Guard: netguard.Guard{AllowPrivate: true},
		Active: active.Load})
	if err != nil {
		t.Fatal(err)
	}
	wh.Start()
	t.Cleanup(func() { wh.Close() })
	hook, _, err := wh.Add(t.Context(), "team-a", hs.URL, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bus.Publish(t.Context(), store.Event{TeamID: "team-a", Type: "sandbox.created"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the publish's wake-up scan has run
	if n := got.Load(); n != 0 {
		t.Fatalf("an inactive replica delivered %d requests", n)
	}
	active.Store(true)
	waitDelivery(t, st, hook.ID, store.DeliveryDelivered) // at the next scan, within scanInterval
	if n := got.Load(); n != 1 {
		t.Fatalf("%d requests, want 1", n)
	}
}
