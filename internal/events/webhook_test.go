package events_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/events"
	"github.com/paddock-dev/paddock/internal/netguard"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/store"
	"github.com/paddock-dev/paddock/internal/store/sqlite"
)

var key = make([]byte, 32)

func openStore(t *testing.T, path string) store.Store {
	t.Helper()
	st, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// start runs a bus and webhooks on st until the test ends (or stop).
func start(t *testing.T, st store.Store, guard netguard.Guard) (*events.Bus, *events.Webhooks, func()) {
	t.Helper()
	bus := events.NewBus(st, nil)
	wh, err := events.NewWebhooks(events.WebhookConfig{Store: st, Bus: bus, Key: key, Guard: guard,
		Backoff: 10 * time.Millisecond, MaxAttempts: 3, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	wh.Start()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			wh.Close()
			bus.Close()
		}
	}
	t.Cleanup(stop)
	return bus, wh, stop
}

func waitDelivery(t *testing.T, st store.Store, hookID, state string) store.Delivery {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		ds, err := st.ListDeliveries(t.Context(), store.DeliveryFilter{WebhookID: hookID})
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) > 0 && ds[0].State == state {
			return ds[0]
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no %s delivery of webhook %s", state, hookID)
	return store.Delivery{}
}

// TestDeliveriesSurviveRestart: a delivery pending when paddock stops is
// sent by the next start.
func TestDeliveriesSurviveRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "paddock.db")
	st := openStore(t, path)
	var up atomic.Bool
	var hits atomic.Int32
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if !up.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer hs.Close()
	guard := netguard.Guard{AllowPrivate: true}
	bus, wh, stop := start(t, st, guard)
	hook, _, err := wh.Add(t.Context(), "team-a", hs.URL, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bus.Publish(t.Context(), store.Event{TeamID: "team-a", Type: "sandbox.created"}); err != nil {
		t.Fatal(err)
	}
	// Stopped once a failed attempt is recorded (one in flight at the stop
	// is simply sent again).
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		ds, err := st.ListDeliveries(t.Context(), store.DeliveryFilter{WebhookID: hook.ID})
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 1 && ds[0].LastStatus != 0 {
			break
		}
	}
	stop()
	ds, err := st.ListDeliveries(t.Context(), store.DeliveryFilter{WebhookID: hook.ID})
	if err != nil || len(ds) != 1 || ds[0].State != store.DeliveryPending {
		t.Fatalf("after stop: %+v, %v; want one pending delivery", ds, err)
	}

	up.Store(true)
	start(t, st, guard)
	d := waitDelivery(t, st, hook.ID, store.DeliveryDelivered)
	if d.Attempts < 2 {
		t.Errorf("delivered after %d attempts, want a retry", d.Attempts)
	}
}

// TestDeliveryRefusals: loopback without the operator's allow, and a
// redirect, are failures (never followed), given up after MaxAttempts.
func TestDeliveryRefusals(t *testing.T) {
	var redirected atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { redirected.Add(1) }))
	defer target.Close()
	redirect := httptest.NewServer(http.RedirectHandler(target.URL, http.StatusTemporaryRedirect))
	defer redirect.Close()
	for _, tc := range []struct {
		name   string
		guard  netguard.Guard
		url    string
		status int
	}{
		{"loopback not allowed", netguard.Guard{}, target.URL, 0},
		{"redirect", netguard.Guard{AllowPrivate: true}, redirect.URL, http.StatusTemporaryRedirect},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := openStore(t, filepath.Join(t.TempDir(), "paddock.db"))
			bus, wh, _ := start(t, st, tc.guard)
			hook, _, err := wh.Add(t.Context(), "team-a", tc.url, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := bus.Publish(t.Context(), store.Event{TeamID: "team-a", Type: "sandbox.created"}); err != nil {
				t.Fatal(err)
			}
			d := waitDelivery(t, st, hook.ID, store.DeliveryFailed)
			if d.Attempts != 3 || d.LastStatus != tc.status {
				t.Errorf("delivery = %+v, want 3 attempts, last status %d", d, tc.status)
			}
			if n := redirected.Load(); n != 0 {
				t.Errorf("the target got %d requests", n)
			}
		})
	}
}

