package standin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"time"
)

var (
	pingData = []byte(`{"type":"Ping"}`)
	// uuidPattern accepts what uuid::Uuid::parse_str accepts in its
	// hyphenated form (any version), braced and URN forms aside.
	uuidPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$|^[0-9a-fA-F]{32}$`)
)

// replyBody is the body of both reply routes.
type replyBody struct {
	SessionID            *string        `json:"session_id"` // POST /reply
	RequestID            *string        `json:"request_id"` // POST /sessions/{id}/reply
	UserMessage          *wireMessage   `json:"user_message"`
	OverrideConversation *[]wireMessage `json:"override_conversation"`
}

// decodeReply reads a reply body; requireField is "session_id" or
// "request_id".
func (s *Server) decodeReply(w http.ResponseWriter, r *http.Request, requireField string) (req replyBody, user Message, override []Message, ok bool) {
	ok = decodeJSON(w, r, s.cfg.MaxReplyBytes, &req, func() error {
		switch {
		case requireField == "session_id" && req.SessionID == nil:
			return missing("session_id")
		case requireField == "request_id" && req.RequestID == nil:
			return missing("request_id")
		}
		var err error
		if user, err = req.UserMessage.message("user_message"); err != nil {
			return err
		}
		override, err = conversation(req.OverrideConversation, "override_conversation")
		return err
	})
	return req, user, override, ok
}

// handleReply is the legacy POST /reply: one SSE stream per turn, `data:`
// frames only, a Ping every PingInterval from the start, the turn's events,
// then Finish (or Error, which ends the stream). The client closing the
// stream cancels the turn.
func (s *Server) handleReply(w http.ResponseWriter, r *http.Request) {
	req, user, override, ok := s.decodeReply(w, r, "session_id")
	if !ok {
		return
	}
	id := *req.SessionID

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stopServer := context.AfterFunc(s.ctx, cancel)
	defer stopServer()
	s.mu.Lock()
	if st := s.sessionLocked(id); st != nil {
		stopSession := context.AfterFunc(st.ctx, cancel) // delete cancels the turn
		defer stopSession()
	}
	s.mu.Unlock()

	sse := startSSE(w)
	emit := func(ev MessageEvent) error {
		data, err := json.Marshal(ev)
		if err == nil {
			err = sse.write(dataFrame(nil, data))
		}
		if err != nil {
			cancel() // the client is gone: the turn stops
		}
		return err
	}
	// The heartbeat starts at once: a Ping is the first frame.
	if sse.write(dataFrame(nil, pingData)) != nil {
		return
	}
	pings := make(chan struct{})
	go func() {
		defer close(pings)
		t := time.NewTicker(s.cfg.PingInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if sse.write(dataFrame(nil, pingData)) != nil {
					cancel()
					return
				}
			}
		}
	}()
	defer func() { cancel(); <-pings }()

	ts, err := s.runTurn(ctx, id, user, override, emit)
	var te *turnError
	switch {
	case errors.As(err, &te):
		emit(MessageEvent{Type: EventError, Error: te.msg})
	case err == nil:
		emit(MessageEvent{Type: EventFinish, Reason: "stop", TokenState: &ts})
	}
}

// busLocked returns session id's bus, creating it.
func (s *Server) busLocked(id string) *bus {
	b := s.buses[id]
	if b == nil {
		b = newBus(s.cfg.ReplayBuffer, s.cfg.LagLimit)
		s.buses[id] = b
	}
	return b
}

// handleSessionReply is POST /sessions/{id}/reply: it registers the turn
// and answers {"request_id"} at once; the turn runs in the background and
// publishes its events to the session's bus, then Finish. A disconnected
// event stream does not cancel it.
func (s *Server) handleSessionReply(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	req, user, override, ok := s.decodeReply(w, r, "request_id")
	if !ok {
		return
	}
	requestID := *req.RequestID
	if !uuidPattern.MatchString(requestID) {
		writeError(w, http.StatusBadRequest, "request_id must be a valid UUID")
		return
	}
	st := s.lockSession(w, id, "")
	if st == nil {
		return
	}
	if s.closed {
		s.mu.Unlock()
		writeError(w, http.StatusServiceUnavailable, "the server is shutting down")
		return
	}
	b := s.busLocked(id)
	ctx, cancel := context.WithCancel(st.ctx)
	if !b.register(requestID, cancel) {
		s.mu.Unlock()
		cancel()
		writeError(w, http.StatusBadRequest, "Session already has an active request. Cancel it first.")
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()

	go func() {
		defer s.wg.Done()
		defer cancel()
		emit := func(ev MessageEvent) error {
			b.publish(requestID, ev)
			return nil
		}
		ts, err := s.runTurn(ctx, id, user, override, emit)
		var te *turnError
		if errors.As(err, &te) {
			b.publish(requestID, MessageEvent{Type: EventError, Error: te.msg})
		}
		if err != nil {
			s.mu.Lock()
			if st := s.sessions[id]; st != nil {
				ts = st.sess.tokenState()
			}
			s.mu.Unlock()
		}
		// goosed sends Finish after a completed, failed or cancelled turn.
		b.publish(requestID, MessageEvent{Type: EventFinish, Reason: "stop", TokenState: &ts})
		b.done(requestID)
	}()
	writeJSON(w, http.StatusOK, map[string]string{"request_id": requestID})
}

// handleCancel is POST /sessions/{id}/cancel: 404 if the session has no
// bus, else 200 whether or not the request was in flight.
func (s *Server) handleCancel(w http.ResponseWriter, r *http.Request) {
	var req struct {
		RequestID *string `json:"request_id"`
	}
	if !decodeJSON(w, r, s.cfg.MaxBodyBytes, &req, func() error {
		return firstMissing(need{"request_id", req.RequestID != nil})
	}) {
		return
	}
	s.mu.Lock()
	b := s.buses[r.PathValue("id")]
	s.mu.Unlock()
	if b == nil {
		bare(w, http.StatusNotFound)
		return
	}
	b.cancel(*req.RequestID)
	w.WriteHeader(http.StatusOK)
}

// handleEvents is GET /sessions/{id}/events: ActiveRequests (no id) when
// turns are in flight, the buffered events after Last-Event-ID (all of
// them without the header), then live events, with a `: ping <n>` comment
// every PingInterval. A Last-Event-ID older than the buffer gets one Error
// frame with id 0 and the stream ends.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	st := s.sessionLocked(id)
	if st == nil {
		s.mu.Unlock()
		bare(w, http.StatusNotFound)
		return
	}
	b := s.busLocked(id)
	sessCtx := st.ctx
	s.mu.Unlock()

	var lastID *uint64
	if v, err := strconv.ParseUint(r.Header.Get("Last-Event-ID"), 10, 64); err == nil {
		lastID = &v
	}
	sub, replay, active, err := b.subscribe(lastID)
	sse := startSSE(w)
	if err != nil {
		data, _ := json.Marshal(MessageEvent{Type: EventError, Error: err.Error()})
		zero := uint64(0)
		sse.write(dataFrame(&zero, data))
		return
	}
	defer b.unsubscribe(sub)
	if len(active) > 0 {
		data, _ := json.Marshal(MessageEvent{Type: EventActiveRequests, RequestIDs: active})
		if sse.write(dataFrame(nil, data)) != nil {
			return
		}
	}
	for _, e := range replay {
		if sse.write(dataFrame(&e.seq, e.data)) != nil {
			return
		}
	}
	// The heartbeat's first tick is immediate, as tokio's interval's.
	n := 0
	ping := func() bool {
		err := sse.write([]byte(": ping " + strconv.Itoa(n) + "\n\n"))
		n++
		return err == nil
	}
	if !ping() {
		return
	}
	t := time.NewTicker(s.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if !ping() {
				return
			}
		case e := <-sub.ch:
			if sse.write(dataFrame(&e.seq, e.data)) != nil {
				return
			}
		case <-sub.gone:
			// Lagged, or the bus closed: send what was queued, then end,
			// so that the client reconnects with Last-Event-ID.
			for {
				select {
				case e := <-sub.ch:
					if sse.write(dataFrame(&e.seq, e.data)) != nil {
						return
					}
				default:
					return
				}
			}
		case <-r.Context().Done():
			return
		case <-sessCtx.Done():
			return
		}
	}
}
