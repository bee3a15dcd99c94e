package httperr

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// TestForward holds the forward decision: a request goes to the replica
// that runs its sandbox only whole (body unread), once (no hop header),
// and only to a live replica; otherwise the client is told to come back
// (503 with Retry-After), not that the sandbox does not exist, by the
// caller's own error writer (each surface has its shape), never by Forward.
func TestForward(t *testing.T) {
	// The owner echoes what it got.
	owner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Got", fmt.Sprintf("%s %s %s by=%s auth=%s body=%s", r.Method, r.Host, r.URL.RequestURI(),
			r.Header.Get(ForwardedBy), r.Header.Get("Authorization"), body))
		w.WriteHeader(http.StatusTeapot)
	}))
	t.Cleanup(owner.Close)
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()

	tests := []struct {
		name     string
		url      string // the owner's; "" = gone
		read     bool   // the handler reads the body before it fails
		hop      string // the request's ForwardedBy
		bare     bool   // served without Forwarding
		inner    bool   // the handler fails a request of its own, made under the client's context
		status   int
		code     string // of an error answer
		got      string // what the owner saw
		retrying bool   // Retry-After set
	}{
		{name: "forwarded whole", url: owner.URL, status: http.StatusTeapot,
			got: "POST 3000-sb1.example.test /api/v1/sandboxes/sb1/files?path=%2Fa%20b by=node-b auth=Bearer tok body=payload"},
		{name: "body already read", url: owner.URL, read: true, status: 503, code: "sandbox_replica_unavailable", retrying: true},
		{name: "forwarded already", url: owner.URL, hop: "node-c", status: 503, code: "sandbox_replica_loop", retrying: true},
		{name: "owner gone", status: 503, code: "sandbox_replica_unavailable", retrying: true},
		{name: "owner unreachable", url: deadURL, status: 503, code: "sandbox_replica_unavailable", retrying: true},
		{name: "not through Forwarding", url: owner.URL, bare: true, status: 503, code: "sandbox_replica_unavailable", retrying: true},
		{name: "another request in-process", url: owner.URL, inner: true, status: 503, code: "sandbox_replica_unavailable", retrying: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.read {
					_, _ = io.ReadAll(r.Body)
				}
				err := fmt.Errorf("get sandbox: %w", &sandbox.ElsewhereError{ID: "sb1", Replica: "node-a", URL: tc.url})
				if tc.inner {
					r = httptest.NewRequestWithContext(r.Context(), "GET", "/api/v1/sandboxes/sb1", nil)
				}
				if ok, err := Forward(w, r, err); !ok {
					// The caller's own writer answers, in its surface's shape.
					w.Header().Set("X-Writer", "caller")
					Write(w, err)
				}
			})
			// A prefix stripped on the way in must not change what goes on.
			h = http.StripPrefix("/api", h)
			if !tc.bare {
				h = Forwarding("node-b", slog.New(slog.DiscardHandler), h)
			}
			req := httptest.NewRequest("POST", "http://3000-sb1.example.test/api/v1/sandboxes/sb1/files?path=%2Fa%20b", strings.NewReader("payload"))
			req.Header.Set("Authorization", "Bearer tok")
			if tc.hop != "" {
				req.Header.Set(ForwardedBy, tc.hop)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if got := rec.Header().Get("X-Got"); got != tc.got {
				t.Errorf("the owner got %q, want %q", got, tc.got)
			}
			if tc.code != "" {
				if got := rec.Header().Get("X-Writer"); got != "caller" {
					t.Errorf("the error answer was not the caller's own (X-Writer %q): Forward wrote it", got)
				}
				var e api.Error
				if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Code != tc.code {
					t.Errorf("answer %s (%v), want code %s", rec.Body, err, tc.code)
				}
				if strings.Contains(rec.Body.String(), "127.0.0.1") {
					t.Errorf("the answer tells a replica's address: %s", rec.Body)
				}
			}
			if got := rec.Header().Get("Retry-After") != ""; got != tc.retrying {
				t.Errorf("Retry-After %q, want set %v", rec.Header().Get("Retry-After"), tc.retrying)
			}
		})
	}
}

// TestForwardUpgrade: a connection upgrade (a terminal's WebSocket) passes
// through the forward both ways.
func TestForwardUpgrade(t *testing.T) {
	owner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" || r.Header.Get(ForwardedBy) != "node-b" {
			http.Error(w, "want an upgrade to echo, forwarded", http.StatusBadRequest)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		_ = brw.Flush()
		line, _ := brw.ReadString('\n')
		_, _ = brw.WriteString("echo " + line)
		_ = brw.Flush()
	}))
	t.Cleanup(owner.Close)
	front := httptest.NewServer(Forwarding("node-b", slog.New(slog.DiscardHandler), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ok, err := Forward(w, r, &sandbox.ElsewhereError{ID: "sb1", Replica: "node-a", URL: owner.URL}); !ok {
			Write(w, err)
		}
	})))
	t.Cleanup(front.Close)

	conn, err := net.Dial("tcp", strings.TrimPrefix(front.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, "GET /api/v1/sandboxes/sb1/pty HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade through the forward: %v %v", resp, err)
	}
	if _, err := io.WriteString(conn, "hello\n"); err != nil {
		t.Fatal(err)
	}
	if got, err := br.ReadString('\n'); got != "echo hello\n" {
		t.Fatalf("after the upgrade: %q %v", got, err)
	}
}
