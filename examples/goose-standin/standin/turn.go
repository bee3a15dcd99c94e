package standin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// The deterministic "LLM". A turn answers user text T with one assistant
// message "echo: T", streamed as two or three Message chunks that share one
// id (msg_<n>, n counting the session's assistant messages), as a provider
// streams deltas. Directives in T turn on test modes:
//
//	[standin:slow]        pause SlowChunkDelay between chunks (heartbeats go on)
//	[standin:slow=<dur>]  pause <dur> (a Go duration, at most MaxSlowChunkDelay)
//	[standin:error]       fail the turn with an Error event, no reply
//	[standin:tool]        first a toolRequest message and a user-role
//	                      toolResponse message, then the echo
//
// The user message is stored before the reply streams and the whole
// assistant message (and the tool messages) just before the last chunk is
// sent, so a client that has seen Finish finds them in GET /sessions/{id}.
// A cancelled turn stores no assistant message.

// errTurnCancelled: the turn's context ended (client gone, cancel, delete,
// shutdown).
var errTurnCancelled = errors.New("turn cancelled")

// turnError is a failure reported to the client as an Error event.
type turnError struct{ msg string }

func (e *turnError) Error() string { return e.msg }

// turnMode is what the directives in the user text ask for.
type turnMode struct {
	delay time.Duration
	fail  bool
	tool  bool
}

func (s *Server) parseMode(text string) turnMode {
	m := turnMode{delay: s.cfg.ChunkDelay}
	rest := text
	for {
		i := strings.Index(rest, "[standin:")
		if i < 0 {
			return m
		}
		rest = rest[i+len("[standin:"):]
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return m
		}
		dir := rest[:end]
		rest = rest[end+1:]
		switch name, arg, hasArg := strings.Cut(dir, "="); name {
		case "slow":
			m.delay = s.cfg.SlowChunkDelay
			if hasArg {
				if d, err := time.ParseDuration(arg); err == nil && d >= 0 {
					m.delay = min(d, MaxSlowChunkDelay)
				}
			}
		case "error":
			m.fail = true
		case "tool":
			m.tool = true
		}
	}
}

// replyChunks splits "echo: "+text into the chunks one reply streams:
// "echo: ", then text whole, or in two halves at a space when it has
// several words.
func replyChunks(text string) []string {
	out := []string{"echo: "}
	if text == "" {
		return out
	}
	mid := len(text) / 2
	cut := -1
	for i := mid; i < len(text); i++ {
		if text[i] == ' ' {
			cut = i + 1
			break
		}
	}
	if cut < 0 {
		for i := mid - 1; i > 0; i-- {
			if text[i] == ' ' {
				cut = i + 1
				break
			}
		}
	}
	if cut <= 0 || cut >= len(text) {
		return append(out, text)
	}
	return append(out, text[:cut], text[cut:])
}

// countTokens is the stand-in's token count: whitespace-separated words,
// at least one for a non-empty text.
func countTokens(text string) int32 {
	n := len(strings.Fields(text))
	if n == 0 && text != "" {
		n = 1
	}
	return int32(min(n, math.MaxInt32))
}

func add32(a, b int32) int32 {
	if s := int64(a) + int64(b); s < math.MaxInt32 {
		return int32(s)
	}
	return math.MaxInt32
}

