package standin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
)

// Request bodies are read as axum's Json extractor reads them, with its
// rejections: plain-text bodies and these statuses.
const (
	msgNoJSONContentType = "Expected request with `Content-Type: application/json`"
	msgSyntaxPrefix      = "Failed to parse the request body as JSON: "
	msgDataPrefix        = "Failed to deserialize the JSON body into the target type: "
	msgTooLarge          = "Failed to buffer the request body: length limit exceeded"
)

// decodeJSON reads r's body (at most limit bytes) into v, a pointer to a
// request struct, then runs check. On failure it has answered and returns
// false.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any, check func() error) bool {
	if !isJSONContentType(r.Header.Get("Content-Type")) {
		rejectText(w, http.StatusUnsupportedMediaType, msgNoJSONContentType)
		return false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			rejectText(w, http.StatusRequestEntityTooLarge, msgTooLarge)
		} else {
			rejectText(w, http.StatusBadRequest, "Failed to buffer the request body: "+err.Error())
		}
		return false
	}
	if !json.Valid(body) {
		var syntax *json.SyntaxError
		err := json.Unmarshal(body, new(any))
		msg := "EOF while parsing a value"
		if errors.As(err, &syntax) {
			msg = fmt.Sprintf("%s at offset %d", syntax.Error(), syntax.Offset)
		}
		rejectText(w, http.StatusBadRequest, msgSyntaxPrefix+msg)
		return false
	}
	if bytes.HasPrefix(bytes.TrimSpace(body), []byte("null")) {
		rejectText(w, http.StatusUnprocessableEntity, msgDataPrefix+"invalid type: null, expected a map")
		return false
	}
	if err := json.Unmarshal(body, v); err != nil {
		rejectText(w, http.StatusUnprocessableEntity, msgDataPrefix+dataError(err))
		return false
	}
	if check != nil {
		if err := check(); err != nil {
			rejectText(w, http.StatusUnprocessableEntity, msgDataPrefix+err.Error())
			return false
		}
	}
	return true
}

// isJSONContentType is axum's test: application/json or any application/*+json.
func isJSONContentType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	typ, sub, ok := strings.Cut(mt, "/")
	return ok && typ == "application" && (sub == "json" || strings.HasSuffix(sub, "+json"))
}

// dataError words a decoding error as serde does, roughly.
func dataError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field != "" {
			return fmt.Sprintf("%s: invalid type: %s, expected %s", te.Field, te.Value, te.Type)
		}
		return fmt.Sprintf("invalid type: %s, expected %s", te.Value, te.Type)
	}
	return err.Error()
}

// rejectText answers an extractor rejection: plain text, as axum sends it.
func rejectText(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	io.WriteString(w, msg)
}

// missing is serde's error for an absent required field.
func missing(field string) error { return fmt.Errorf("missing field `%s`", field) }

// need is a required field of a request: its name and whether the body
// had it.
type need struct {
	name string
	ok   bool
}

// firstMissing is missing for the first absent field; callers list them
// in declaration order, which is the one serde reports first.
func firstMissing(fields ...need) error {
	for _, f := range fields {
		if !f.ok {
			return missing(f.name)
		}
	}
	return nil
}

// wireMessage is a Message as a request body carries it; pointers tell
// absent fields from zero ones.
type wireMessage struct {
	ID       *string            `json:"id"`
	Role     *string            `json:"role"`
	Created  *int64             `json:"created"`
	Content  *[]json.RawMessage `json:"content"`
	Metadata *struct {
		UserVisible  *bool `json:"userVisible"`
		AgentVisible *bool `json:"agentVisible"`
	} `json:"metadata"`
}

// contentTypes are the MessageContent variants goose knows.
var contentTypes = map[string]bool{
	"text": true, "image": true, "toolRequest": true, "toolResponse": true,
	"toolConfirmationRequest": true, "actionRequired": true, "frontendToolRequest": true,
	"thinking": true, "redactedThinking": true, "systemNotification": true,
}

// message checks m as goose's Message deserializer would and converts it.
// field names it in errors ("user_message").
func (m *wireMessage) message(field string) (Message, error) {
	if m == nil {
		return Message{}, missing(field)
	}
	switch {
	case m.Role == nil:
		return Message{}, fmt.Errorf("%s: %w", field, missing("role"))
	case m.Created == nil:
		return Message{}, fmt.Errorf("%s: %w", field, missing("created"))
	case m.Content == nil:
		return Message{}, fmt.Errorf("%s: %w", field, missing("content"))
	case m.Metadata == nil:
		return Message{}, fmt.Errorf("%s: %w", field, missing("metadata"))
	case *m.Role != "user" && *m.Role != "assistant":
		return Message{}, fmt.Errorf("%s.role: unknown variant `%s`, expected `user` or `assistant`", field, *m.Role)
	}
	for i, raw := range *m.Content {
		var c struct {
			Type *string         `json:"type"`
			Text json.RawMessage `json:"text"`
		}
		if err := json.Unmarshal(raw, &c); err != nil {
			return Message{}, fmt.Errorf("%s.content[%d]: %s", field, i, dataError(err))
		}
		if c.Type == nil {
			return Message{}, fmt.Errorf("%s.content[%d]: missing field `type`", field, i)
		}
		if !contentTypes[*c.Type] {
			return Message{}, fmt.Errorf("%s.content[%d]: unknown variant `%s`", field, i, *c.Type)
		}
		if *c.Type == "text" {
			var s string
			if c.Text == nil {
				return Message{}, fmt.Errorf("%s.content[%d]: missing field `text`", field, i)
			}
			if err := json.Unmarshal(c.Text, &s); err != nil {
				return Message{}, fmt.Errorf("%s.content[%d].text: invalid type, expected a string", field, i)
			}
		}
	}
	meta := MessageMetadata{UserVisible: true, AgentVisible: true}
	if m.Metadata.UserVisible != nil {
		meta.UserVisible = *m.Metadata.UserVisible
	}
	if m.Metadata.AgentVisible != nil {
		meta.AgentVisible = *m.Metadata.AgentVisible
	}
	content := *m.Content
	if content == nil {
		content = []json.RawMessage{}
	}
	return Message{ID: m.ID, Role: *m.Role, Created: *m.Created, Content: content, Metadata: meta}, nil
}

// conversation converts an optional list of wire messages.
func conversation(ms *[]wireMessage, field string) ([]Message, error) {
	if ms == nil {
		return nil, nil
	}
	out := make([]Message, 0, len(*ms))
	for i := range *ms {
		m, err := (&(*ms)[i]).message(fmt.Sprintf("%s[%d]", field, i))
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}
