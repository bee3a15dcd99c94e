package standin

import (
	"encoding/json"
	"time"
)

// The wire shapes of goose's objects (goosed-api.md §1.4). Messages and
// token states are camelCase, sessions snake_case, as goose serializes them.

// Message is one conversation message. Content items are kept as the client
// sent them (tagged by "type"); the stand-in only reads text items.
type Message struct {
	// ID is null for messages that carry none (most user messages).
	ID       *string           `json:"id"`
	Role     string            `json:"role"` // "user" or "assistant"
	Created  int64             `json:"created"`
	Content  []json.RawMessage `json:"content"`
	Metadata MessageMetadata   `json:"metadata"`
}

// MessageMetadata says who sees a message.
type MessageMetadata struct {
	UserVisible  bool `json:"userVisible"`
	AgentVisible bool `json:"agentVisible"`
}

// TokenState is the usage a Message or Finish event reports.
type TokenState struct {
	InputTokens             int32 `json:"inputTokens"`
	OutputTokens            int32 `json:"outputTokens"`
	TotalTokens             int32 `json:"totalTokens"`
	AccumulatedInputTokens  int32 `json:"accumulatedInputTokens"`
	AccumulatedOutputTokens int32 `json:"accumulatedOutputTokens"`
	AccumulatedTotalTokens  int32 `json:"accumulatedTotalTokens"`
}

// Session is goose's session object. Conversation is null in lists and in
// /agent/start's answer, an array where a session is read whole.
type Session struct {
	ID                      string          `json:"id"`
	WorkingDir              string          `json:"working_dir"`
	Name                    string          `json:"name"`
	UserSetName             bool            `json:"user_set_name"`
	SessionType             string          `json:"session_type"`
	CreatedAt               time.Time       `json:"created_at"`
	UpdatedAt               time.Time       `json:"updated_at"`
	ExtensionData           json.RawMessage `json:"extension_data"`
	TotalTokens             *int32          `json:"total_tokens"`
	InputTokens             *int32          `json:"input_tokens"`
	OutputTokens            *int32          `json:"output_tokens"`
	AccumulatedTotalTokens  *int32          `json:"accumulated_total_tokens"`
	AccumulatedInputTokens  *int32          `json:"accumulated_input_tokens"`
	AccumulatedOutputTokens *int32          `json:"accumulated_output_tokens"`
	ScheduleID              *string         `json:"schedule_id"`
	Recipe                  json.RawMessage `json:"recipe"`
	UserRecipeValues        json.RawMessage `json:"user_recipe_values"`
	Conversation            []Message       `json:"conversation"`
	MessageCount            int             `json:"message_count"`
	ProviderName            *string         `json:"provider_name"`
	ModelConfig             json.RawMessage `json:"model_config"`
	GooseMode               string          `json:"goose_mode"`
	ThreadID                *string         `json:"thread_id"`
}

// tokenState is the session's usage as a TokenState (zeros where unset).
func (s *Session) tokenState() TokenState {
	v := func(p *int32) int32 {
		if p == nil {
			return 0
		}
		return *p
	}
	return TokenState{
		InputTokens: v(s.InputTokens), OutputTokens: v(s.OutputTokens), TotalTokens: v(s.TotalTokens),
		AccumulatedInputTokens: v(s.AccumulatedInputTokens), AccumulatedOutputTokens: v(s.AccumulatedOutputTokens),
		AccumulatedTotalTokens: v(s.AccumulatedTotalTokens),
	}
}

// copyOf returns a copy of s safe to marshal outside the server's lock,
// with the conversation (shared backing array, never mutated in place:
// the server only appends or replaces) or without it (null).
func (s *Session) copyOf(withConversation bool) Session {
	c := *s
	c.MessageCount = len(s.Conversation)
	if !withConversation {
		c.Conversation = nil
	} else if c.Conversation == nil {
		c.Conversation = []Message{}
	} else {
		c.Conversation = s.Conversation[:len(s.Conversation):len(s.Conversation)]
	}
	return c
}

// Event types of MessageEvent.
const (
	EventMessage            = "Message"
	EventError              = "Error"
	EventFinish             = "Finish"
	EventNotification       = "Notification"
	EventUpdateConversation = "UpdateConversation"
	EventActiveRequests     = "ActiveRequests"
	EventPing               = "Ping"
)

// MessageEvent is the JSON of one SSE frame, tagged by Type. On the session
// event bus every event also carries ChatRequestID and RequestID.
type MessageEvent struct {
	Type          string      `json:"type"`
	Message       *Message    `json:"message,omitempty"`         // Message
	Error         string      `json:"error,omitempty"`           // Error
	Reason        string      `json:"reason,omitempty"`          // Finish
	TokenState    *TokenState `json:"token_state,omitempty"`     // Message, Finish
	Conversation  []Message   `json:"conversation,omitempty"`    // UpdateConversation
	RequestIDs    []string    `json:"request_ids,omitempty"`     // ActiveRequests
	ChatRequestID string      `json:"chat_request_id,omitempty"` // session events only
	RequestID     string      `json:"request_id,omitempty"`      // session events; Notification
}

// Text returns the concatenated text items of the message's content.
func (m *Message) Text() string {
	var out []byte
	for _, raw := range m.Content {
		var c struct {
			Type string `json:"type"`
			Text string `json:"text"`
		}
		if json.Unmarshal(raw, &c) == nil && c.Type == "text" {
			out = append(out, c.Text...)
		}
	}
	return string(out)
}

// textContent is one text content item.
func textContent(text string) json.RawMessage {
	b, _ := json.Marshal(struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}{"text", text})
	return b
}
