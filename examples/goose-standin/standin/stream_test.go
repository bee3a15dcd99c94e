package standin

import (
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestReplyStreamsInChunks(t *testing.T) {
	const delay = 150 * time.Millisecond
	e := newEnv(t, func(c *Config) { c.ChunkDelay = delay; c.PingInterval = time.Minute })
	s := e.newSession()
	resp := e.send(e.request("POST", "/reply", map[string]any{"session_id": s.ID, "user_message": userMessage("hello streaming world")}))
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("%d %v", resp.StatusCode, resp.Header)
	}
	ch := frames(resp)
	first, _ := next(t, ch, 5*time.Second)
	if ev := event(t, first); ev.Type != EventPing || first.HasID {
		t.Fatalf("first frame %+v, want a Ping with no id", first)
	}
	var (
		msgs          []MessageEvent
		firstChunkAt  time.Time
		finish        *MessageEvent
		streamEndedAt time.Time
	)
	for {
		f, ok := next(t, ch, 5*time.Second)
		if !ok {
			streamEndedAt = time.Now()
			break
		}
		if f.HasID || f.Comment != "" {
			t.Errorf("legacy frame with an id or comment: %+v", f)
		}
		ev := event(t, f)
		switch ev.Type {
		case EventPing:
		case EventMessage:
			if firstChunkAt.IsZero() {
				firstChunkAt = time.Now()
			}
			if finish != nil {
				t.Errorf("Message after Finish")
			}
			msgs = append(msgs, ev)
		case EventFinish:
			finish = &ev
		default:
			t.Errorf("unexpected event %+v", ev)
		}
	}
	if len(msgs) < 2 {
		t.Fatalf("%d Message chunks, want at least 2", len(msgs))
	}
	// Streaming, not one buffered answer: the first chunk arrived well
	// before the stream ended.
	if gap := streamEndedAt.Sub(firstChunkAt); gap < delay {
		t.Errorf("first chunk only %s before the end", gap)
	}
	for _, m := range msgs {
		if m.Message.ID == nil || *m.Message.ID != "msg_1" || m.Message.Role != "assistant" || m.TokenState == nil {
			t.Errorf("chunk %+v", m)
		}
	}
	if got := replyText(msgs); got != "echo: hello streaming world" {
		t.Errorf("reply %q", got)
	}
	if finish == nil || finish.Reason != "stop" || finish.TokenState == nil || finish.TokenState.TotalTokens == 0 {
		t.Fatalf("finish %+v", finish)
	}
	if *finish.TokenState != *msgs[len(msgs)-1].TokenState {
		t.Errorf("Finish tokens %+v, last chunk %+v", *finish.TokenState, *msgs[len(msgs)-1].TokenState)
	}
	if *msgs[0].TokenState != (TokenState{}) {
		t.Errorf("first chunk of a fresh session reports %+v", *msgs[0].TokenState)
	}

	// The second turn continues the numbering and accumulates tokens.
	evs := e.reply(s.ID, "again")
	if got := replyText(evs); got != "echo: again" || *evs[0].Message.ID != "msg_2" {
		t.Errorf("second turn %q id %s", got, *evs[0].Message.ID)
	}
	last := evs[len(evs)-1].TokenState
	if last.AccumulatedTotalTokens != finish.TokenState.TotalTokens+last.TotalTokens {
		t.Errorf("accumulated %+v after %+v", *last, *finish.TokenState)
	}
}

// TestReplyWireFormat checks the raw bytes: data frames only, no event or
// id lines.
func TestReplyWireFormat(t *testing.T) {
	e := newEnv(t, nil)
	s := e.newSession()
	resp := e.send(e.request("POST", "/reply", map[string]any{"session_id": s.ID, "user_message": userMessage("x")}))
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !regexp.MustCompile(`^(data: \{[^\n]+\}\n\n)+$`).Match(body) {
		t.Errorf("body is not data frames only:\n%s", body)
	}
	if !strings.HasPrefix(string(body), "data: {\"type\":\"Ping\"}\n\n") {
		t.Errorf("does not start with a Ping: %.60s", body)
	}
}

func TestReplyPingsWhileIdle(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.PingInterval = 30 * time.Millisecond })
	s := e.newSession()
	resp := e.send(e.request("POST", "/reply", map[string]any{"session_id": s.ID, "user_message": userMessage("[standin:slow=400ms] wait")}))
	defer resp.Body.Close()
	ch := frames(resp)
	pings := 0
	for {
		f, ok := next(t, ch, 5*time.Second)
		if !ok {
			t.Fatal("stream ended before any Message")
		}
		if ev := event(t, f); ev.Type == EventMessage {
			break
		} else if ev.Type == EventPing {
			pings++
		}
	}
	if pings < 5 {
		t.Errorf("%d pings during a 400 ms pause at a 30 ms interval", pings)
	}
}

