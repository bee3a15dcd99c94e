package events_test

import (
	"path/filepath"
	"testing"

	"github.com/paddock-dev/paddock/internal/events"
	"github.com/paddock-dev/paddock/internal/netguard"
	"github.com/paddock-dev/paddock/internal/store"
)

// BenchmarkPublish is what one lifecycle event costs the path that
// publishes it (a sandbox create publishes two): the store append, and
// with a webhook its delivery record.
func BenchmarkPublish(b *testing.B) {
	for _, hooks := range []int{0, 1} {
		b.Run(map[int]string{0: "no-webhook", 1: "one-webhook"}[hooks], func(b *testing.B) {
			st := openStoreB(b, filepath.Join(b.TempDir(), "paddock.db"))
			bus := events.NewBus(st, nil)
			defer bus.Close()
			wh, err := events.NewWebhooks(events.WebhookConfig{Store: st, Bus: bus, Key: key, Guard: netguard.Guard{}})
			if err != nil {
				b.Fatal(err)
			}
			// Not started: deliveries are only enqueued.
			for range hooks {
				if _, _, err := wh.Add(b.Context(), "team-a", "https://example.com/x", "", nil); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for b.Loop() {
				if _, err := bus.Publish(b.Context(), store.Event{TeamID: "team-a", Type: "sandbox.created"}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
