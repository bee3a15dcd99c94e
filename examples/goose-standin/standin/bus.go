package standin

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
)

// errTooFarBehind: a subscriber's Last-Event-ID names an event the replay
// buffer has already dropped.
var errTooFarBehind = errors.New("Client too far behind — reload conversation")

// busEvent is one published event: its sequence number and its JSON.
type busEvent struct {
	seq  uint64
	data []byte
}

// subscriber is one /sessions/{id}/events stream. gone is closed when the
// bus drops it: it lagged by more than the lag limit, or the bus closed.
type subscriber struct {
	ch   chan busEvent
	gone chan struct{}
}

// activeRequest is one turn in flight on the bus.
type activeRequest struct {
	id     string
	cancel context.CancelFunc
}

// bus is a session's event bus (goosed's SessionEventBus): monotonic
// sequence numbers from 1, a replay buffer, live subscribers, and the turns
// in flight. It lives in memory only.
type bus struct {
	replayCap, lagLimit int

	mu      sync.Mutex // guards the fields below
	nextSeq uint64
	buf     []busEvent // oldest first, at most replayCap
	subs    map[*subscriber]struct{}
	active  []activeRequest // in registration order
	closed  bool
}

func newBus(replayCap, lagLimit int) *bus {
	return &bus{replayCap: replayCap, lagLimit: lagLimit, nextSeq: 1, subs: map[*subscriber]struct{}{}}
}

// publish stamps ev with the request id, gives it the next sequence number,
// buffers it and hands it to every subscriber. A subscriber whose queue is
// full is dropped, so that it reconnects and replays.
func (b *bus) publish(requestID string, ev MessageEvent) uint64 {
	ev.ChatRequestID = requestID
	if ev.RequestID == "" {
		ev.RequestID = requestID
	}
	data, err := json.Marshal(ev)
	if err != nil {
		data, _ = json.Marshal(MessageEvent{Type: EventError, Error: "Serialization error: " + err.Error()})
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	e := busEvent{seq: b.nextSeq, data: data}
	b.nextSeq++
	b.buf = append(b.buf, e)
	if over := len(b.buf) - b.replayCap; over > 0 {
		b.buf = slices.Delete(b.buf, 0, over)
	}
	for s := range b.subs {
		select {
		case s.ch <- e:
		default:
			delete(b.subs, s)
			close(s.gone)
		}
	}
	return e.seq
}

// subscribe registers a subscriber and returns the events to replay first:
// those after lastID, or the whole buffer when lastID is nil. Registering
// and taking the replay happen under one lock, so the live events follow
// the replay with no gap and no duplicate. active are the requests in
// flight, for the ActiveRequests frame.
func (b *bus) subscribe(lastID *uint64) (sub *subscriber, replay []busEvent, active []string, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if lastID != nil && len(b.buf) > 0 && *lastID+1 < b.buf[0].seq {
		return nil, nil, nil, errTooFarBehind
	}
	for _, e := range b.buf {
		if lastID == nil || e.seq > *lastID {
			replay = append(replay, e)
		}
	}
	for _, a := range b.active {
		active = append(active, a.id)
	}
	sub = &subscriber{ch: make(chan busEvent, b.lagLimit), gone: make(chan struct{})}
	if b.closed {
		close(sub.gone)
	} else {
		b.subs[sub] = struct{}{}
	}
	return sub, replay, active, nil
}

func (b *bus) unsubscribe(s *subscriber) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.subs[s]; ok {
		delete(b.subs, s)
		close(s.gone)
	}
}

// register records a turn in flight. Only one at a time: false if the
// session already has one (or the bus is closed).
func (b *bus) register(id string, cancel context.CancelFunc) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || len(b.active) > 0 {
		return false
	}
	b.active = append(b.active, activeRequest{id: id, cancel: cancel})
	return true
}

// done forgets a finished turn.
func (b *bus) done(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.active = slices.DeleteFunc(b.active, func(a activeRequest) bool { return a.id == id })
}

// cancel cancels the turn with that request id, if it is in flight.
func (b *bus) cancel(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, a := range b.active {
		if a.id == id {
			a.cancel()
		}
	}
}

// close cancels every turn and ends every subscriber's stream.
func (b *bus) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for _, a := range b.active {
		a.cancel()
	}
	for s := range b.subs {
		delete(b.subs, s)
		close(s.gone)
	}
}