func TestReplyUnknownSessionErrorsInStream(t *testing.T) {
	e := newEnv(t, nil)
	for _, id := range []string{"20260422_9", "../../etc/passwd", ""} {
		evs := e.reply(id, "hi")
		if len(evs) != 1 || evs[0].Type != EventError || evs[0].Error != "Failed to read session: Session "+id+" not found" {
			t.Errorf("session %q: %+v", id, evs)
		}
	}
}

func TestReplyModes(t *testing.T) {
	e := newEnv(t, nil)
	t.Run("error", func(t *testing.T) {
		s := e.newSession()
		evs := e.reply(s.ID, "[standin:error] boom")
		if len(evs) != 1 || evs[0].Type != EventError || evs[0].Error != "standin: error requested" {
			t.Errorf("events %+v", evs)
		}
		var got Session
		e.callJSON("GET", "/sessions/"+s.ID, nil, 200, &got)
		if len(got.Conversation) != 1 || got.Conversation[0].Role != "user" {
			t.Errorf("conversation %+v", got.Conversation)
		}
	})
	t.Run("tool", func(t *testing.T) {
		s := e.newSession()
		evs := e.reply(s.ID, "[standin:tool] ls")
		var kinds []string
		for _, ev := range evs {
			if ev.Type != EventMessage {
				kinds = append(kinds, ev.Type)
				continue
			}
			var c struct{ Type string }
			json.Unmarshal(ev.Message.Content[0], &c)
			kinds = append(kinds, ev.Message.Role+":"+c.Type)
		}
		want := "assistant:toolRequest user:toolResponse assistant:text assistant:text assistant:text Finish"
		if strings.Join(kinds, " ") != want {
			t.Errorf("events %v, want %s", kinds, want)
		}
		if got := replyText(evs[2:]); got != "echo: [standin:tool] ls" {
			t.Errorf("reply %q", got)
		}
		var got Session
		e.callJSON("GET", "/sessions/"+s.ID, nil, 200, &got)
		if len(got.Conversation) != 4 {
			t.Errorf("conversation has %d messages, want 4", len(got.Conversation))
		}
	})
}

func TestReplyClientGoneCancelsTurn(t *testing.T) {
	e := newEnv(t, nil)
	s := e.newSession()
	resp := e.send(e.request("POST", "/reply", map[string]any{"session_id": s.ID, "user_message": userMessage("[standin:slow=300ms] bye now")}))
	ch := frames(resp)
	for {
		f, _ := next(t, ch, 5*time.Second)
		if event(t, f).Type == EventMessage {
			break
		}
	}
	resp.Body.Close()
	// The full turn would have ended by now.
	time.Sleep(1500 * time.Millisecond)
	var got Session
	e.callJSON("GET", "/sessions/"+s.ID, nil, 200, &got)
	if len(got.Conversation) != 1 {
		t.Errorf("a cancelled turn stored %d messages, want only the user's", len(got.Conversation))
	}
}

// subscribe opens /sessions/{id}/events with an optional Last-Event-ID.
func (e *env) subscribe(id, lastEventID string) (*http.Response, <-chan frameOrErr) {
	e.t.Helper()
	req := e.request("GET", "/sessions/"+id+"/events", nil)
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp := e.send(req)
	if resp.StatusCode != 200 {
		e.t.Fatalf("events: %d", resp.StatusCode)
	}
	e.t.Cleanup(func() { resp.Body.Close() })
	return resp, frames(resp)
}

// sessionReply posts a turn to the event bus and returns its request id.
func (e *env) sessionReply(id, requestID, text string) {
	e.t.Helper()
	var out map[string]string
	e.callJSON("POST", "/sessions/"+id+"/reply", map[string]any{"request_id": requestID, "user_message": userMessage(text)}, 200, &out)
	if out["request_id"] != requestID || len(out) != 1 {
		e.t.Fatalf("reply answer %v", out)
	}
}

