package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// fakeAgent serves handler on a unix socket and returns a client for it.
func fakeAgent(t *testing.T, handler http.Handler) *Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c := UnixClient(sock)
	t.Cleanup(c.Close)
	return c
}

// endless answers with prefix, then repeats chunk until the client stops
// reading; written counts what it sent.
func endless(status int, prefix, chunk string, written *atomic.Int64, done chan<- struct{}) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		defer func() { done <- struct{}{} }()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		buf := []byte(prefix + strings.Repeat(chunk, (64<<10)/len(chunk)))
		for {
			n, err := w.Write(buf)
			written.Add(int64(n))
			if err != nil {
				return
			}
			buf = buf[len(prefix):]
			prefix = ""
		}
	}
}

// TestClientEndlessAnswers: a hijacked agent that streams a JSON answer
// without end costs the client an error after a bounded read, never its
// memory.
func TestClientEndlessAnswers(t *testing.T) {
	const slack = 16 << 20 // socket and HTTP buffers between the two ends
	tests := []struct {
		name          string
		status        int
		prefix, chunk string
		limit         int64
		call          func(context.Context, *Client) error
	}{
		{"ping", 200, `{"version":"`, "a", maxSmallAnswer, func(ctx context.Context, c *Client) error { _, err := c.Ping(ctx); return err }},
		{"start", 201, `{"id":"cmd-x","args":["`, "a", maxCommandAnswer, func(ctx context.Context, c *Client) error {
			_, err := c.Start(ctx, CommandRequest{Cmd: "true"})
			return err
		}},
		{"get", 200, `{"id":"`, "a", maxCommandAnswer, func(ctx context.Context, c *Client) error { _, err := c.Get(ctx, "cmd-x"); return err }},
		{"wait", 200, `{"id":"`, "a", maxCommandAnswer, func(ctx context.Context, c *Client) error { _, err := c.Wait(ctx, "cmd-x"); return err }},
		{"list", 200, `[`, `{"id":"cmd-x","status":"running"},`, maxListAnswer, func(ctx context.Context, c *Client) error { _, err := c.List(ctx); return err }},
		{"ports", 200, `[`, `{"port":1,"address":"::"},`, maxListAnswer, func(ctx context.Context, c *Client) error { _, err := c.Ports(ctx); return err }},
		{"write result", 200, `{"files":1,"bytes":`, "1", maxSmallAnswer, func(ctx context.Context, c *Client) error {
			_, err := c.WriteTar(ctx, "/tmp", false, strings.NewReader(""))
			return err
		}},
		{"watch event", 200, `{"type":"create","name":"`, "a", maxWatchLine, func(ctx context.Context, c *Client) error {
			w, err := c.Watch(ctx, "/tmp", true, false)
			if err != nil {
				return err
			}
			defer w.Close()
			_, err = w.Next()
			return err
		}},
		// No value wanted: the body is drained up to a bound, not decoded.
		{"signal", 200, ``, "x", maxSmallAnswer, func(ctx context.Context, c *Client) error { return c.Signal(ctx, "cmd-x", 15) }},
		{"error", 500, `{"error":{"code":"x","message":"`, "a", maxErrorAnswer, func(ctx context.Context, c *Client) error { _, err := c.Ping(ctx); return err }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var written atomic.Int64
			done := make(chan struct{}, 1)
			c := fakeAgent(t, endless(tc.status, tc.prefix, tc.chunk, &written, done))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := tc.call(ctx, c)
			if tc.name == "signal" {
				if err != nil {
					t.Fatalf("signal: %v", err)
				}
			} else if !errors.Is(err, sandbox.ErrAgentProtocol) {
				t.Fatalf("got %.200v, want an agent protocol error", err)
			}
			c.Close()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("the client kept reading the endless answer")
			}
			if n := written.Load(); n > tc.limit+slack {
				t.Errorf("the client read about %d bytes of an answer capped at %d", n, tc.limit)
			}
			t.Logf("%.120v (after about %d bytes)", err, written.Load())
		})
	}
}

// TestClientEndlessHeader: the answer's header is capped too.
func TestClientEndlessHeader(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		go io.Copy(io.Discard, conn)
		conn.Write([]byte("HTTP/1.1 200 OK\r\nX-Endless: "))
		chunk := bytes.Repeat([]byte("a"), 64<<10)
		for {
			if _, err := conn.Write(chunk); err != nil {
				return
			}
		}
	}()
	c := UnixClient(sock)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Ping(ctx); err == nil {
		t.Fatal("an endless header was accepted")
	}
}

// frame encodes one output frame.
func frame(kind byte, payload []byte) []byte {
	b := make([]byte, frameHeaderLen+len(payload))
	b[0] = kind
	binary.BigEndian.PutUint32(b[1:], uint32(len(payload)))
	copy(b[frameHeaderLen:], payload)
	return b
}

const frameHeaderLen = 5

func gapTo(off int64) []byte {
	var p [8]byte
	binary.BigEndian.PutUint64(p[:], uint64(off))
	return frame(FrameGap, p[:])
}

// TestOutputReaderFrames: frame sizes are capped per kind, and a gap moves
// the offset forward only.
func TestOutputReaderFrames(t *testing.T) {
	bigExit := frame(FrameExit, bytes.Repeat([]byte("a"), maxCommandAnswer+1))
	tests := []struct {
		name    string
		from    int64
		stream  []byte
		offsets []int64 // of the frames read before the error (or EOF)
		dropped []int64
		wantErr bool
	}{
		{name: "output, gap, output", from: 0,
			stream:  append(append(frame(FrameStdout, []byte("ab")), gapTo(100)...), frame(FrameStderr, []byte("c"))...),
			offsets: []int64{7, 100, 106}, dropped: []int64{0, 93, 0}},
		{name: "gap first", from: 3, stream: gapTo(50), offsets: []int64{50}, dropped: []int64{47}},
		{name: "gap backwards", from: 10, stream: gapTo(10), wantErr: true},
		{name: "gap payload size", from: 0, stream: frame(FrameGap, []byte{1, 2, 3}), wantErr: true},
		{name: "oversized output frame", from: 0, stream: frame(FrameStdout, make([]byte, MaxFrame+1)), wantErr: true},
		{name: "large exit frame", from: 0, stream: frame(FrameExit, make([]byte, MaxFrame+1)), offsets: []int64{MaxFrame + 6}, dropped: []int64{0}},
		{name: "oversized exit frame", from: 0, stream: bigExit, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := &OutputReader{body: io.NopCloser(nil), r: bufio.NewReader(bytes.NewReader(tc.stream)), offset: tc.from}
			var offsets, dropped []int64
			var err error
			for {
				var f Frame
				f, err = o.Next()
				if err != nil {
					break
				}
				offsets, dropped = append(offsets, f.Offset), append(dropped, f.Dropped)
			}
			if tc.wantErr != (err != io.EOF) {
				t.Fatalf("ended with %v, want an error: %v", err, tc.wantErr)
			}
			if tc.wantErr && !errors.Is(err, sandbox.ErrAgentProtocol) {
				t.Errorf("error %v is not a protocol error", err)
			}
			if !equalInts(offsets, tc.offsets) || !equalInts(dropped, tc.dropped) {
				t.Errorf("offsets %v dropped %v, want %v %v", offsets, dropped, tc.offsets, tc.dropped)
			}
		})
	}
}

func equalInts(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
