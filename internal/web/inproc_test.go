package web

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"
)

// TestInProcessStreams checks that a response streams before its handler
// returns, and that closing the body ends the handler (its writes fail),
// so no goroutine outlives its reader.
func TestInProcessStreams(t *testing.T) {
	ended := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Test", "yes")
		w.WriteHeader(http.StatusAccepted)
		for {
			if _, err := w.Write([]byte("tick\n")); err != nil {
				ended <- err
				return
			}
		}
	})
	c := &http.Client{Transport: inProcess{h}}
	resp, err := c.Get("http://paddock.internal/x")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusAccepted || resp.Header.Get("X-Test") != "yes" {
		t.Fatalf("status %d, header %v", resp.StatusCode, resp.Header)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "tick\n" {
		t.Fatalf("read %q, %v", buf, err)
	}
	resp.Body.Close()
	select {
	case err := <-ended:
		if err == nil {
			t.Fatal("the handler's write succeeded after close")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler still runs after the body was closed")
	}
}

func TestInProcessCancelBeforeHeaders(t *testing.T) {
	done := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(done)
		<-r.Context().Done()
	})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://paddock.internal/x", nil)
	go func() { time.Sleep(10 * time.Millisecond); cancel() }()
	if _, err := (inProcess{h}).RoundTrip(req); err == nil {
		t.Fatal("RoundTrip succeeded after its context ended")
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler did not see the cancellation")
	}
}