// busEvents reads frames until Finish, returning the data frames; pings
// are checked and dropped.
func busEvents(t *testing.T, ch <-chan frameOrErr) (ids []uint64, evs []MessageEvent) {
	t.Helper()
	for {
		f, ok := next(t, ch, 5*time.Second)
		if !ok {
			t.Fatal("stream ended before Finish")
		}
		if f.Comment != "" {
			if !strings.HasPrefix(f.Comment, "ping ") || f.HasID || f.Data != "" {
				t.Errorf("heartbeat %+v", f)
			}
			continue
		}
		ev := event(t, f)
		if ev.Type == EventActiveRequests {
			continue
		}
		n, err := strconv.ParseUint(f.ID, 10, 64)
		if !f.HasID || err != nil {
			t.Fatalf("event without a numeric id: %+v", f)
		}
		ids, evs = append(ids, n), append(evs, ev)
		if ev.Type == EventFinish {
			return ids, evs
		}
	}
}

const (
	rid1 = "0196f3c2-7a1e-7c3b-9d2a-0a1b2c3d4e5f"
	rid2 = "0196f3c2-7a1e-7c3b-9d2a-0a1b2c3d4e60"
)

func TestEventsIdleHeartbeat(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.PingInterval = 30 * time.Millisecond })
	s := e.newSession()
	resp, ch := e.subscribe(s.ID, "")
	if resp.Header.Get("Content-Type") != "text/event-stream" || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Errorf("headers %v", resp.Header)
	}
	for i := range 4 {
		f, _ := next(t, ch, 2*time.Second)
		if f.Comment != "ping "+strconv.Itoa(i) || f.HasID || f.Data != "" {
			t.Fatalf("frame %d: %+v, want \": ping %d\"", i, f, i)
		}
	}
}

func TestSessionReplyOverEvents(t *testing.T) {
	e := newEnv(t, nil)
	s := e.newSession()
	_, ch := e.subscribe(s.ID, "")
	e.sessionReply(s.ID, rid1, "over the bus")
	ids, evs := busEvents(t, ch)
	for i, id := range ids {
		if id != uint64(i+1) {
			t.Errorf("ids %v, want 1..n", ids)
			break
		}
	}
	for _, ev := range evs {
		if ev.ChatRequestID != rid1 || ev.RequestID != rid1 {
			t.Errorf("event %+v lacks the request ids", ev)
		}
	}
	if got := replyText(evs); got != "echo: over the bus" {
		t.Errorf("reply %q", got)
	}
	var got Session
	e.callJSON("GET", "/sessions/"+s.ID, nil, 200, &got)
	if len(got.Conversation) != 2 {
		t.Errorf("conversation %d", len(got.Conversation))
	}
	// The turn is over: another is accepted, and its events follow on.
	e.sessionReply(s.ID, rid2, "two")
	ids2, _ := busEvents(t, ch)
	if ids2[0] != ids[len(ids)-1]+1 {
		t.Errorf("second turn starts at %d after %d", ids2[0], ids[len(ids)-1])
	}
}

func TestLastEventIDReplay(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.PingInterval = time.Minute })
	s := e.newSession()
	_, ch := e.subscribe(s.ID, "")
	e.sessionReply(s.ID, rid1, "a b c d")
	all, _ := busEvents(t, ch)
	n := all[len(all)-1]
	if n < 4 {
		t.Fatalf("only %d events", n)
	}

	// replayed reads the frames sent before the first heartbeat.
	replayed := func(lastID string) (ids []string) {
		t.Helper()
		_, ch := e.subscribe(s.ID, lastID)
		for {
			f, ok := next(t, ch, 5*time.Second)
			if !ok || f.Comment == "ping 0" {
				return ids
			}
			ids = append(ids, f.ID)
		}
	}
	seq := func(from, to uint64) (out []string) {
		for i := from; i <= to; i++ {
			out = append(out, strconv.FormatUint(i, 10))
		}
		return out
	}
	tests := []struct {
		name, lastID string
		want         []string
	}{
		{"after 2", "2", seq(3, n)},
		{"no header: the whole buffer", "", seq(1, n)},
		{"unparsable header: the whole buffer", "x7", seq(1, n)},
		{"after 0", "0", seq(1, n)},
		{"up to date", strconv.FormatUint(n, 10), nil},
		{"from the future (an old process)", "9999", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := replayed(tt.lastID); strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("replayed %v, want %v", got, tt.want)
			}
		})
	}

	t.Run("live events follow the replay", func(t *testing.T) {
		_, ch := e.subscribe(s.ID, strconv.FormatUint(n, 10))
		e.sessionReply(s.ID, rid2, "more")
		ids, _ := busEvents(t, ch)
		if ids[0] != n+1 {
			t.Errorf("live ids %v, want from %d", ids, n+1)
		}
	})
}

