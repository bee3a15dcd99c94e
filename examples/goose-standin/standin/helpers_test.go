package standin

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const testSecret = "s3cret"

func TestMain(m *testing.M) {
	code := m.Run()
	cleanupBinary()
	os.Exit(code)
}

// testDay is the fake clock's start: sessions are 20260422_N.
var testDay = time.Date(2026, 4, 22, 14, 0, 0, 0, time.UTC)

// env is a stand-in served on 127.0.0.1 by httptest, on a temp
// GOOSE_PATH_ROOT.
type env struct {
	t    *testing.T
	root string
	cfg  Config
	srv  *Server
	ts   *httptest.Server
	base string // the server's URL
}

// newEnv starts a stand-in; mod adjusts its config. Chunks and pings are
// fast unless mod says otherwise.
func newEnv(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	root := t.TempDir()
	var tick atomic.Int64
	cfg := Config{
		Secret:       testSecret,
		DataDir:      filepath.Join(root, "data"),
		ConfigDir:    filepath.Join(root, "config"),
		PingInterval: time.Second,
		ChunkDelay:   -1,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		// A clock that moves 1 ms per reading, so orderings are strict.
		Now: func() time.Time { return testDay.Add(time.Duration(tick.Add(1)) * time.Millisecond) },
	}
	if mod != nil {
		mod(&cfg)
	}
	e := &env{t: t, root: root, cfg: cfg}
	e.start()
	t.Cleanup(e.stop)
	return e
}

func (e *env) start() {
	e.t.Helper()
	srv, err := New(e.cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.srv, e.ts = srv, httptest.NewServer(srv)
	e.base = e.ts.URL
}

// stop closes the stand-in as SIGTERM does: streams end, sessions flush.
func (e *env) stop() {
	if e.srv == nil {
		return
	}
	if err := e.srv.Close(); err != nil {
		e.t.Errorf("Close: %v", err)
	}
	e.ts.Close()
	e.srv, e.ts = nil, nil
}

// restart is a new process on the same directories.
func (e *env) restart() {
	e.t.Helper()
	e.stop()
	e.start()
}

// request builds a request with the secret; body is JSON-encoded unless it
// is a string or []byte (sent as is).
func (e *env) request(method, path string, body any) *http.Request {
	e.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(e.t.Context(), method, e.base+path, r)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set(SecretHeader, testSecret)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req
}

func (e *env) send(req *http.Request) *http.Response {
	e.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp
}

// call sends a request and returns the status and the whole body.
func (e *env) call(method, path string, body any) (int, []byte) {
	e.t.Helper()
	resp := e.send(e.request(method, path, body))
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, data
}

// callJSON expects status want and decodes the body into out (if non-nil).
func (e *env) callJSON(method, path string, body any, want int, out any) {
	e.t.Helper()
	status, data := e.call(method, path, body)
	if status != want {
		e.t.Fatalf("%s %s: %d %s, want %d", method, path, status, data, want)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			e.t.Fatalf("%s %s: %v in %s", method, path, err, data)
		}
	}
}

// newSession starts a session and resumes it with a provider, as the
// desktop does.
func (e *env) newSession() Session {
	e.t.Helper()
	var s Session
	e.callJSON("POST", "/agent/start", map[string]any{"working_dir": "/work"}, 200, &s)
	e.callJSON("POST", "/agent/resume", map[string]any{"session_id": s.ID, "load_model_and_extensions": true}, 200, nil)
	return s
}

func userMessage(text string) map[string]any {
	return map[string]any{
		"role": "user", "created": testDay.Unix(),
		"content":  []any{map[string]any{"type": "text", "text": text}},
		"metadata": map[string]any{"userVisible": true, "agentVisible": true},
	}
}

// frameOrErr is what a stream reader hands over.
type frameOrErr struct {
	f   Frame
	err error
}

// frames reads resp's SSE frames in the background until the stream ends.
func frames(resp *http.Response) <-chan frameOrErr {
	ch := make(chan frameOrErr, 1024)
	go func() {
		defer close(ch)
		fr := NewFrameReader(resp.Body)
		for {
			f, err := fr.Next()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					ch <- frameOrErr{err: err}
				}
				return
			}
			ch <- frameOrErr{f: f}
		}
	}()
	return ch
}

// next returns the next frame, failing after timeout; ok is false at the
// end of the stream.
func next(t *testing.T, ch <-chan frameOrErr, timeout time.Duration) (Frame, bool) {
	t.Helper()
	select {
	case fe, ok := <-ch:
		if !ok {
			return Frame{}, false
		}
		if fe.err != nil {
			t.Fatalf("stream: %v", fe.err)
		}
		return fe.f, true
	case <-time.After(timeout):
		t.Fatalf("no frame within %s", timeout)
	}
	return Frame{}, false
}

// event decodes a frame's data.
func event(t *testing.T, f Frame) MessageEvent {
	t.Helper()
	var ev MessageEvent
	if err := json.Unmarshal([]byte(f.Data), &ev); err != nil {
		t.Fatalf("frame data %q: %v", f.Data, err)
	}
	return ev
}

// reply runs a turn through POST /reply and returns its events, pings
// dropped, up to the end of the stream.
func (e *env) reply(id, text string) []MessageEvent {
	e.t.Helper()
	resp := e.send(e.request("POST", "/reply", map[string]any{"session_id": id, "user_message": userMessage(text)}))
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		e.t.Fatalf("/reply: %d", resp.StatusCode)
	}
	var out []MessageEvent
	ch := frames(resp)
	for {
		f, ok := next(e.t, ch, 10*time.Second)
		if !ok {
			return out
		}
		if ev := event(e.t, f); ev.Type != EventPing {
			out = append(out, ev)
		}
	}
}

// replyText concatenates the text of a turn's assistant Message chunks.
func replyText(evs []MessageEvent) string {
	var b strings.Builder
	for _, ev := range evs {
		if ev.Type == EventMessage && ev.Message.Role == "assistant" {
			b.WriteString(ev.Message.Text())
		}
	}
	return b.String()
}
