// Package proxytest holds what the tests of the port proxy and the app
// proxy share: backends that show what reached them, and request helpers.
// Test code only; nothing in paddock's binaries imports it.
package proxytest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/paddock-dev/paddock/api"
)

// Key is a signing key for tests' Signers.
var Key = []byte("0123456789abcdef0123456789abcdef")

// Echoed is what EchoHandler saw of a request.
type Echoed struct {
	Method   string      `json:"method"`
	Host     string      `json:"host"`
	Path     string      `json:"path"`
	RawQuery string      `json:"rawQuery"`
	Header   http.Header `json:"header"`
}

// EchoHandler answers with what it received (as Echoed JSON), so tests can
// see what was forwarded.
var EchoHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(Echoed{r.Method, r.Host, r.URL.Path, r.URL.RawQuery, r.Header})
})

// WSEchoHandler accepts a WebSocket and sends every message back.
var WSEchoHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	for {
		typ, data, err := c.Read(r.Context())
		if err != nil {
			return
		}
		if err := c.Write(r.Context(), typ, data); err != nil {
			return
		}
	}
})

// HeldSSEHandler sends the event first(r), flushed, then holds the stream
// open until release (or 10s) before a last event: a client that reads the
// first event meanwhile shows that nothing waits for the stream's end.
func HeldSSEHandler(release <-chan struct{}, first func(*http.Request) string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, first(r))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
		fmt.Fprint(w, "data: last\n\n")
	})
}

// Do sends req with c (bounded at 10 s) and returns the response with its
// body read.
func Do(tb testing.TB, c *http.Client, req *http.Request) (*http.Response, []byte) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(req.Context(), 10*time.Second)
	defer cancel()
	resp, err := c.Do(req.WithContext(ctx))
	if err != nil {
		tb.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("read body: %v", err)
	}
	return resp, body
}

// Get builds a GET of url with header's name/value pairs.
func Get(tb testing.TB, url string, header ...string) *http.Request {
	tb.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		tb.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	return req
}

// ErrorCode reads the code of an API error body.
func ErrorCode(tb testing.TB, body []byte) string {
	tb.Helper()
	var e api.Error
	if err := json.Unmarshal(body, &e); err != nil {
		tb.Fatalf("error body %q is not {\"error\":{...}}: %v", body, err)
	}
	return e.Error.Code
}

// MaxSamples bounds the latency samples a benchmark takes per path,
// whatever -benchtime says.
const MaxSamples = 20000

// Percentile is the p-th percentile of d.
func Percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}