func TestActiveRequestsOnReconnect(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.PingInterval = time.Minute })
	s := e.newSession()
	_, ch := e.subscribe(s.ID, "")
	e.sessionReply(s.ID, rid1, "[standin:slow=700ms] slow one")
	f, _ := next(t, ch, 5*time.Second) // ping 0
	if f.Comment != "ping 0" {
		t.Fatalf("frame %+v", f)
	}
	f, _ = next(t, ch, 5*time.Second)
	if f.ID != "1" {
		t.Fatalf("frame %+v, want id 1", f)
	}

	// Reconnect mid-turn with Last-Event-ID: 1.
	_, ch2 := e.subscribe(s.ID, "1")
	f, _ = next(t, ch2, 5*time.Second)
	ev := event(t, f)
	if f.HasID || ev.Type != EventActiveRequests || len(ev.RequestIDs) != 1 || ev.RequestIDs[0] != rid1 {
		t.Fatalf("first frame %+v, want ActiveRequests without an id", f)
	}
	ids, evs := busEvents(t, ch2)
	if ids[0] != 2 {
		t.Errorf("after Last-Event-ID 1 the stream resumed at %v", ids)
	}
	if got := replyText(evs); got != "[standin:slow=700ms] slow one" {
		t.Errorf("chunks after 1: %q", got)
	}
	// Once the turn finished, nothing is active.
	_, ch3 := e.subscribe(s.ID, "")
	f, _ = next(t, ch3, 5*time.Second)
	if f.ID != "1" {
		t.Errorf("after the turn, first frame %+v, want the replay", f)
	}
}

func TestClientTooFarBehind(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ReplayBuffer = 4 })
	s := e.newSession()
	_, ch := e.subscribe(s.ID, "")
	e.sessionReply(s.ID, rid1, "a b c d")
	busEvents(t, ch)
	e.sessionReply(s.ID, rid2, "e f g h")
	ids, _ := busEvents(t, ch)
	last := ids[len(ids)-1]
	oldest := last - 3 // the buffer holds the last 4

	resp, ch2 := e.subscribe(s.ID, strconv.FormatUint(oldest-2, 10))
	f, _ := next(t, ch2, 5*time.Second)
	ev := event(t, f)
	if f.ID != "0" || ev.Type != EventError || ev.Error != "Client too far behind — reload conversation" {
		t.Errorf("frame %+v", f)
	}
	if _, ok := next(t, ch2, 5*time.Second); ok {
		t.Error("the stream goes on after the too-far-behind error")
	}
	resp.Body.Close()

	// One before the oldest kept event is still whole.
	_, ch3 := e.subscribe(s.ID, strconv.FormatUint(oldest-1, 10))
	f, _ = next(t, ch3, 5*time.Second)
	if f.ID != strconv.FormatUint(oldest, 10) {
		t.Errorf("frame %+v, want id %d", f, oldest)
	}
}

func TestSessionReplyErrors(t *testing.T) {
	e := newEnv(t, nil)
	s := e.newSession()
	msg := func(status int, body []byte) string {
		var m struct{ Message string }
		json.Unmarshal(body, &m)
		return strconv.Itoa(status) + " " + m.Message
	}
	tests := []struct {
		name, id string
		body     any
		want     string
	}{
		{"not a uuid", s.ID, map[string]any{"request_id": "r-1", "user_message": userMessage("x")}, "400 request_id must be a valid UUID"},
		{"unknown session", "20260422_9", map[string]any{"request_id": rid1, "user_message": userMessage("x")}, "404 Session 20260422_9 not found"},
		{"traversal: no route", "..%2F..%2Fx", map[string]any{"request_id": rid1, "user_message": userMessage("x")}, "404 "},
		{"not an id", "20260422_1.json", map[string]any{"request_id": rid1, "user_message": userMessage("x")}, "404 Session 20260422_1.json not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := msg(e.call("POST", "/sessions/"+tt.id+"/reply", tt.body)); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	t.Run("one turn at a time", func(t *testing.T) {
		_, ch := e.subscribe(s.ID, "")
		e.sessionReply(s.ID, rid1, "[standin:slow=500ms] first")
		got := msg(e.call("POST", "/sessions/"+s.ID+"/reply", map[string]any{"request_id": rid2, "user_message": userMessage("x")}))
		if got != "400 Session already has an active request. Cancel it first." {
			t.Errorf("got %q", got)
		}
		busEvents(t, ch)
	})
	if status, _ := e.call("POST", "/sessions/"+s.ID+"/reply", map[string]any{"user_message": userMessage("x")}); status != 422 {
		t.Errorf("no request_id: %d", status)
	}
}

