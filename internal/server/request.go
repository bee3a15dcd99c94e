package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"strconv"
	"strings"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// decodeJSON reads one JSON object into v. The body is bounded, unknown
// fields are rejected (a typo must not silently become a default), and
// trailing data is an error. With allowEmpty an absent body leaves v as is.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any, allowEmpty bool) error {
	body := http.MaxBytesReader(w, r.Body, maxJSONBytes)
	data, err := io.ReadAll(body)
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		if allowEmpty {
			return nil
		}
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_json", "request body is empty; expected a JSON object")
	}
	// json decodes null into a struct as nothing at all: a required body
	// would pass as an empty one.
	if trimmed[0] != '{' {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_json", "request body is not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return invalidJSON(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_json", "unexpected data after the JSON object")
	}
	return nil
}

// invalidJSON words a decoding error for the client, naming the field.
func invalidJSON(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_json", "malformed JSON at byte %d: %v", syn.Offset, err)
	case errors.As(err, &typ):
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_json", "field %q must be %s, not %s", typ.Field, typ.Type, typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_json", "unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_json", "malformed JSON: unexpected end of input")
	default:
		return sandbox.Errorf(sandbox.ErrInvalid, "invalid_json", "malformed JSON: %v", err)
	}
}

// sandboxID returns the {id} path value, or sandbox_not_found when it cannot
// name a sandbox (no lookup is needed to know that).
func sandboxID(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if !sandbox.ValidID(id) {
		return "", sandbox.Errorf(sandbox.ErrNotFound, "sandbox_not_found", "sandbox %q not found", id)
	}
	return id, nil
}

// commandID returns the {cmd} path value, or command_not_found.
func commandID(r *http.Request) (string, error) {
	id := r.PathValue("cmd")
	if !sandbox.ValidID(id) {
		return "", sandbox.Errorf(sandbox.ErrNotFound, "command_not_found", "command %q not found", id)
	}
	return id, nil
}

// cleanPath checks a path inside a sandbox (sandbox.ValidatePath) and
// returns it cleaned ("/tmp/" is "/tmp"). The agent checks again; checking
// here too means a bad path never reaches it.
func cleanPath(p string) (string, error) {
	if err := sandbox.ValidatePath(p); err != nil {
		return "", err
	}
	return path.Clean(p), nil
}

// boolQuery parses an optional boolean query parameter.
func boolQuery(r *http.Request, name string, def bool) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, sandbox.Errorf(sandbox.ErrInvalid, "invalid_query", "%s must be true or false, got %q", name, v)
	}
	return b, nil
}
