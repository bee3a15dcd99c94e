package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"path"
	"strings"
	"testing"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// decodeTargets are the request bodies decodeJSON reads for the routes
// that create sandboxes, run commands and touch files.
var decodeTargets = []func() any{
	func() any { return new(api.CreateSandboxRequest) },
	func() any { return new(api.CommandRequest) },
	func() any { return new(api.MkdirRequest) },
	func() any { return new(api.KillRequest) },
	func() any { return new(api.ExtendTimeoutRequest) },
	func() any { return new(api.AddPortsRequest) },
	func() any { return new(api.NetworkPolicy) },
}

var decodeSeeds = []string{
	``, ` `, `{}`, `null`, `[]`, `[1]`, `"x"`, `1`, `{} {}`, `{}x`, `{"a":1}`, `{"image":`,
	`{"image":"host","resources":{"vcpus":1.5,"memoryMb":512,"pids":64},"timeoutMs":60000,"env":{"A":"b"},` +
		`"ports":[{"port":3000,"public":true}],"networkPolicy":{"mode":"allow","allowDomains":["example.com"],"allowCIDRs":["10.0.0.0/8"]},` +
		`"volumes":[{"name":"v","path":"/data"}],"source":{"type":"git","url":"https://example.com/r.git","depth":1}}`,
	`{"resources":{"vcpus":-1}}`, `{"resources":{"vcpus":1e400}}`, `{"timeoutMs":9223372036854775807}`, `{"timeoutMs":-5}`,
	`{"env":{"A=B":"x"}}`, `{"env":{"":"x"}}`, `{"env":{"A":"\u0000"}}`, `{"image":"a","snapshot":"snap-1"}`,
	`{"IMAGE":"host"}`, `{"image":"a","image":"b"}`, `{"image":"\ud800"}`,
	`{"cmd":"ls","args":["-la","/"],"cwd":"/tmp","env":{"X":"1"},"sudo":true,"detached":true,"timeoutMs":1000}`,
	`{"cmd":"","args":["x"]}`, `{"cmd":"a\u0000b"}`, `{"cmd":"ls","cwd":"tmp"}`, `{"cmd":"ls","cwd":"/a/../.."}`,
	`{"path":"/tmp/x","sudo":true}`, `{"path":"a/b"}`, `{"path":"/a\u0000b"}`,
	`{"signal":"SIGTERM"}`, `{"signal":9}`, `{"signal":"SIGNOPE"}`, `{"signal":99}`, `{"signal":[]}`,
	`{"durationMs":1000}`, `{"ports":[{"port":8080}]}`, `{"mode":"deny-all"}`,
}

// FuzzDecodeJSON checks decodeJSON against every request type: an accepted
// body is one JSON object (or empty where allowed) whose value survives a
// round trip, and a refused one is ErrInvalid "invalid_json" (or the body
// limit's error past maxJSONBytes). Where the route validates further
// (create), the validation only ever refuses with ErrInvalid and what it
// passes on holds its promises.
func FuzzDecodeJSON(f *testing.F) {
	for i := range decodeTargets {
		for _, s := range decodeSeeds {
			f.Add(uint8(i), []byte(s), false, false)
		}
	}
	f.Add(uint8(0), []byte(`{}`), false, true)
	f.Add(uint8(0), []byte(``), true, false)
	f.Fuzz(func(t *testing.T, target uint8, body []byte, allowEmpty, padded bool) {
		if padded {
			// Past the limit whatever the body: the bound must hold.
			body = append(bytes.Repeat([]byte(" "), maxJSONBytes), body...)
		}
		newV := decodeTargets[int(target)%len(decodeTargets)]
		v := newV()
		err := decode(v, body, allowEmpty)
		if err != nil {
			var mbe *http.MaxBytesError
			switch {
			case len(body) > maxJSONBytes:
				if !errors.As(err, &mbe) {
					t.Fatalf("body of %d bytes: %v, want the body limit", len(body), err)
				}
			case !errors.Is(err, sandbox.ErrInvalid) || sandbox.CodeOf(err) != "invalid_json":
				t.Fatalf("decode %T from %q: %v (code %q), want ErrInvalid invalid_json", v, body, err, sandbox.CodeOf(err))
			}
			return
		}
		if len(body) > maxJSONBytes {
			t.Fatalf("accepted a body of %d bytes", len(body))
		}
		trimmed := bytes.TrimSpace(body)
		if len(trimmed) == 0 {
			if !allowEmpty {
				t.Fatalf("accepted an empty body where one is required")
			}
			return
		}
		if !json.Valid(trimmed) || trimmed[0] != '{' {
			t.Fatalf("accepted %q into %T: not one JSON object", body, v)
		}
		// What was decoded encodes and decodes to the same thing.
		enc, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("encode %T decoded from %q: %v", v, body, err)
		}
		v2 := newV()
		if err := decode(v2, enc, false); err != nil {
			t.Fatalf("decode %q (re-encoded from %q): %v", enc, body, err)
		}
		if enc2, _ := json.Marshal(v2); !bytes.Equal(enc, enc2) {
			t.Fatalf("round trip of %q: %s != %s", body, enc, enc2)
		}
		if req, ok := v.(*api.CreateSandboxRequest); ok {
			checkCreateParams(t, *req)
		}
	})
}