func TestCancel(t *testing.T) {
	e := newEnv(t, nil)
	s := e.newSession()
	if status, body := e.call("POST", "/sessions/"+s.ID+"/cancel", map[string]any{"request_id": rid1}); status != 404 || len(body) != 0 {
		t.Errorf("cancel on a session without a bus: %d %q", status, body)
	}
	_, ch := e.subscribe(s.ID, "")
	e.sessionReply(s.ID, rid1, "[standin:slow=10s] never")
	start := time.Now()
	e.callJSON("POST", "/sessions/"+s.ID+"/cancel", map[string]any{"request_id": rid2}, 200, nil) // not in flight: 200
	e.callJSON("POST", "/sessions/"+s.ID+"/cancel", map[string]any{"request_id": rid1}, 200, nil)
	_, evs := busEvents(t, ch)
	if time.Since(start) > 5*time.Second || len(evs) != 1 || evs[0].Type != EventFinish {
		t.Errorf("after cancel: %+v", evs)
	}
	// The request is done: another turn is accepted.
	e.sessionReply(s.ID, rid2, "next")
	if _, evs := busEvents(t, ch); replyText(evs) != "echo: next" {
		t.Errorf("turn after cancel: %+v", evs)
	}
	var got Session
	e.callJSON("GET", "/sessions/"+s.ID, nil, 200, &got)
	if len(got.Conversation) != 3 { // cancelled user message, next, its echo
		t.Errorf("conversation has %d messages, want 3", len(got.Conversation))
	}
}

func TestDeleteEndsTurnsAndStreams(t *testing.T) {
	e := newEnv(t, nil)
	a, b := e.newSession(), e.newSession()
	_, events := e.subscribe(a.ID, "")
	e.sessionReply(a.ID, rid1, "[standin:slow=10s] stuck")
	resp := e.send(e.request("POST", "/reply", map[string]any{"session_id": b.ID, "user_message": userMessage("[standin:slow=10s] stuck")}))
	defer resp.Body.Close()
	legacy := frames(resp)
	next(t, legacy, 5*time.Second) // the first Ping: the turn runs

	start := time.Now()
	for _, id := range []string{a.ID, b.ID} {
		if status, _ := e.call("DELETE", "/sessions/"+id, nil); status != 200 {
			t.Fatalf("delete %s: %d", id, status)
		}
	}
	for name, ch := range map[string]<-chan frameOrErr{"events": events, "reply": legacy} {
		for {
			if _, ok := next(t, ch, 5*time.Second); !ok {
				break
			}
		}
		if time.Since(start) > 5*time.Second {
			t.Errorf("%s stream outlived the delete", name)
		}
	}
	if status, _ := e.call("GET", "/sessions/"+a.ID+"/events", nil); status != 404 {
		t.Errorf("events of a deleted session: %d", status)
	}
}

func TestConcurrentTurns(t *testing.T) {
	e := newEnv(t, nil)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := e.newSession()
			text := "turn " + strconv.Itoa(i)
			if i%2 == 0 {
				if got := replyText(e.reply(s.ID, text)); got != "echo: "+text {
					t.Errorf("reply %q", got)
				}
				return
			}
			_, ch := e.subscribe(s.ID, "")
			e.sessionReply(s.ID, rid1, text)
			if _, evs := busEvents(t, ch); replyText(evs) != "echo: "+text {
				t.Errorf("bus reply %+v", evs)
			}
		}()
	}
	wg.Wait()
	var list struct{ Sessions []Session }
	e.callJSON("GET", "/sessions", nil, 200, &list)
	if len(list.Sessions) != 8 {
		t.Errorf("%d sessions", len(list.Sessions))
	}
}

func TestBusDropsLaggingSubscriber(t *testing.T) {
	b := newBus(3, 2)
	sub, _, _, err := b.subscribe(nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		b.publish(rid1, MessageEvent{Type: EventPing})
	}
	select {
	case <-sub.gone:
	default:
		t.Fatal("a subscriber 3 events behind with a lag limit of 2 is still attached")
	}
	for range 2 {
		b.publish(rid1, MessageEvent{Type: EventPing})
	}
	// The buffer keeps the last 3 (3, 4, 5): from 2 on is whole, from 1 is not.
	if _, replay, _, err := b.subscribe(ptr(uint64(2))); err != nil || len(replay) != 3 || replay[0].seq != 3 {
		t.Errorf("replay after 2: %v, %v", replay, err)
	}
	if _, _, _, err := b.subscribe(ptr(uint64(1))); err != errTooFarBehind {
		t.Errorf("after 1: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }
