package image

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/netguard"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// stallingRegistry answers the registry ping and holds every other
// request until release is closed (then 404) or the request ends. entered
// gets one value per held request.
func stallingRegistry(t *testing.T) (host string, entered <-chan struct{}, release chan struct{}) {
	t.Helper()
	in := make(chan struct{}, 16)
	release = make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		in <- struct{}{}
		select {
		case <-release:
			http.NotFound(w, r)
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), in, release
}

func openBareStore(t *testing.T) *Store {
	t.Helper()
	s, err := OpenStore(filepath.Join(t.TempDir(), "images"), StoreOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Guard: netguard.Guard{AllowPrivate: true}}) // the test registry is on 127.0.0.1
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func waitEntered(t *testing.T, entered <-chan struct{}) {
	t.Helper()
	select {
	case <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the pull never reached the registry")
	}
}

// TestStartPullOwned: a pull StartPull runs outlives its caller's context,
// and Close cancels it and returns only once it has ended.
func TestStartPullOwned(t *testing.T) {
	t.Run("outlives the caller", func(t *testing.T) {
		host, entered, release := stallingRegistry(t)
		s := openBareStore(t)
		ctx, cancel := context.WithCancel(t.Context())
		res := s.StartPull(ctx, "team-a", host+"/app:1", PullOptions{}, nil)
		waitEntered(t, entered)
		cancel() // the client hangs up
		close(release)
		select {
		case r := <-res:
			// The registry's answer, not the caller's cancellation.
			if !errors.Is(r.Err, sandbox.ErrNotFound) {
				t.Fatalf("pull = %v, want the registry's not found", r.Err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the pull did not end")
		}
	})
	t.Run("close cancels and waits", func(t *testing.T) {
		host, entered, _ := stallingRegistry(t)
		s := openBareStore(t)
		res := s.StartPull(t.Context(), "team-a", host+"/app:1", PullOptions{}, nil)
		waitEntered(t, entered)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-res: // already there: Close waited for it
			if !errors.Is(r.Err, context.Canceled) {
				t.Fatalf("pull = %v, want cancelled", r.Err)
			}
		default:
			t.Fatal("Close returned before the pull ended")
		}
		r := <-s.StartPull(t.Context(), "team-a", host+"/app:1", PullOptions{}, nil)
		if !errors.Is(r.Err, sandbox.ErrUnavailable) {
			t.Fatalf("pull after Close = %v, want unavailable", r.Err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	})
}
