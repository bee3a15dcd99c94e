package envd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Polling watchers (CreateWatcher, GetWatcherEvents, RemoveWatcher), which
// the SDKs' synchronous clients use in place of the WatchDir stream: an
// agent watch held on the host, whose events wait in a bounded buffer
// until the client collects them.

// Bounds of the polling watchers.
const (
	// maxWatchersPerSandbox bounds the watchers open on one sandbox (the
	// agent's own watch limit, 16 by default, also counts WatchDir streams).
	maxWatchersPerSandbox = 8
	// maxWatcherEvents bounds the events a watcher holds between polls;
	// past it new events are dropped until the next poll.
	maxWatcherEvents = 4096
)

// watcherIdle is how long a watcher lives without a poll: a client that
// went away does not hold an agent watch for ever. A variable for tests,
// read when a Handler is made.
var watcherIdle = 2 * time.Minute

// watcherSet holds one Handler's polling watchers. Each watcher's
// goroutine is owned by the set: it ends when the watcher is removed,
// idles past its idle time, or its watch ends (the directory went, the
// sandbox stopped).
type watcherSet struct {
	idle      time.Duration
	mu        sync.Mutex
	byID      map[string]*pollWatcher // guarded by mu
	bySandbox map[string]int          // guarded by mu: open watchers per sandbox
}

func newWatcherSet(idle time.Duration) *watcherSet {
	return &watcherSet{idle: idle, byID: map[string]*pollWatcher{}, bySandbox: map[string]int{}}
}

// pollWatcher is one polling watcher.
type pollWatcher struct {
	id, sandboxID string
	cancel        context.CancelFunc
	polled        chan struct{} // a poll resets the idle timer
	done          chan struct{} // closed when the goroutine ended

	mu      sync.Mutex
	events  []filesystemEvent // guarded by mu
	dropped int               // guarded by mu: events lost since the last poll
	ended   bool              // guarded by mu: the watch is over; the events are the last
}

var errWatcherNotFound = sandbox.Errorf(sandbox.ErrNotFound, "watcher_not_found", "watcher not found (removed, expired without a poll, or its directory went)")

func newWatcherID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// reserve counts a watcher for sandboxID, if the sandbox may have one more.
func (ws *watcherSet) reserve(sandboxID string) error {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.bySandbox[sandboxID] >= maxWatchersPerSandbox {
		return sandbox.Errorf(sandbox.ErrExhausted, "too_many_watchers",
			"the sandbox has %d watchers, the most it may: remove one first", maxWatchersPerSandbox)
	}
	ws.bySandbox[sandboxID]++
	return nil
}

func (ws *watcherSet) release(sandboxID string) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.bySandbox[sandboxID]--; ws.bySandbox[sandboxID] <= 0 {
		delete(ws.bySandbox, sandboxID)
	}
}

// get finds a watcher of sandboxID; another sandbox's is not found.
func (ws *watcherSet) get(sandboxID, id string) (*pollWatcher, error) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w, ok := ws.byID[id]
	if !ok || w.sandboxID != sandboxID {
		return nil, errWatcherNotFound
	}
	return w, nil
}

// forget drops a watcher from the set (its goroutine ends on its own).
func (ws *watcherSet) forget(w *pollWatcher) {
	ws.mu.Lock()
	_, ok := ws.byID[w.id]
	delete(ws.byID, w.id)
	ws.mu.Unlock()
	if ok {
		ws.release(w.sandboxID)
	}
}

// createWatcher starts an agent watch and keeps its events for polls. The
// watch is opened before the answer, so a missing directory is this
// call's error and every change after the answer is seen.
func (s *fsService) createWatcher(ctx context.Context, req *connect.Request[watchRequest]) (*connect.Response[createWatcherResponse], error) {
	t := targetOf(ctx)
	if err := s.watchers.reserve(t.SandboxID); err != nil {
		return nil, err
	}
	// The watch outlives this request: its context is the watcher's.
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	wr, err := openWatch(wctx, t, req.Msg)
	if err != nil {
		cancel()
		s.watchers.release(t.SandboxID)
		return nil, err
	}
	w := &pollWatcher{id: newWatcherID(), sandboxID: t.SandboxID, cancel: cancel,
		polled: make(chan struct{}, 1), done: make(chan struct{})}
	s.watchers.mu.Lock()
	s.watchers.byID[w.id] = w
	s.watchers.mu.Unlock()
	go s.watchers.run(wctx, w, wr)
	return connect.NewResponse(&createWatcherResponse{WatcherID: w.id}), nil
}

// run collects w's events until its context ends (removed), it idles past
// ws.idle, or the watch ends; then it closes the watch. An idle or
// removed watcher leaves the set at once; one whose watch ended stays
// until its last events are collected.
func (ws *watcherSet) run(ctx context.Context, w *pollWatcher, wr *agent.WatchReader) {
	defer close(w.done)
	events := pumpWatch(wr)
	defer func() {
		w.cancel()
		wr.Close()
		for range events {
		}
	}()
	idle := time.NewTimer(ws.idle)
	defer idle.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-idle.C:
			ws.forget(w)
			return
		case <-w.polled:
			idle.Reset(ws.idle)
		case ev, ok := <-events:
			if !ok {
				w.mu.Lock()
				w.ended = true
				w.mu.Unlock()
				// Kept for the final poll, then forgotten; or by the
				// idle timer if no poll comes.
				select {
				case <-ctx.Done():
				case <-idle.C:
					ws.forget(w)
				}
				return
			}
			fe, ok := eventOf(ev)
			if !ok {
				continue
			}
			w.mu.Lock()
			if len(w.events) < maxWatcherEvents {
				w.events = append(w.events, fe)
			} else {
				w.dropped++
			}
			w.mu.Unlock()
		}
	}
}

// getWatcherEvents hands over the events a watcher collected since the
// last poll. A watcher whose watch ended answers its last events once,
// then is gone.
func (s *fsService) getWatcherEvents(ctx context.Context, req *connect.Request[watcherIDRequest]) (*connect.Response[getWatcherEventsResponse], error) {
	t := targetOf(ctx)
	w, err := s.watchers.get(t.SandboxID, req.Msg.WatcherID)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	events, ended := w.events, w.ended
	w.events = nil
	if w.dropped > 0 {
		s.h.cfg.Logger.Warn("envd: watcher dropped events between polls", "sandbox", t.SandboxID, "dropped", w.dropped)
		w.dropped = 0
	}
	w.mu.Unlock()
	select {
	case w.polled <- struct{}{}:
	default:
	}
	if ended {
		s.watchers.forget(w)
		w.cancel()
	}
	if events == nil {
		events = []filesystemEvent{}
	}
	return connect.NewResponse(&getWatcherEventsResponse{Events: events}), nil
}

// removeWatcher stops a watcher and waits for its watch to close.
func (s *fsService) removeWatcher(ctx context.Context, req *connect.Request[watcherIDRequest]) (*connect.Response[empty], error) {
	t := targetOf(ctx)
	w, err := s.watchers.get(t.SandboxID, req.Msg.WatcherID)
	if err != nil {
		return nil, err
	}
	s.watchers.forget(w)
	w.cancel()
	select {
	case <-w.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return connect.NewResponse(&empty{}), nil
}
