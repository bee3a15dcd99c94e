package control

import (
	"context"
	"maps"
	"slices"
	"sync"
	"testing"

	"github.com/paddock-dev/paddock/internal/store"
)

// recordingPublisher appends to the store, as events.Bus does, and
// remembers what it published.
type recordingPublisher struct {
	st     store.Store
	mu     sync.Mutex
	events []store.Event
}

func (p *recordingPublisher) Publish(ctx context.Context, e store.Event) (store.Event, error) {
	e, err := p.st.AppendEvent(ctx, e)
	p.mu.Lock()
	p.events = append(p.events, e)
	p.mu.Unlock()
	return e, err
}

// TestLabelsAndPublishedSteps: a project's labels are kept, shown and
// given to its activation's sandbox; every activation step goes through
// the publisher.
func TestLabelsAndPublishedSteps(t *testing.T) {
	pub := &recordingPublisher{}
	e := newEnv(t, func(c *Config) { pub.st = c.Store; c.Events = pub })
	req := appRequest(t, "app")
	req.Labels = map[string]string{"tier": "free"}
	v := e.create(t, req)
	if !maps.Equal(v.Spec.Labels, req.Labels) {
		t.Errorf("view labels = %v", v.Spec.Labels)
	}
	activateReady(t, e.svc, v.ID)
	e.fs.mu.Lock()
	creates := e.fs.Creates()
	got := creates[len(creates)-1].Labels
	e.fs.mu.Unlock()
	if !maps.Equal(got, req.Labels) {
		t.Errorf("the activation's sandbox has labels %v, want %v", got, req.Labels)
	}
	pub.mu.Lock()
	defer pub.mu.Unlock()
	var types []string
	for _, ev := range pub.events {
		types = append(types, ev.Type)
	}
	for _, want := range []string{string(StateQueued), string(StateProvisioning), string(StateReady)} {
		if !slices.Contains(types, want) {
			t.Errorf("published %v, missing %s", types, want)
		}
	}
}
