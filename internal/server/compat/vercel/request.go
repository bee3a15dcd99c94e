package vercel

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"path"
	"reflect"
	"regexp"
	"strings"
	"sync"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// maxJSONBytes bounds every JSON request body.
const maxJSONBytes = 1 << 20

func badRequest(format string, args ...any) error {
	return sandbox.Errorf(sandbox.ErrInvalid, "bad_request", "Invalid request: "+format, args...)
}

func unsupportedOption(format string, args ...any) error {
	return sandbox.Errorf(sandbox.ErrInvalid, "unsupported_option", format+" (not supported by paddock)", args...)
}

// decodeJSON reads one JSON object into v. A field v does not know is an
// error, so that an option this layer cannot honour is refused rather than
// dropped; the SDK's private "__" parameters are the exception, listed in
// private for the caller to judge. An empty body leaves v as is.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) (private map[string]json.RawMessage, err error) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJSONBytes))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return nil, badRequest("body is not a JSON object: %v", err)
	}
	known := jsonFields(reflect.TypeOf(v).Elem())
	for k, raw := range fields {
		switch {
		case known[k]:
		case strings.HasPrefix(k, "__"):
			if private == nil {
				private = map[string]json.RawMessage{}
			}
			private[k] = raw
		default:
			return nil, unsupportedOption("unknown field %q", k)
		}
	}
	if err := json.Unmarshal(data, v); err != nil {
		return nil, badRequest("%v", err)
	}
	return private, nil
}

// jsonFields names the JSON fields of struct type t, those of its embedded
// structs included, as encoding/json promotes them.
func jsonFields(t reflect.Type) map[string]bool {
	out := map[string]bool{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if f.Anonymous && tag == "" && f.Type.Kind() == reflect.Struct {
			maps.Copy(out, jsonFields(f.Type))
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if name != "" && name != "-" {
			out[name] = true
		}
	}
	return out
}

// decodeCreate is decodeJSON for the bodies that start a sandbox (create
// v1/v2/v3, fork), where the SDK may send private parameters: they are
// ignored, as Vercel ignores those it does not know. __interactive (the
// CLI's, asking for a port for its own PTY server) needs nothing here:
// every session serves openInteractive.
func decodeCreate(w http.ResponseWriter, r *http.Request, v any) error {
	_, err := decodeJSON(w, r, v)
	return err
}

// namePattern is Vercel's rule for sandbox names.
// Compiled on first use, not at init: every paddock process starts with
// it, including each sandbox's runc init.
var namePattern = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-zA-Z0-9_-]{1,128}$`) })

// sandboxPath resolves a path of a file request against cwd (the request's,
// else the session's), as the SDK expects relative paths to resolve.
func sandboxPath(p, cwd, sessionCwd string) (string, error) {
	if p == "" || strings.ContainsRune(p, 0) || strings.ContainsRune(cwd, 0) || len(p) > 4096 {
		return "", badRequest("path is required, without NUL bytes, at most 4096 bytes")
	}
	if path.IsAbs(p) {
		return path.Clean(p), nil
	}
	if cwd == "" {
		cwd = sessionCwd
	} else if !path.IsAbs(cwd) {
		cwd = path.Join(sessionCwd, cwd)
	}
	return path.Join(cwd, p), nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		http.Error(w, `{"error":{"code":"internal","message":"encode answer"}}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(data, '\n'))
}