func decode(v any, body []byte, allowEmpty bool) error {
	r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
	return decodeJSON(httptest.NewRecorder(), r, v, allowEmpty)
}

// checkCreateParams checks createParams on a decoded create request.
func checkCreateParams(t *testing.T, req api.CreateSandboxRequest) {
	t.Helper()
	p, err := createParams(req)
	if err != nil {
		if !errors.Is(err, sandbox.ErrInvalid) || sandbox.CodeOf(err) == "" {
			t.Fatalf("createParams(%+v) = %v, want ErrInvalid with a code", req, err)
		}
		return
	}
	r := p.Resources
	if r.VCPUs < 0 || math.IsNaN(r.VCPUs) || math.IsInf(r.VCPUs, 0) || r.MemoryMB < 0 || r.PIDs < 0 {
		t.Fatalf("createParams passed resources %+v", r)
	}
	if p.Timeout < 0 {
		t.Fatalf("createParams passed timeout %v from %d ms", p.Timeout, req.TimeoutMs)
	}
	for k, v := range p.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			t.Fatalf("createParams passed env %q=%q", k, v)
		}
	}
	if p.Image != "" && p.Snapshot != "" {
		t.Fatalf("createParams passed both an image and a snapshot")
	}
}

// FuzzCleanPath checks the API's path rule: an accepted path is absolute,
// clean, without NUL or "..", at most 4096 bytes, and exactly what the
// agent's own check (absolute and clean) takes; cleaning is idempotent.
func FuzzCleanPath(f *testing.F) {
	for _, p := range []string{
		"/", "/tmp", "/tmp/", "//tmp//x/", "/a/./b", "/a/../b", "/..", "/a/..", "/a/...", "/a/..b", "..", "a/b", "",
		"/a\x00b", "/" + strings.Repeat("a", 4096), "/\xff", "/a//", "/./",
	} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		c, err := cleanPath(p)
		if err != nil {
			if !errors.Is(err, sandbox.ErrInvalid) || sandbox.CodeOf(err) != "invalid_path" {
				t.Fatalf("cleanPath(%q) = %v, want ErrInvalid invalid_path", p, err)
			}
			if c != "" {
				t.Fatalf("cleanPath(%q) refused but returned %q", p, c)
			}
			return
		}
		switch {
		case len(p) > 4096:
			t.Fatalf("cleanPath accepted %d bytes", len(p))
		case !path.IsAbs(c) || path.Clean(c) != c:
			t.Fatalf("cleanPath(%q) = %q: not absolute and clean, which the agent refuses", p, c)
		case strings.ContainsRune(c, 0):
			t.Fatalf("cleanPath(%q) = %q: contains NUL", p, c)
		case c != path.Clean(p):
			t.Fatalf("cleanPath(%q) = %q, want %q", p, c, path.Clean(p))
		}
		for _, part := range strings.Split(p, "/") {
			if part == ".." {
				t.Fatalf("cleanPath accepted %q, which climbs", p)
			}
		}
		if again, err := cleanPath(c); err != nil || again != c {
			t.Fatalf("cleanPath(%q) = %q, %v: not idempotent", c, again, err)
		}
	})
}