// runTurn runs one turn on session id and emits its Message events; the
// caller sends Error (for a *turnError) or Finish. It returns the token
// state for Finish.
func (s *Server) runTurn(ctx context.Context, id string, user Message, override []Message, emit func(MessageEvent) error) (TokenState, error) {
	text := user.Text()
	mode := s.parseMode(text)

	s.mu.Lock()
	st := s.sessionLocked(id)
	switch {
	case st == nil:
		s.mu.Unlock()
		return TokenState{}, &turnError{fmt.Sprintf("Failed to read session: Session %s not found", id)}
	case !st.agentReady:
		// goosed: a session whose agent was neither resumed with
		// load_model_and_extensions nor given a provider has none.
		s.mu.Unlock()
		return TokenState{}, &turnError{"Provider not set"}
	case ctx.Err() != nil || s.closed:
		s.mu.Unlock()
		return TokenState{}, errTurnCancelled
	}
	if override != nil {
		st.sess.Conversation = override
	}
	st.sess.Conversation = append(st.sess.Conversation[:len(st.sess.Conversation):len(st.sess.Conversation)], user)
	st.sess.UpdatedAt = s.now()
	s.saveLocked(st)
	prior := st.sess.tokenState()
	n := 1
	for _, m := range st.sess.Conversation {
		if m.Role == "assistant" {
			n++
		}
	}
	s.mu.Unlock()

	if mode.fail {
		return prior, &turnError{"standin: error requested"}
	}

	created := s.now().Unix()
	var extra []Message // tool messages, stored with the reply
	if mode.tool {
		toolID := fmt.Sprintf("toolu_standin_%d", n)
		reqID := "msg_" + strconv.Itoa(n)
		call, _ := json.Marshal(map[string]any{
			"type": "toolRequest", "id": toolID,
			"toolCall": map[string]any{"status": "success", "value": map[string]any{
				"name": "standin__echo", "arguments": map[string]any{"text": text}}},
		})
		result, _ := json.Marshal(map[string]any{
			"type": "toolResponse", "id": toolID,
			"toolResult": map[string]any{"status": "success", "value": map[string]any{
				"content": []any{map[string]any{"type": "text", "text": text}}, "isError": false}},
		})
		extra = []Message{
			{ID: &reqID, Role: "assistant", Created: created, Content: []json.RawMessage{call}, Metadata: MessageMetadata{true, true}},
			{ID: nil, Role: "user", Created: created, Content: []json.RawMessage{result}, Metadata: MessageMetadata{true, true}},
		}
		for i := range extra {
			if err := s.pause(ctx, mode.delay); err != nil {
				return prior, err
			}
			ts := prior
			if err := emit(MessageEvent{Type: EventMessage, Message: &extra[i], TokenState: &ts}); err != nil {
				return prior, errTurnCancelled
			}
		}
		n++
	}

	msgID := "msg_" + strconv.Itoa(n)
	chunks := replyChunks(text)
	for i, c := range chunks {
		if err := s.pause(ctx, mode.delay); err != nil {
			return prior, err
		}
		ts := prior
		if i == len(chunks)-1 {
			var err error
			if ts, err = s.storeReply(ctx, id, text, extra, Message{
				ID: &msgID, Role: "assistant", Created: created,
				Content: []json.RawMessage{textContent("echo: " + text)}, Metadata: MessageMetadata{true, true},
			}); err != nil {
				return prior, err
			}
		}
		id := msgID
		chunk := Message{ID: &id, Role: "assistant", Created: created,
			Content: []json.RawMessage{textContent(c)}, Metadata: MessageMetadata{true, true}}
		if err := emit(MessageEvent{Type: EventMessage, Message: &chunk, TokenState: &ts}); err != nil {
			return prior, errTurnCancelled
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.sessions[id]; st != nil {
		return st.sess.tokenState(), nil
	}
	return prior, nil
}

// storeReply appends the turn's messages to the session and counts its
// tokens: input is every word of the conversation the "model" read, output
// the reply's words.
func (s *Server) storeReply(ctx context.Context, id, text string, extra []Message, reply Message) (TokenState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.sessions[id]
	if st == nil || ctx.Err() != nil || s.closed {
		return TokenState{}, errTurnCancelled
	}
	var in int32
	for i := range st.sess.Conversation {
		in = add32(in, countTokens(st.sess.Conversation[i].Text()))
	}
	out := countTokens("echo: " + text)
	total := add32(in, out)
	acc := st.sess.tokenState()
	accIn, accOut, accTotal := add32(acc.AccumulatedInputTokens, in), add32(acc.AccumulatedOutputTokens, out), add32(acc.AccumulatedTotalTokens, total)
	st.sess.InputTokens, st.sess.OutputTokens, st.sess.TotalTokens = &in, &out, &total
	st.sess.AccumulatedInputTokens, st.sess.AccumulatedOutputTokens, st.sess.AccumulatedTotalTokens = &accIn, &accOut, &accTotal
	conv := st.sess.Conversation[:len(st.sess.Conversation):len(st.sess.Conversation)]
	conv = append(conv, extra...)
	st.sess.Conversation = append(conv, reply)
	st.sess.UpdatedAt = s.now()
	s.saveLocked(st)
	return st.sess.tokenState(), nil
}

// pause waits d, or returns errTurnCancelled when ctx ends first.
func (s *Server) pause(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		if ctx.Err() != nil {
			return errTurnCancelled
		}
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return errTurnCancelled
	}
}