// TestAddValidation: URLs, secrets and the per-team bound.
func TestAddValidation(t *testing.T) {
	st := openStore(t, filepath.Join(t.TempDir(), "paddock.db"))
	_, wh, _ := start(t, st, netguard.Guard{})
	ctx := context.Background()
	for _, tc := range []struct {
		name, url, secret string
		kind              error
	}{
		{"not http", "ftp://example.com/x", "", sandbox.ErrInvalid},
		{"credentials", "https://u:p@example.com/x", "", sandbox.ErrInvalid},
		{"no host", "https:///x", "", sandbox.ErrInvalid},
		{"short secret", "https://example.com/x", "short", sandbox.ErrInvalid},
	} {
		if _, _, err := wh.Add(ctx, "team-a", tc.url, tc.secret, nil); !errors.Is(err, tc.kind) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.kind)
		}
	}
	for range events.MaxWebhooksPerTeam {
		if _, _, err := wh.Add(ctx, "team-a", "https://example.com/x", "", nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := wh.Add(ctx, "team-a", "https://example.com/x", "", nil); !errors.Is(err, sandbox.ErrExhausted) {
		t.Errorf("webhook past the bound: %v", err)
	}
}

// TestDownReceiverBlocksOnlyItsWebhook: a webhook waiting for a retry
// holds no worker; another webhook of the team is delivered meanwhile.
func TestDownReceiverBlocksOnlyItsWebhook(t *testing.T) {
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadGateway) }))
	defer down.Close()
	var got atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got.Add(1) }))
	defer up.Close()
	st := openStore(t, filepath.Join(t.TempDir(), "paddock.db"))
	bus := events.NewBus(st, nil)
	wh, err := events.NewWebhooks(events.WebhookConfig{Store: st, Bus: bus, Key: key, Guard: netguard.Guard{AllowPrivate: true},
		Backoff: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	wh.Start()
	t.Cleanup(func() { wh.Close(); bus.Close() })
	// More dead webhooks than worker slots, across teams.
	for i := range 20 {
		if _, _, err := wh.Add(t.Context(), "team-"+string(rune('a'+i)), down.URL, "", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := bus.Publish(t.Context(), store.Event{TeamID: "team-" + string(rune('a'+i)), Type: "sandbox.created"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := wh.Add(t.Context(), "team-z", up.URL, "", nil); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := bus.Publish(t.Context(), store.Event{TeamID: "team-z", Type: "sandbox.created"}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for got.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := got.Load(); n != 3 {
		t.Errorf("the live receiver got %d of 3 events", n)
	}
}

// TestReplicasDeliverOnce: two deliverers on one store (two replicas) send
// each event once, in order.
func TestReplicasDeliverOnce(t *testing.T) {
	var mu sync.Mutex
	var seqs []string
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seqs = append(seqs, r.Header.Get(events.HeaderEventSeq))
		mu.Unlock()
		// Slow enough that the other replica's scan (every 2 s) finds
		// deliveries pending while the first replica sends.
		time.Sleep(100 * time.Millisecond)
	}))
	defer hs.Close()
	st := openStore(t, filepath.Join(t.TempDir(), "paddock.db"))
	guard := netguard.Guard{AllowPrivate: true}
	bus, wh, _ := start(t, st, guard)
	start(t, st, guard)
	if _, _, err := wh.Add(t.Context(), "team-a", hs.URL, "", nil); err != nil {
		t.Fatal(err)
	}
	var want []string
	for range 30 {
		e, err := bus.Publish(t.Context(), store.Event{TeamID: "team-a", Type: "sandbox.created"})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, strconv.FormatInt(e.Seq, 10))
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		n := len(seqs)
		mu.Unlock()
		if n >= len(want) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // a duplicate would come now
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(seqs, want) {
		t.Errorf("received %v, want %v once each, in order", seqs, want)
	}
}

func openStoreB(b *testing.B, path string) store.Store {
	b.Helper()
	st, err := sqlite.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st
}

// TestPublishAsync: events given to PublishAsync are stored in order, and
// Close writes those still queued.
func TestPublishAsync(t *testing.T) {
	st := openStore(t, filepath.Join(t.TempDir(), "paddock.db"))
	bus := events.NewBus(st, nil)
	for i := range 100 {
		bus.PublishAsync(store.Event{TeamID: "team-a", Type: "sandbox.created", SandboxID: strconv.Itoa(i)})
	}
	if err := bus.Close(); err != nil {
		t.Fatal(err)
	}
	bus.PublishAsync(store.Event{TeamID: "team-a", Type: "late"}) // dropped, no panic
	evs, err := st.ListEvents(t.Context(), store.EventFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 100 {
		t.Fatalf("%d events stored, want 100", len(evs))
	}
	for i, e := range evs {
		if e.SandboxID != strconv.Itoa(i) {
			t.Fatalf("event %d is %s's", i, e.SandboxID)
		}
	}
}

// TestBacklogCap: with its receiver down, a webhook holds at most
// MaxBacklog pending deliveries; later events are recorded as dropped and
// never sent, and once the receiver is back the backlog goes out in order
// and new events queue again.
func TestBacklogCap(t *testing.T) {
	st := openStore(t, filepath.Join(t.TempDir(), "paddock.db"))
	var up atomic.Bool
	var mu sync.Mutex
	var got []string // event seqs the receiver accepted
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		mu.Lock()
		got = append(got, r.Header.Get(events.HeaderEventSeq))
		mu.Unlock()
	}))
	defer hs.Close()
	bus := events.NewBus(st, nil)
	defer bus.Close()
	wh, err := events.NewWebhooks(events.WebhookConfig{Store: st, Bus: bus, Key: key, Guard: netguard.Guard{AllowPrivate: true},
		Backoff: 50 * time.Millisecond, MaxAttempts: 1000, Timeout: 2 * time.Second, MaxBacklog: 3})
	if err != nil {
		t.Fatal(err)
	}
	wh.Start()
	defer wh.Close()
	hook, _, err := wh.Add(t.Context(), "team-a", hs.URL, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []string
	publish := func() {
		t.Helper()
		e, err := bus.Publish(t.Context(), store.Event{TeamID: "team-a", Type: "sandbox.created"})
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, strconv.FormatInt(e.Seq, 10))
	}
	for range 5 {
		publish()
	}
	states := func() []string {
		t.Helper()
		ds, err := wh.Deliveries(t.Context(), "team-a", hook.ID, "", 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, d := range ds {
			out = append(out, d.State)
		}
		return out
	}
	want := []string{"pending", "pending", "pending", "dropped", "dropped"}
	if s := states(); !slices.Equal(s, want) {
		t.Fatalf("delivery states with the receiver down = %v, want %v", s, want)
	}
	dropped, err := wh.Deliveries(t.Context(), "team-a", hook.ID, store.DeliveryDropped, 0, 100)
	if err != nil || len(dropped) != 2 || dropped[0].Attempts != 0 || dropped[0].LastError == "" {
		t.Fatalf("dropped deliveries = %+v, %v; want two, never attempted, saying why", dropped, err)
	}

	up.Store(true)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if s := states(); slices.Equal(s, []string{"delivered", "delivered", "delivered", "dropped", "dropped"}) {
			break
		}
	}
	publish() // room again: queued and sent
	waitFor := []string{seqs[0], seqs[1], seqs[2], seqs[5]}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= len(waitFor) {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got, waitFor) {
		t.Errorf("receiver got events %v, want %v (the dropped ones never)", got, waitFor)
	}
}
